"""Approximate index kinds: knobs, removal, missing slots, memory estimates, kind='auto', PCA-whitening."""
import json
import logging

import faiss
import numpy as np
import pytest

from cbir.index import (KINDS, MISSING_INT, Index, choose_index, default_nlist, estimate_memory, factory_string,
                        make_clustered_vectors, ann_recall_at_k, training_needs)
from cbir.scale import PCAWhitening

faiss.omp_set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    x, labels = make_clustered_vectors(4_500, 16, seed=7)
    base, queries = x[:4000], x[4000:]
    truth = Index.build(base, kind="flat", metric="l2").search(queries, 10).ids
    return base, queries, truth


# small PQ codebooks (16 centroids) keep training fast; the notebook and the benchmark use the 8-bit default
FAST = dict(nlist=32, pq_m=8, nbits=4, opq_iterations=2)


@pytest.fixture(scope="module")
def built(data):
    base = data[0]
    return {kind: Index.build(base, kind=kind, metric="l2", **FAST) for kind in KINDS}


def test_every_kind_finds_neighbours_and_maps_ids(data, built):
    base, queries, truth = data
    for kind, index in built.items():
        res = index.search(queries, 10, **({"nprobe": 32} if "IVF" in index.factory else {}))
        r = ann_recall_at_k(res.ids, truth)
        assert r > (0.95 if kind in ("flat", "ivf", "hnsw", "ivfpq_refine") else 0.4), (kind, r)
        ok = res.valid
        np.testing.assert_array_equal(index.ids[res.positions[ok]], res.ids[ok])
        assert index.ntotal == 4000 and index.dim == 16 and index.kind == kind


def test_knobs_are_per_search_and_restored(data, built):
    _, queries, truth = data
    ivf = built["ivf"]
    before = faiss.extract_index_ivf(ivf.index).nprobe
    low = ann_recall_at_k(ivf.search(queries, 10, nprobe=1).ids, truth)
    high = ann_recall_at_k(ivf.search(queries, 10, nprobe=32).ids, truth)
    assert high > low and high == 1.0
    assert faiss.extract_index_ivf(ivf.index).nprobe == before
    hnsw = built["hnsw"]
    ef = faiss.downcast_index(hnsw.index.index).hnsw.efSearch
    assert ann_recall_at_k(hnsw.search(queries, 10, ef_search=128).ids, truth) >= ann_recall_at_k(hnsw.search(queries, 10, ef_search=10).ids, truth)
    assert faiss.downcast_index(hnsw.index.index).hnsw.efSearch == ef
    assert ann_recall_at_k(built["ivfpq_refine"].search(queries, 10, nprobe=32, k_factor=8).ids, truth) > 0.95


def test_knob_errors_and_clamping(data, built, caplog):
    _, queries, _ = data
    with pytest.raises(ValueError, match="nprobe does not apply to a 'hnsw' index"):
        built["hnsw"].search(queries, 5, nprobe=2)
    with pytest.raises(ValueError, match="ef_search does not apply"):
        built["ivf"].search(queries, 5, ef_search=2)
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        built["ivf"].search(queries, 5, nprobe=0)
    with caplog.at_level(logging.WARNING, logger="cbir.index"):
        res = built["ivf"].search(queries, 5, nprobe=10_000)
    assert "larger than the number of lists (32)" in caplog.text
    np.testing.assert_array_equal(res.ids, built["flat"].search(queries, 5).ids)


def test_missing_slots_never_leak_minus_one(data):
    base, queries, _ = data
    for ids in (None, np.array([f"x{i}" for i in range(1000)])):
        index = Index.build(base[:1000], ids, kind="ivf", nlist=25, metric="l2")
        res = index.search(queries[:40], 200, nprobe=1)  # one list holds ~40 vectors: most slots stay empty
        assert res.ids.shape == (40, 200) and (~res.valid).any() and res.valid[:, 0].all()
        assert (res.positions[~res.valid] == MISSING_INT).all() and np.isnan(res.distances[~res.valid]).all()
        if ids is None:
            assert (res.ids[res.valid] >= 0).all() and (res.ids[~res.valid] == MISSING_INT).all()
            assert -1 not in res.ids
        else:
            assert (res.ids[~res.valid] == "").all() and set(res.ids[res.valid]) <= set(ids)


