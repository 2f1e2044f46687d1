"""The streamed `evaluate` (query chunks, sparse hits) gives the numbers of the dense path.

Integer-valued vectors make every score exact in float32, so FAISS (dense path) and numpy (streamed path) must rank
identically, ties included; on float data the two may swap items whose scores differ in the last bit only, so
there the check allows a few parts in a million.
"""
import warnings

import numpy as np
import pytest

from cbir.evaluate import evaluate
from cbir.metrics import NoRelevantWarning


def _data(seed, n_q=150, n_g=700, dim=12, classes=25, extra_query_classes=0, integer=True):
    rng = np.random.default_rng(seed)
    if integer:
        centres = rng.integers(-2, 3, (classes, dim))
        noise = lambda n: rng.integers(-1, 2, (n, dim))
    else:
        centres = rng.standard_normal((classes, dim))
        noise = lambda n: rng.standard_normal((n, dim))
    g_lab = rng.integers(0, classes, n_g)
    q_lab = rng.integers(0, classes + extra_query_classes, n_q)  # classes >= `classes` have no gallery item
    g = (centres[g_lab] + noise(n_g)).astype(np.float32)
    q = (centres[np.minimum(q_lab, classes - 1)] + noise(n_q)).astype(np.float32)
    return q, g, q_lab, g_lab


def _same(dense, streamed, exact=True):
    assert dense.metrics.keys() == streamed.metrics.keys() and dense.ks == streamed.ks
    for name in dense.metrics:
        if exact: assert dense.metrics[name] == pytest.approx(streamed.metrics[name], abs=1e-12), name
        else: assert dense.metrics[name] == pytest.approx(streamed.metrics[name], abs=1e-4), name
    for name in dense.per_query:
        if exact: np.testing.assert_allclose(dense.per_query[name], streamed.per_query[name], atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(dense.n_relevant, streamed.n_relevant)
    np.testing.assert_allclose(dense.precision_curve, streamed.precision_curve, atol=1e-12 if exact else 1e-4)
    w = streamed.positions.shape[1]
    if exact:
        np.testing.assert_array_equal(dense.positions[:, :w], streamed.positions)
        np.testing.assert_array_equal(dense.rel[:, :w], streamed.rel)
        np.testing.assert_allclose(dense.scores[:, :w], streamed.scores, rtol=1e-6, atol=1e-5)
    assert streamed.protocol["streamed"] and dense.protocol["n_averaged"] == streamed.protocol["n_averaged"]


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("chunk", [1, 37, 150, 1000])
def test_query_gallery_exact(metric, chunk):
    q, g, ql, gl = _data(1)
    kw = dict(query_labels=ql, gallery_labels=gl, metric=metric, ks=(1, 5, 10, 100))
    _same(evaluate(q, g, stream=False, **kw), evaluate(q, g, stream=True, chunk_size=chunk, **kw))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_leave_one_out_and_query_ids_exact(metric):
    _, g, _, gl = _data(2)
    _same(evaluate(g, query_labels=gl, metric=metric, stream=False), evaluate(g, query_labels=gl, metric=metric, stream=True, chunk_size=64))
    q_rows = np.arange(0, 700, 7)  # queries that are also in the gallery, found by id
    ids = np.array([f"img{i}" for i in range(700)])
    kw = dict(query_labels=gl[q_rows], gallery_labels=gl, query_ids=ids[q_rows], gallery_ids=ids, metric=metric)
    _same(evaluate(g[q_rows], g, stream=False, **kw), evaluate(g[q_rows], g, stream=True, chunk_size=33, **kw))


@pytest.mark.parametrize("policy", ["skip", "zero"])
def test_queries_without_relevant_items(policy):
    q, g, ql, gl = _data(3, extra_query_classes=5)
    kw = dict(query_labels=ql, gallery_labels=gl, metric="ip", no_relevant=policy)
    with warnings.catch_warnings(record=True) as w1:
        warnings.simplefilter("always")
        dense = evaluate(q, g, stream=False, **kw)
    with warnings.catch_warnings(record=True) as w2:
        warnings.simplefilter("always")
        streamed = evaluate(q, g, stream=True, **kw)
    assert any(issubclass(w.category, NoRelevantWarning) for w in w1) and any(issubclass(w.category, NoRelevantWarning) for w in w2)
    _same(dense, streamed)
    with pytest.raises(ValueError, match="no relevant item"):
        evaluate(q, g, stream=True, query_labels=ql, gallery_labels=gl, no_relevant="raise")


def test_k_larger_than_gallery_and_string_labels():
    q, g, ql, gl = _data(4, n_q=20, n_g=30, classes=4)
    ql, gl = np.array([f"c{x}" for x in ql]), np.array([f"c{x}" for x in gl])
    kw = dict(query_labels=ql, gallery_labels=gl, metric="l2", ks=(1, 10, 1000))
    _same(evaluate(q, g, stream=False, **kw), evaluate(q, g, stream=True, chunk_size=7, **kw))


def test_cosine_float_data_agrees_up_to_last_bit_ties():
    q, g, ql, gl = _data(5, integer=False)
    kw = dict(query_labels=ql, gallery_labels=gl, metric="cosine")
    _same(evaluate(q, g, stream=False, **kw), evaluate(q, g, stream=True, **kw), exact=False)


def test_automatic_choice_and_bad_input(monkeypatch):
    import cbir.evaluate as ev
    q, g, ql, gl = _data(6, n_q=10, n_g=50, classes=5)
    assert not evaluate(q, g, query_labels=ql, gallery_labels=gl).protocol.get("streamed")
    monkeypatch.setattr(ev, "STREAM_ABOVE", 100)
    assert evaluate(q, g, query_labels=ql, gallery_labels=gl).protocol.get("streamed")
    assert not evaluate(q, g, query_labels=ql, gallery_labels=gl, junk=[set()] * 10).protocol.get("streamed")  # junk: dense
    with pytest.raises(ValueError, match="stream=True works with class labels"):
        evaluate(q, g, query_labels=ql, gallery_labels=gl, junk=[set()] * 10, stream=True)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate(q, g, query_labels=ql, gallery_labels=gl, stream=True, chunk_size=0)
    with pytest.raises(ValueError, match="gallery labels"):
        evaluate(q, g, query_labels=ql, gallery_labels=gl[:-1], stream=True)
    with pytest.raises(ValueError, match="dimension"):
        evaluate(q, g[:, :5], query_labels=ql, gallery_labels=gl, stream=True)
    bad = q.copy(); bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, g, query_labels=ql, gallery_labels=gl, stream=True)
