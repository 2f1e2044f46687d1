"""Property tests (hypothesis) and the worked examples of nbs/04_metrics.ipynb for `cbir.metrics`."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from cbir import metrics as M


@st.composite
def rankings(draw, max_queries=12, max_width=25):
    "A binary relevance matrix and an n_relevant >= the hits of each row (R = 0 allowed)."
    n_queries = draw(st.integers(1, max_queries))
    width = draw(st.integers(1, max_width))
    rel = draw(arrays(bool, (n_queries, width)))
    extra = draw(arrays(np.int64, n_queries, elements=st.integers(0, 6)))
    return rel, rel.sum(1) + extra


KS = st.integers(1, 40)


@settings(max_examples=150, deadline=None)
@given(rankings(), KS)
def test_values_lie_in_unit_interval(case, k):
    rel, n_rel = case
    for name, values in M.per_query_metrics(rel, n_rel, ks=(1, k, 40), gallery_size=40).items():
        assert np.all((values >= 0) & (values <= 1)), name
    for d in ("r", "min_k_r", "hits"):
        ap = M.average_precision(rel, n_rel, k, divide_by=d)
        assert np.all((ap >= 0) & (ap <= 1))
    p = M.precision_at_k(rel, k, n_rel, divide_by="min_k_r")
    assert np.all((p >= 0) & (p <= 1))


@settings(max_examples=150, deadline=None)
@given(rankings())
def test_hit_rate_recall_and_ap_never_decrease_with_k(case):
    rel, n_rel = case
    ks = range(1, rel.shape[1] + 3)
    for fn in (lambda k: M.hit_rate_at_k(rel, k), lambda k: M.recall_at_k(rel, n_rel, k),
               lambda k: M.average_precision(rel, n_rel, k)):
        values = np.stack([fn(k) for k in ks])
        assert np.all(np.diff(values, axis=0) >= -1e-15)


@settings(max_examples=150, deadline=None)
@given(rankings(), KS)
def test_precision_times_k_equals_recall_times_r(case, k):
    rel, n_rel = case
    p, r = M.precision_at_k(rel, k), M.recall_at_k(rel, n_rel, k)
    np.testing.assert_allclose(p * k, r * n_rel, rtol=0, atol=1e-12)
    hr = M.hit_rate_at_k(rel, k)
    assert np.all(hr >= r) and np.all(hr >= p)  # a hit rate is never below recall or precision
    one = n_rel == 1
    np.testing.assert_array_equal(hr[one], r[one])  # with R = 1 the hit rate is the recall


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(0, 30), KS)
def test_perfect_ranking_scores_one(n_rel, n_other, k):
    rel = np.array([[True] * n_rel + [False] * n_other])
    R = np.array([n_rel])
    assert M.average_precision(rel, R)[0] == pytest.approx(1, abs=1e-15)
    assert M.reciprocal_rank(rel)[0] == 1
    assert M.r_precision(rel, R)[0] == 1 and M.map_at_r(rel, R)[0] == pytest.approx(1, abs=1e-15)
    assert M.ndcg_at_k(rel, k, R)[0] == pytest.approx(1, abs=1e-12)
    assert M.precision_at_k(rel, k, R, divide_by="min_k_r")[0] == 1
    assert M.average_precision(rel, R, k, divide_by="min_k_r")[0] == pytest.approx(1, abs=1e-15)
    assert M.recall_at_k(rel, R, max(k, n_rel))[0] == 1


@settings(max_examples=100, deadline=None)
@given(rankings())
def test_moving_a_hit_up_never_lowers_ap_or_ndcg(case):
    rel, n_rel = case
    rel = rel.copy()
    for q in range(len(rel)):
        row = rel[q]
        gaps = np.flatnonzero(~row[:-1] & row[1:])  # a miss directly above a hit
        if len(gaps):
            better = rel.copy()
            i = gaps[0]
            better[q, i], better[q, i + 1] = True, False
            assert M.average_precision(better, n_rel)[q] >= M.average_precision(rel, n_rel)[q] - 1e-15
            assert M.ndcg_at_k(better, rel.shape[1], n_rel)[q] >= M.ndcg_at_k(rel, rel.shape[1], n_rel)[q] - 1e-15


def test_worked_example_of_the_notebook():
    "The two-query example of nbs/04_metrics.ipynb, computed by hand."
    rel = np.array([[1, 0, 1, 0, 0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=bool)
    R = np.array([4, 1])
    m = M.retrieval_metrics(rel, R, ks=(1, 3, 5, 10))
    expected = {
        "P@1": (1 + 0) / 2, "P@5": (2 / 5 + 1 / 5) / 2, "R@5": (2 / 4 + 1) / 2, "HR@1": 0.5, "HR@5": 1.0,
        "F1@5": (4 / 9 + 2 / 6) / 2, "mAP": (13 / 24 + 1 / 2) / 2, "MRR": (1 + 1 / 2) / 2,
        "mAP@3": ((1 + 2 / 3) / 4 + 1 / 2) / 2, "R-precision": (2 / 4 + 0) / 2, "MAP@R": (5 / 12 + 0) / 2,
        "nDCG@5": (1.5 / (1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)) + 1 / math.log2(3)) / 2,
    }
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-15), name
    ap3 = [M.average_precision(rel, R, 3, divide_by=d)[0] for d in ("r", "min_k_r", "hits")]
    assert ap3 == pytest.approx([5 / 12, 5 / 9, 5 / 6], abs=1e-15)


def test_retrieval_metrics_keys_for_the_cli():
    rel = np.zeros((4, 12), bool)
    rel[:, 0] = True
    m = M.retrieval_metrics(rel, np.ones(4, int))
    for key in ("P@1", "R@5", "HR@10", "mAP", "MRR", "nDCG@10"):  # each query's one relevant item is first
        assert m[key] == pytest.approx(1.0), key
    assert m["P@5"] == pytest.approx(1 / 5)
    assert [k for k in M.retrieval_metrics(rel, np.ones(4, int), ks=M.K_SWEEP) if k.startswith("HR@")] == ["HR@1", "HR@10", "HR@12"]


def test_no_relevant_policy_warns_skips_zeroes_or_raises():
    rel = np.array([[1, 0], [0, 0]], bool)
    with pytest.warns(M.NoRelevantWarning, match="1 of 2 queries"):
        skip = M.retrieval_metrics(rel, [1, 0])
    with pytest.warns(M.NoRelevantWarning, match="scored 0"):
        zero = M.retrieval_metrics(rel, [1, 0], no_relevant="zero")
    assert skip["mAP"] == 1.0 and zero["mAP"] == 0.5 and skip["P@1"] == 1.0 and zero["P@1"] == 0.5
    with pytest.raises(ValueError, match="no relevant item"):
        M.retrieval_metrics(rel, [1, 0], no_relevant="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.retrieval_metrics(rel, [1, 1])  # no warning when every query has a relevant item