def test_removal_per_kind(data):
    base, queries, _ = data
    for kind in ("flat", "ivf", "ivfpq", "opq"):
        index = Index.build(base, [f"id{i}" for i in range(len(base))], kind=kind, metric="l2", **FAST)
        assert index.supports_removal
        assert index.remove(["id0", "id5", "id9"]) == 3
        assert index.ntotal == 3997 and "id5" not in set(index.ids)
        res = index.search(base[[0, 5, 9, 1]], 3, **({"nprobe": 32} if kind != "flat" else {}))
        assert not {"id0", "id5", "id9"} & set(res.ids.ravel())
        if kind in ("flat", "ivf"):
            assert res.ids[3, 0] == "id1"
        index.add(base[[5]], ["id5"])  # re-adding gets a fresh key and is found again
        assert "id5" in index.search(base[[5]], 1, **({"nprobe": 32} if kind != "flat" else {})).ids[0]
        with pytest.raises(ValueError, match="ids not in the index"):
            index.remove(["nope"])
    for kind in ("hnsw", "ivfpq_refine"):
        index = Index.build(base, kind=kind, metric="l2", **FAST)
        assert not index.supports_removal
        with pytest.raises(ValueError, match="cannot remove items"):
            index.remove([0])


def test_training_needs_are_checked(data):
    base = data[0]
    with pytest.raises(ValueError, match=r"IVF100,Flat needs at least 100 training vectors, got 50"):
        Index.build(base[:50], kind="ivf", nlist=100)
    with pytest.raises(ValueError, match="needs at least 256 training vectors"):
        Index.build(base[:200], kind="ivfpq", nlist=2, pq_m=4)
    with pytest.raises(ValueError, match="must divide the dimension"):
        Index.build(base, kind="ivfpq", pq_m=5)
    with pytest.raises(ValueError, match="FAISS cannot build factory string"):
        Index.build(base, factory="NotAnIndex42")
    assert training_needs("IVF64,PQ4x4np") == (64, 2496)
    assert default_nlist(39) == 1 and default_nlist(10_000) == 256


def test_bad_input_to_approximate_kinds(built):
    ivf = built["ivf"]
    with pytest.raises(ValueError, match="dimension 8 but the index has dimension 16"):
        ivf.add(np.ones((2, 8)), None)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ivf.add(np.full((2, 16), np.nan), None)
    with pytest.raises(ValueError, match="real numbers"):
        ivf.search(np.ones((2, 16), dtype=complex), 3)
    res = built["hnsw"].search(np.ones((1, 16)), 10_000)  # k larger than the index
    assert res.ids.shape == (1, 4000)


@pytest.mark.parametrize("kind", KINDS)
def test_memory_estimate_matches_serialised_size(built, kind):
    index = built[kind]
    est = estimate_memory(index.factory, index.ntotal, index.dim)
    real = faiss.serialize_index(index.index).size
    assert abs(est["total_bytes"] - real) <= 0.05 * real + 4096, (kind, est, real)


def test_memory_estimate_by_kind_and_ratios():
    flat = estimate_memory("flat", 1_000_000, 128)
    pq = estimate_memory("ivfpq", 1_000_000, 128)
    assert flat["bytes_per_vector"] == 4 * 128 + 8 and pq["factory"] == factory_string("ivfpq", 1_000_000, 128)
    assert flat["total_bytes"] / pq["total_bytes"] > 16 and pq["compression_vs_flat"] > 16
    assert estimate_memory("hnsw", 10, 128, hnsw_m=16)["bytes_per_vector"] > 4 * 128 + 8 * 16


def test_auto_choice_and_reason(data, caplog):
    base = data[0]
    with caplog.at_level(logging.INFO, logger="cbir.index"):
        index = Index.build(base, kind="auto", metric="cosine")
    assert index.kind == "flat" and "few enough for brute force" in index.reason and "chose flat" in caplog.text
    c = choose_index(50_000_000, 256, memory_budget=2 * 2**30)
    assert c["kind"] == "opq" and c["estimate"]["total_bytes"] <= 2 * 2**30 and "may not reach recall" in c["reason"]
    assert choose_index(2_000_000, 64, memory_budget=None)["kind"] == "hnsw"
    assert choose_index(2_000_000, 64, need_removal=True)["kind"] == "ivf"


def test_save_load_approximate_kinds_keeps_knobs_and_results(data, built, tmp_path):
    _, queries, _ = data
    for kind in ("ivfpq", "hnsw", "ivfpq_refine"):
        index = built[kind]
        path = index.save(tmp_path / f"{kind}.faiss")
        loaded = Index.load(path, expect={"kind": kind, "factory": index.factory, "metric": "l2", "dim": 16})
        np.testing.assert_array_equal(loaded.search(queries, 5).ids, index.search(queries, 5).ids)
        assert json.loads((tmp_path / f"{kind}.faiss.json").read_text())["factory"] == index.factory
        with pytest.raises(ValueError, match="factory: index has"):
            Index.load(path, expect={"factory": "Flat"})


