"""Exact index: cross-checks against numpy, id mapping, bad input, save/load round trips."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cbir.index import MISSING_INT, Index, SearchResult, as_vectors


def numpy_topk(gallery, queries, k, metric):
    if metric == "cosine":
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "l2":
        scores = -((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    else:
        scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), dim=st.integers(1, 16), k=st.integers(1, 80), metric=st.sampled_from(["l2", "ip", "cosine"]),
       seed=st.integers(0, 10_000))
def test_flat_matches_numpy(n, dim, k, metric, seed):
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((n, dim)) + 0.1  # float64 on purpose
    queries = rng.standard_normal((4, dim)) + 0.1
    ids = np.array([f"item{i}" for i in rng.permutation(n)])
    res = Index.build(gallery, ids, kind="flat", metric=metric).search(queries, k)
    order, scores = numpy_topk(gallery, queries, min(k, n), metric)
    assert res.ids.shape == (4, min(k, n)) and res.valid.all()
    expected = scores if metric != "l2" else -scores
    np.testing.assert_allclose(res.distances, expected, rtol=1e-3, atol=1e-3)
    # ties aside, the ids map back through positions
    np.testing.assert_array_equal(ids[res.positions], res.ids)
    assert set(res.ids[:, 0]) <= set(ids)


def test_integer_ids_and_batch_search():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    ids = np.arange(1000, 1200)
    index = Index.build(x, ids, kind="flat", metric="l2")
    res = index.search(x[:50], k=3)
    np.testing.assert_array_equal(res.ids[:, 0], ids[:50])
    np.testing.assert_allclose(res.distances[:, 0], 0, atol=1e-4)
    assert isinstance(res, SearchResult) and res.metric == "l2"
    assert res.positions.dtype == np.int64 and res.distances.dtype == np.float32


def test_k_larger_than_index_never_returns_minus_one():
    x = np.eye(4, 6)
    for ids in (None, ["a", "b", "c", "d"]):
        res = Index.build(x, ids, kind="flat", metric="ip").search(np.ones((2, 6)), k=100)
        assert res.ids.shape == (2, 4) and res.valid.all()
        assert (res.positions >= 0).all()
        if ids is None:
            assert (res.ids >= 0).all()


def test_non_contiguous_and_single_vector_queries():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 16))
    index = Index.build(x[:, ::2], kind="flat")  # strided view, float64
    assert index.dim == 8 and index.ntotal == 50
    res = index.search(x[7, ::2], k=1)  # one 1-D vector
    assert res.ids.shape == (1, 1) and res.ids[0, 0] == 7


@pytest.mark.parametrize("bad, msg", [
    (np.ones((2, 5)), "dimension 5 but the index has dimension 8"),
    (np.array([[np.inf] * 8]), "NaN or infinite"),
    (np.array([["x"] * 8]), "real numbers"),
    (np.ones((2, 2, 8)), "2-D array"),
])
def test_bad_queries(bad, msg):
    index = Index.build(np.random.default_rng(0).standard_normal((10, 8)), kind="flat")
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        index.search(bad, k=3)


def test_add_checks_ids():
    x = np.random.default_rng(3).standard_normal((10, 4))
    index = Index.build(x, [f"i{j}" for j in range(10)], kind="flat")
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[:2], ["i0", "new"])
    with pytest.raises(ValueError, match="string ids"):
        index.add(x[:2])
    with pytest.raises(ValueError, match="unique"):
        index.add(x[:2], ["n", "n"])
    index.add(x[:2] + 5, ["n1", "n2"])
    assert index.ntotal == 12 and list(index.ids[-2:]) == ["n1", "n2"]
    assert index.search(x[:2] + 5, k=1).ids[:, 0].tolist() == ["n1", "n2"]


def test_empty_queries_and_empty_index():
    index = Index.build(np.ones((3, 4)), kind="flat")
    assert index.search(np.empty((0, 4)), k=2).ids.shape == (0, 2)
    empty = Index.build(np.empty((0, 4)), kind="flat", metric="l2")
    res = empty.search(np.ones((2, 4)), k=5)
    assert res.ids.shape == (2, 0)


def test_save_load_roundtrip_and_refusals(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    config = {"backbone": "resnet18", "pooling": "gem", "dim": 16, "version": "0.1.0"}
    index = Index.build(x, [f"p{i}.jpg" for i in range(100)], kind="flat", metric="cosine", embedder_config=config)
    path = index.save(tmp_path / "sub" / "g.faiss")
    sidecar = json.loads((tmp_path / "sub" / "g.faiss.json").read_text())
    assert sidecar["metric"] == "cosine" and sidecar["dim"] == 16 and sidecar["embedder"] == config
    assert sidecar["factory"] == "Flat" and sidecar["kind"] == "flat" and sidecar["ntotal"] == 100
    with np.load(tmp_path / "sub" / sidecar["files"]["ids.npz"]["name"], allow_pickle=False) as arrays:
        assert arrays["ids"].dtype.kind == "U"
    loaded = Index.load(path, expect=config)
    np.testing.assert_array_equal(loaded.search(x[:5], 3).ids, index.search(x[:5], 3).ids)
    loaded2 = Index.load(path, expect={"embedder": config, "metric": "cosine"})
    assert loaded2.ntotal == 100
    with pytest.raises(ValueError, match="embedder pooling: index has 'gem', expected 'avg'"):
        Index.load(path, expect={**config, "pooling": "avg"})
    with pytest.raises(ValueError, match="metric: index has 'cosine', expected 'l2'"):
        Index.load(path, expect={"metric": "l2"})
    with pytest.raises(ValueError, match="dim: index has 16, expected 32"):
        Index.load(path, expect={"dim": 32})
    # overwrite in place: still one consistent set of files, no temp files
    index.add(x[:1] * 2, ["extra.jpg"]).save(path)
    assert Index.load(path).ntotal == 101
    assert not [p for p in (tmp_path / "sub").iterdir() if p.suffix == ".tmp"]


def test_as_vectors_copies_only_when_needed():
    x = np.ones((3, 4), np.float32)
    assert as_vectors(x) is x or np.shares_memory(as_vectors(x), x)
    assert MISSING_INT == np.iinfo(np.int64).min
