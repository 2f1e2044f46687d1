"""The Milvus backend (Milvus Lite, offline) against FAISS: same top-10 up to ties, ids, removal, save/load, Searcher."""
import json

import numpy as np
import pytest

pytest.importorskip("pymilvus")

from cbir.index import Index
from cbir.scale import MilvusIndex, open_index
from cbir.search import Searcher


def _same_top_k_up_to_ties(milvus_res, faiss_res, tol=1e-4):
    """Per query: the scores agree within `tol`, and the id sets agree except for items tied (within `tol`) with the
    k-th score, which either engine may break differently."""
    for q in range(len(faiss_res.ids)):
        np.testing.assert_allclose(milvus_res.distances[q], faiss_res.distances[q], atol=tol, rtol=tol)
        kth = faiss_res.distances[q, -1]
        a, b = set(milvus_res.ids[q].tolist()), set(faiss_res.ids[q].tolist())
        for i in a ^ b:  # every disagreement must be a tie at the boundary
            row = milvus_res if i in a else faiss_res
            d = row.distances[q][row.ids[q].tolist().index(i)]
            assert abs(d - kth) <= tol * max(1, abs(kth)), (q, i, d, kth)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 24)).astype(np.float32)
    x = centres[rng.integers(0, 30, 3000)] + 0.5 * rng.standard_normal((3000, 24)).astype(np.float32)
    q = centres[rng.integers(0, 30, 50)] + 0.5 * rng.standard_normal((50, 24)).astype(np.float32)
    x[100] = x[101]  # an exact tie
    return x, q, np.array([f"img/{i:05d}.jpg" for i in range(3000)])


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_same_top10_as_faiss_flat(tmp_path, data, metric):
    x, q, ids = data
    mv = MilvusIndex.build(x, ids, metric=metric, uri=str(tmp_path / "m.db"), collection=f"c_{metric}")
    fa = Index.build(x, ids, kind="flat", metric=metric)
    m, f = mv.search(q, k=10), fa.search(q, k=10)
    assert m.ids.dtype.kind == "U" and m.metric == metric and m.ids.shape == (50, 10)
    _same_top_k_up_to_ties(m, f)
    np.testing.assert_array_equal(ids[m.positions], m.ids)  # positions index the ids, as for Index
    mv.client.close()


def test_add_remove_save_load_and_open_index(tmp_path, data):
    x, q, _ = data
    mv = MilvusIndex.build(x[:2000], metric="cosine", uri=str(tmp_path / "milvus.db"), collection="grow",
                           embedder_config={"backbone": "resnet18"})
    assert mv.ids.dtype.kind == "i" and mv.ntotal == 2000
    mv.add(x[2000:], ids=np.arange(5000, 6000))
    assert mv.remove([0, 1, 5000]) == 3 and mv.ntotal == 2997
    res = mv.search(x[[0, 5, 2001]], k=1)  # id 5001 is row 2001
    assert res.ids[0, 0] != 0 and res.ids[1, 0] == 5 and res.ids[2, 0] == 5001  # removed items are gone
    path = mv.save(tmp_path / "index.milvus")
    side = json.loads((tmp_path / "index.milvus.json").read_text())
    assert side["backend"] == "milvus" and side["uri"] == "milvus.db" and side["ntotal"] == 2997
    mv.client.close()
    back = open_index(tmp_path, expect={"backbone": "resnet18", "metric": "cosine"})
    assert isinstance(back, MilvusIndex) and back.ntotal == 2997
    np.testing.assert_array_equal(np.sort(back.ids), np.sort(mv.ids))
    all_ids = np.r_[np.arange(2000), np.arange(5000, 6000)]
    keep = ~np.isin(all_ids, [0, 1, 5000])
    fa = Index.build(x[keep], all_ids[keep], kind="flat", metric="cosine")
    _same_top_k_up_to_ties(back.search(q, k=5), fa.search(q, k=5))  # the reloaded collection is the edited one
    with pytest.raises(ValueError, match="embedder backbone"):
        MilvusIndex.load(path, expect={"backbone": "resnet50"})
    back.client.drop_collection("grow")
    with pytest.raises(ValueError, match="does not exist"):
        MilvusIndex.load(path)
    back.client.close()


def test_searcher_uses_a_milvus_index(tmp_path, data):
    x, q, ids = data
    mv = MilvusIndex.build(x, ids, metric="cosine", uri=str(tmp_path / "s.db"), collection="s")
    fa = Index.build(x, ids, kind="flat", metric="cosine")
    got = Searcher(None, mv).search_embeddings(q[:5], k=5, exclude=[ids[0]] * 5)
    want = Searcher(None, fa).search_embeddings(q[:5], k=5, exclude=[ids[0]] * 5)
    np.testing.assert_array_equal(got.ids, want.ids)
    mv.client.close()


def test_open_index_dispatches_and_refuses(tmp_path, data):
    x, _, ids = data
    Index.build(x[:100], ids[:100], kind="flat").save(tmp_path / "index.faiss")
    assert isinstance(open_index(tmp_path), Index) and isinstance(open_index(tmp_path / "index.faiss"), Index)
    mv = MilvusIndex.build(x[:100], ids[:100], uri=str(tmp_path / "m.db"), collection="two")
    mv.save(tmp_path / "index.milvus"); mv.client.close()
    with pytest.raises(ValueError, match="holds 2 saved indexes"):
        open_index(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        open_index(tmp_path / "nothing")


def test_bad_input(tmp_path, data):
    x, _, ids = data
    with pytest.raises(ValueError, match="uri must be"):
        MilvusIndex.build(x[:10], uri=str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="metric must be"):
        MilvusIndex.build(x[:10], metric="hamming", uri=str(tmp_path / "b.db"))
    with pytest.raises(ValueError, match="kind must be"):
        MilvusIndex.build(x[:10], kind="opq", uri=str(tmp_path / "b.db"))
    with pytest.raises(ValueError, match="collection names"):
        MilvusIndex.build(x[:10], uri=str(tmp_path / "b.db"), collection="bad-name")
    mv = MilvusIndex.build(x[:10], ids[:10], uri=str(tmp_path / "b.db"), collection="bad")
    with pytest.raises(ValueError, match="dimension"):
        mv.search(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        mv.search(x[:1], k=0)
    with pytest.raises(ValueError, match="already in the index"):
        mv.add(x[:1], ids=ids[:1])
    with pytest.raises(ValueError, match="ids not in the index"):
        mv.remove(["missing.jpg"])
    assert mv.search(x[:1], k=50).ids.shape == (1, 10)  # k clamped to the collection size
    mv.client.close()