def test_pca_whitening(tmp_path):
    x = make_clustered_vectors(3000, 24, seed=2)[0] * np.linspace(0.1, 10, 24, dtype=np.float32)
    w = PCAWhitening.fit(x, dim=12, normalize=False)
    np.testing.assert_allclose(np.cov(w.transform(x), rowvar=False), np.eye(12), atol=1e-3)
    wn = PCAWhitening.fit(x, dim=12)
    np.testing.assert_allclose(np.linalg.norm(wn.transform(x[:10]), axis=1), 1, rtol=1e-5)
    wn.save(tmp_path / "w.npz")
    np.testing.assert_allclose(PCAWhitening.load(tmp_path / "w.npz").transform(x[:10]), wn.transform(x[:10]))
    with pytest.raises(ValueError, match="dimension 10 but the whitening has dimension 24"):
        w.transform(np.ones((2, 10)))
    with pytest.raises(ValueError, match="impossible"):
        PCAWhitening.fit(x, dim=30)


def test_search_reranked_from_memmap(data, built, tmp_path):
    base, queries, truth = data
    np.save(tmp_path / "base.npy", base)
    on_disk = np.load(tmp_path / "base.npy", mmap_mode="r")
    pq = built["ivfpq"]
    plain = ann_recall_at_k(pq.search(queries, 10, nprobe=8).ids, truth)
    reranked = pq.search_reranked(queries, 10, on_disk, k_factor=10, nprobe=8)
    assert ann_recall_at_k(reranked.ids, truth) > max(plain + 0.1, 0.9)
    assert (np.diff(reranked.distances, axis=1) >= -1e-5).all()  # l2: ascending after exact re-ranking
    # exact distances: equal to what a flat index reports for the same items
    flat = built["flat"].search(queries, 10)
    same = reranked.ids[:, 0] == flat.ids[:, 0]
    np.testing.assert_allclose(reranked.distances[same, 0], flat.distances[same, 0], rtol=1e-4, atol=1e-4)
    # cosine index: re-ranking normalises the stored vectors too
    cos = Index.build(base, kind="ivf", nlist=16, metric="cosine")
    r = cos.search_reranked(queries[:20], 5, base * 3.0, nprobe=16)
    np.testing.assert_array_equal(r.ids, cos.search(queries[:20], 5, nprobe=16).ids)
    # missing slots survive re-ranking as invalid, never -1
    sparse = Index.build(base[:1000], kind="ivf", nlist=25, metric="l2")
    r = sparse.search_reranked(queries[:10], 100, base[:1000], k_factor=1, nprobe=1)
    assert (~r.valid).any() and -1 not in r.ids and (r.ids[~r.valid] == MISSING_INT).all()


def test_vectors_in_row_order_after_removal(data):
    base = data[0]
    for kind in ("flat", "ivf", "hnsw", "ivfpq_refine", "opq"):
        index = Index.build(base, kind=kind, metric="l2", **FAST)
        if index.supports_removal:
            index.remove([3, 10, 11])
        index.add(base[[0]] + 1.0, [99_999])
        expected = np.concatenate([base, base[[0]] + 1.0])[[i if i != 99_999 else len(base) for i in index.ids]]
        got = index.vectors()
        assert got.shape == (index.ntotal, 16)
        rel = np.linalg.norm(got - expected, axis=1).mean() / np.linalg.norm(expected, axis=1).mean()
        assert rel < (1e-6 if kind != "opq" else 0.5), (kind, rel)
        if kind in ("ivf", "opq"):  # the temporary direct map is gone: removal still works afterwards
            assert index.remove([99_999]) == 1


def test_training_reports_progress_and_samples(data, caplog):
    base = data[0]
    with caplog.at_level(logging.INFO, logger="cbir.index"):
        index = Index.build(base, kind="ivf", nlist=16, train_size=1000, metric="l2")
    assert "training IVF16,Flat on 1,000 of 4,000 vectors" in caplog.text and "trained IVF16,Flat in" in caplog.text
    assert index.ntotal == 4000 and index.params["build_seconds"] >= 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cbir.index"):
        Index.build(base[:300], kind="ivf", nlist=16, metric="l2")  # 300 < 39 * 16
    assert "FAISS recommends at least 624" in caplog.text
