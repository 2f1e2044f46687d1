"""cbir.search.Searcher: every kind of query, exclusion, K larger than the gallery, bad input, and re-ranking
through the searcher checked against the pure functions plus brute force."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from cbir.data import make_shapes
from cbir.reading import ImageReadError, read_image
from cbir.index import Index, MISSING_INT, MISSING_STR
from cbir.search import (KReciprocal, QueryExpansion, Searcher, expand_queries, k_reciprocal_rerank, l2_normalize,
                         pairwise_sq_l2)

SIZE = 32


class TinyEmbedder:
    "A small deterministic embedder with the Embedder interface: 8x8 RGB thumbnails, centred, as vectors."
    dim = 8 * 8 * 3

    def __init__(self, pooling="thumb"):
        self.config = {"backbone": "thumbnail", "pooling": pooling, "dim": self.dim, "image_size": 8}

    def embed_one(self, src):
        a = np.asarray(read_image(src).resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255
        return (a - a.mean()).astype(np.float32)

    def embed(self, images, progress=False, **kwargs):
        from types import SimpleNamespace
        ids = getattr(images, "ids", np.arange(len(images)).astype(str))
        vectors = np.stack([self.embed_one(images[i]) for i in range(len(images))])
        return SimpleNamespace(vectors=vectors, ids=np.asarray(ids), config=self.config, failed=[])


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(80, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def searcher(shapes):
    return Searcher.build(TinyEmbedder(), shapes)


def test_build_keeps_ids_and_config(searcher, shapes):
    assert searcher.index.ntotal == len(shapes)
    assert list(searcher.index.ids) == list(shapes.ids)
    assert searcher.index.embedder_config["backbone"] == "thumbnail"


def test_every_query_kind_finds_the_same_item(searcher, shapes, tmp_path):
    img = shapes[5]
    path = tmp_path / "q.png"
    img.save(path)
    arr = np.array(img)
    vec = TinyEmbedder().embed_one(img)
    queries = {"path": path, "str": str(path), "bytes": path.read_bytes(), "pil": img, "uint8": arr,
               "float01": arr.astype(np.float32) / 255, "tensor": torch.from_numpy(arr).permute(2, 0, 1).contiguous(),
               "vector": vec, "vector_tensor": torch.from_numpy(vec), "vector_list": vec.tolist()}
    for name, q in queries.items():
        res = searcher.search(q, k=3)
        assert res.ids.shape == (1, 3), name
        assert res.ids[0, 0] == shapes.ids[5], name
    np.testing.assert_array_equal(searcher.search_embeddings(vec, k=3).ids, searcher.search(img, k=3).ids)


def test_grayscale_2d_uint8_is_an_image(searcher):
    res = searcher.search(np.full((SIZE, SIZE), 200, np.uint8), k=2)
    assert res.ids.shape == (1, 2)


def test_batches(searcher, shapes):
    imgs = [shapes[i] for i in range(4)]
    one_by_one = np.concatenate([searcher.search(im, k=4).ids for im in imgs])
    np.testing.assert_array_equal(searcher.search(imgs, k=4).ids, one_by_one)
    stack = np.stack([np.asarray(im) for im in imgs])                      # N x H x W x C
    np.testing.assert_array_equal(searcher.search(stack, k=4).ids, one_by_one)
    tensors = torch.from_numpy(stack).permute(0, 3, 1, 2)                  # N x C x H x W
    np.testing.assert_array_equal(searcher.search(tensors, k=4).ids, one_by_one)
    mixed = searcher.search([imgs[0], searcher.gallery_vectors[1]], k=4)
    assert mixed.ids.shape == (2, 4)
    np.testing.assert_array_equal(mixed.ids[0], one_by_one[0])


def test_exclude_self_keeps_k(searcher, shapes):
    q = searcher.gallery_vectors[:10]
    res = searcher.search_embeddings(q, k=5, exclude=shapes.ids[:10])
    assert res.ids.shape == (10, 5)
    for i in range(10):
        assert shapes.ids[i] not in res.ids[i]
    plain = searcher.search_embeddings(q, k=6)
    assert (plain.ids[:, 0] == shapes.ids[:10]).all()                     # without exclusion the query comes first
    np.testing.assert_array_equal(res.ids, plain.ids[:, 1:])


def test_exclude_forms(searcher, shapes):
    q = searcher.gallery_vectors[:3]
    drop = set(shapes.ids[:3])
    res = searcher.search_embeddings(q, k=10, exclude=drop)
    assert not np.isin(res.ids, list(drop)).any() and res.ids.shape == (3, 10)
    res = searcher.search_embeddings(q, k=10, exclude=shapes.ids[0])
    assert not (res.ids == shapes.ids[0]).any()
    res = searcher.search_embeddings(q, k=10, exclude=[None, [shapes.ids[1], shapes.ids[2]], shapes.ids[2]])
    assert res.ids[0, 0] == shapes.ids[0] and shapes.ids[2] not in res.ids[1] and shapes.ids[2] not in res.ids[2]
    with pytest.raises(ValueError, match="exclude has 2 entries but there are 3 queries"):
        searcher.search_embeddings(q, k=3, exclude=list(shapes.ids[:2]))


def test_k_larger_than_gallery(searcher, shapes):
    q = searcher.gallery_vectors[:2]
    res = searcher.search_embeddings(q, k=1000)
    assert res.ids.shape == (2, len(shapes))
    res = searcher.search_embeddings(q, k=1000, exclude=shapes.ids[:2])
    assert res.ids.shape == (2, len(shapes) - 1)
    for r in (res, searcher.search_embeddings(q, k=1000, exclude=shapes.ids[:2], rerank="k_reciprocal"),
              searcher.search_embeddings(q, k=1000, exclude=shapes.ids[:2], rerank="aqe")):
        assert (r.ids != MISSING_STR).all() and (r.positions != MISSING_INT).all() and (r.positions >= 0).all()
        assert np.isfinite(r.distances).all()
        assert all(len(set(row)) == len(row) for row in r.ids.tolist())


def test_small_ivf_index_never_leaks_missing_slots():
    "An IVF index with nprobe=1 can find fewer than k neighbours; the searcher drops those slots."
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    index = Index.build(vectors, ids=[f"v{i}" for i in range(400)], kind="ivf", nlist=10)
    s = Searcher(None, index, gallery_vectors=vectors)
    res = s.search_embeddings(vectors[:20], k=300)
    assert (res.ids != MISSING_STR).all() and (res.positions >= 0).all() and np.isfinite(res.distances).all()


def test_bad_queries(searcher, tmp_path):
    with pytest.raises(ValueError, match="dimension 5 but the gallery has dimension 192"):
        searcher.search(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="dimension"):
        searcher.search_embeddings(np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="search_embeddings"):
        searcher.search(np.zeros((4, 7), np.float32))                      # 2-D float, not D columns: ambiguous
    with pytest.raises(ValueError, match="search_embeddings"):
        searcher.search(torch.rand(32, 32))                                # a float grayscale image: ambiguous too
    with pytest.raises(ValueError, match="NaN"):
        searcher.search_embeddings(np.full(192, np.nan))
    with pytest.raises(TypeError, match="cannot search with a dict"):
        searcher.search({"q": 1})
    with pytest.raises(ValueError, match="no queries"):
        searcher.search([])
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            searcher.search_embeddings(searcher.gallery_vectors[0], k=k)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        searcher.search(empty)
    with pytest.raises(ImageReadError, match="not found"):
        searcher.search(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="unknown rerank"):
        searcher.search_embeddings(searcher.gallery_vectors[0], rerank="magic")


def test_embedder_must_match_index(shapes):
    emb = TinyEmbedder()
    e = emb.embed(shapes)
    index = Index.build(e.vectors, ids=e.ids, embedder_config=TinyEmbedder(pooling="avg").config)
    with pytest.raises(ValueError, match="pooling: query embedder 'thumb' vs gallery 'avg'"):
        Searcher(emb, index)
    Searcher(emb, Index.build(e.vectors, ids=e.ids))                       # nothing recorded: accepted
    small = Index.build(e.vectors[:, :10], ids=e.ids)
    with pytest.raises(ValueError, match="192-d vectors but the index holds 10-d"):
        Searcher(emb, small)


def test_embeddings_only_searcher(searcher):
    s = Searcher(None, searcher.index)
    assert s.search(searcher.gallery_vectors[3], k=1).positions[0, 0] == 3
    with pytest.raises(ValueError, match="no embedder"):
        s.search(Image.new("RGB", (SIZE, SIZE)))
    with pytest.raises(ValueError, match="without `images`"):
        s.items(s.search(searcher.gallery_vectors[3], k=1))


def test_gallery_vectors_read_back_from_index(searcher):
    fresh = Searcher(searcher.embedder, searcher.index)                    # no vectors given: read from FAISS
    np.testing.assert_allclose(l2_normalize(fresh.gallery_vectors), l2_normalize(searcher.gallery_vectors), atol=1e-6)


def test_items_are_the_hit_images(searcher, shapes):
    res = searcher.search([shapes[2], shapes[7]], k=3)
    items = searcher.items(res)
    assert len(items) == 2 and all(len(row) == 3 for row in items)
    for row_ids, row_items in zip(res.ids, items):
        for i, im in zip(row_ids, row_items):
            j = list(shapes.ids).index(i)
            assert np.array_equal(np.asarray(im), np.asarray(shapes[j]))


def brute_force_top(q, g, k, exclude_rows):
    "Rank by cosine similarity with plain numpy, excluded rows removed."
    sims = l2_normalize(q) @ l2_normalize(g).T
    out = []
    for i in range(len(q)):
        order = [j for j in np.argsort(-sims[i], kind="stable") if j not in exclude_rows[i]]
        out.append(order[:k])
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_query_expansion_through_searcher_matches_pure_functions(searcher, alpha):
    g = searcher.gallery_vectors
    q = g[:6] + 0.01
    excl = [{i} for i in range(6)]
    first = brute_force_top(q, g, 4, excl)
    expanded = expand_queries(l2_normalize(q), l2_normalize(g), first, alpha=alpha)
    want = brute_force_top(expanded, g, 7, excl)
    got = searcher.search_embeddings(q, k=7, exclude=searcher.index.ids[:6], rerank=QueryExpansion(n=4, alpha=alpha))
    np.testing.assert_array_equal(got.positions, want)


def test_k_reciprocal_through_searcher_matches_pure_function(searcher):
    g = l2_normalize(searcher.gallery_vectors)
    q = l2_normalize(g[:5] + 0.05)
    dist = k_reciprocal_rerank(pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g), k1=8, k2=3, lambda_=0.3)
    dist[np.arange(5), np.arange(5)] = np.inf                             # exclude each query's own source
    want = np.argsort(dist, axis=1, kind="stable")[:, :10]
    got = searcher.search_embeddings(q, k=10, exclude=searcher.index.ids[:5], rerank=KReciprocal(k1=8, k2=3))
    np.testing.assert_array_equal(got.positions, want)
    assert got.metric == "k_reciprocal" and (np.diff(got.distances, axis=1) <= 0).all()
    np.testing.assert_allclose(got.distances, 1 - np.take_along_axis(dist, want, 1), atol=1e-6)
    with pytest.raises(ValueError, match="max_pool"):
        searcher.search_embeddings(q, rerank=KReciprocal(max_pool=50))


def test_l2_metric(shapes):
    s = Searcher.build(TinyEmbedder(), shapes, metric="l2")
    res = s.search(shapes[0], k=5)
    assert res.ids[0, 0] == shapes.ids[0] and (np.diff(res.distances, axis=1) >= 0).all()


def test_embedder_check_survives_save_and_load(searcher, shapes, tmp_path):
    "The embedder config travels in the index sidecar; a searcher over the loaded index still checks it."
    path = searcher.index.save(tmp_path / "gallery.faiss")
    loaded = Index.load(path)
    s = Searcher(searcher.embedder, loaded, shapes)
    np.testing.assert_array_equal(s.search(shapes[4], k=3).ids, searcher.search(shapes[4], k=3).ids)
    with pytest.raises(ValueError, match="pooling: query embedder 'other' vs gallery 'thumb'"):
        Searcher(TinyEmbedder(pooling="other"), loaded)


def test_2d_float_with_d_columns_is_a_batch_of_embeddings(searcher, shapes):
    "What cbir.evaluate does: searcher.search(query_vectors, k) with a (Q, D) float array."
    q = searcher.gallery_vectors[:3]
    np.testing.assert_array_equal(searcher.search(q, k=4).ids, searcher.search_embeddings(q, k=4).ids)
    np.testing.assert_array_equal(searcher.search(torch.from_numpy(q), k=4).ids, searcher.search_embeddings(q, k=4).ids)
    with pytest.raises(ValueError, match="search_embeddings|cannot read"):
        searcher.search([q])                                               # a (Q, D) batch inside a list: refused


def test_embeddings_object_is_a_batch_of_vectors(searcher, shapes):
    emb = searcher.embedder.embed(shapes.subset([1, 2]))
    np.testing.assert_array_equal(searcher.search(emb, k=2).ids[:, 0], shapes.ids[1:3])
    np.testing.assert_array_equal(searcher.search_embeddings(emb, k=2).ids[:, 0], shapes.ids[1:3])


def test_list_sources_without_ids_map_items_by_position(shapes):
    images = [shapes[i] for i in range(12)]
    s = Searcher.build(TinyEmbedder(), images)
    res = s.search(images[5], k=2)
    assert np.array_equal(np.asarray(s.items(res)[0][0]), np.asarray(images[5]))


def test_default_rerank_and_evaluate(searcher, shapes):
    "A searcher with a default re-ranking works with cbir.evaluate, which only calls search(queries, k)."
    from cbir.evaluate import evaluate
    q = searcher.gallery_vectors[:20]
    for how in (None, "alpha_qe", "k_reciprocal"):
        s = Searcher(None, searcher.index, gallery_vectors=searcher.gallery_vectors, rerank=how)
        direct = s.search_embeddings(q, k=len(shapes))
        report = evaluate(q, searcher=s, query_labels=shapes.labels[:20], gallery_labels=shapes.labels,
                          query_ids=shapes.ids[:20], gallery_ids=shapes.ids)
        # evaluate re-sorts by score: it must keep the searcher's order (larger is closer for every metric but l2)
        from cbir.evaluate import rank_gallery
        positions, _ = rank_gallery(q, searcher=s)
        np.testing.assert_array_equal(positions, direct.positions)
        assert 0 <= report.metrics["mAP"] <= 1 and report.positions.shape[0] == 20


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_gallery_vectors_from_every_exact_storage_kind(kind):
    rng = np.random.default_rng(1)
    vectors = l2_normalize(rng.normal(size=(300, 16)))
    index = Index.build(vectors, ids=[f"v{i}" for i in range(300)], kind=kind, **({"nlist": 4} if kind == "ivf" else {}))
    np.testing.assert_allclose(Searcher(None, index).gallery_vectors, vectors, atol=1e-5)


def test_caches_follow_index_changes():
    "After items are removed from (or added to) the index, re-ranking uses the index's current vectors."
    rng = np.random.default_rng(2)
    vectors = l2_normalize(rng.normal(size=(50, 8)))
    ids = [f"v{i}" for i in range(50)]
    index = Index.build(vectors, ids=ids)
    s = Searcher(None, index)
    before = s.search_embeddings(vectors[:2], k=5, rerank="k_reciprocal")
    assert before.ids.shape == (2, 5)
    s.search_embeddings(vectors[:2], k=5, rerank="aqe")                   # fills the unit-gallery cache too
    index.remove(["v10", "v20"])
    np.testing.assert_allclose(s.gallery_vectors, np.delete(vectors, [10, 20], axis=0), atol=1e-6)
    after = s.search_embeddings(vectors[:2], k=48, rerank="k_reciprocal")
    assert after.ids.shape == (2, 48) and not np.isin(after.ids, ["v10", "v20"]).any()
    np.testing.assert_array_equal(index.ids[after.positions], after.ids)
    expanded = s.search_embeddings(vectors[:2], k=48, rerank="aqe")      # uses the current gallery, not the cached one
    assert expanded.ids.shape == (2, 48) and not np.isin(expanded.ids, ["v10", "v20"]).any()
    np.testing.assert_array_equal(index.ids[expanded.positions], expanded.ids)
    fresh = Searcher(None, index)
    for how in ("aqe", "k_reciprocal"):
        np.testing.assert_array_equal(s.search_embeddings(vectors[:5], k=10, rerank=how).ids,
                                      fresh.search_embeddings(vectors[:5], k=10, rerank=how).ids)


def test_rerank_settings_are_checked():
    for bad in (dict(n=0), dict(n=2.5), dict(alpha=-1.0)):
        with pytest.raises(ValueError, match="QueryExpansion needs"):
            QueryExpansion(**bad)
    for bad in (dict(k1=0), dict(k2=0), dict(lambda_=1.5)):
        with pytest.raises(ValueError, match="KReciprocal needs"):
            KReciprocal(**bad)


def test_build_from_a_folder(shapes, tmp_path):
    root = shapes.subset(np.arange(24)).to_folder(tmp_path / "gallery")
    s = Searcher.build(TinyEmbedder(), root)
    assert s.index.ntotal == 24
    query = next(p for p in sorted(Path(root).rglob("*.png")))
    res = s.search(query, k=3)
    assert (Path(root) / res.ids[0, 0]).resolve() == query.resolve() or res.distances[0, 0] > 0.999
    hit = s.items(res)[0][0]
    assert np.array_equal(np.asarray(hit), np.asarray(read_image(query)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), n_queries=st.integers(1, 4), k=st.integers(1, 40), data=st.data())
def test_exclusion_is_the_brute_force_ranking_minus_excluded(n, n_queries, k, data):
    "Property: each row is the exact cosine ranking with that row's excluded ids removed, cut to a common width."
    seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    g = l2_normalize(rng.normal(size=(n, 6)))
    q = l2_normalize(rng.normal(size=(n_queries, 6)))
    ids = np.array([f"g{i}" for i in range(n)])
    s = Searcher(None, Index.build(g, ids=ids))
    excl = [set(data.draw(st.lists(st.integers(0, n - 1), max_size=n))) for _ in range(n_queries)]
    res = s.search_embeddings(q, k=k, exclude=[[ids[j] for j in e] for e in excl])
    sims = q @ g.T
    wanted = [[j for j in np.argsort(-sims[i], kind="stable") if j not in excl[i]] for i in range(n_queries)]
    width = min([k] + [len(w) for w in wanted])
    assert res.ids.shape == (n_queries, width)
    for i in range(n_queries):
        got = list(res.positions[i])
        assert not set(got) & excl[i]
        # same items as brute force up to ties in float32 similarity
        np.testing.assert_allclose(sims[i, got], sims[i, wanted[i][:width]], atol=1e-5)
