"""Bad input to `cbir.metrics` gets a clear error that says what was wrong."""
import numpy as np
import pytest

from cbir import metrics as M

REL = np.array([[1, 0, 1], [0, 1, 0]], bool)
R = np.array([2, 1])


@pytest.mark.parametrize("k", [0, -1, 2.0, 1.5, "3", None, True])
def test_bad_k(k):
    with pytest.raises((TypeError, ValueError), match="k must be a positive integer"):
        M.precision_at_k(REL, k)
    with pytest.raises((TypeError, ValueError), match="positive integer"):
        M.retrieval_metrics(REL, R, ks=(1, k))


def test_numpy_integer_k_is_fine():
    assert M.recall_at_k(REL, R, np.int32(2)).tolist() == [0.5, 1.0]


@pytest.mark.parametrize("fn", [
    lambda rel: M.precision_at_k(rel, 1), lambda rel: M.recall_at_k(rel, [], 1), lambda rel: M.hit_rate_at_k(rel, 1),
    lambda rel: M.reciprocal_rank(rel), lambda rel: M.average_precision(rel, []), lambda rel: M.ndcg_at_k(rel, 1, []),
    lambda rel: M.retrieval_metrics(rel, []), lambda rel: M.per_query_metrics(rel, [])])
def test_empty_query_set(fn):
    with pytest.raises(ValueError, match="query set is empty"):
        fn(np.zeros((0, 5), bool))


def test_shapes():
    with pytest.raises(ValueError, match="2-D"):
        M.precision_at_k(np.array([1, 0, 1]), 1)
    with pytest.raises(ValueError, match=r"one count per query: shape \(2,\) expected, got \(3,\)"):
        M.average_precision(REL, [1, 2, 3])
    with pytest.raises(ValueError, match="same Q"):
        M.relevance_from_labels([1, 2, 3], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="rankings are empty"):
        M.precision_at_k(np.zeros((2, 0), bool), 1)
    with pytest.raises(ValueError, match=r"ideal_gains must be \(Q, M\)"):
        M.ndcg_at_k(np.array([[2.0, 1.0]]), 2, ideal_gains=[2.0, 1.0])
    with pytest.raises(ValueError, match="one set of relevant ids per query"):
        M.relevance_from_ids([["a"], ["b"]], [{"a"}])


def test_non_binary_relevance_where_binary_is_required():
    graded = np.array([[2, 0, 1]])
    for fn in (lambda: M.precision_at_k(graded, 1), lambda: M.average_precision(graded, [2]),
               lambda: M.retrieval_metrics(graded, [2]), lambda: M.ndcg_at_k(graded, 2, [2])):
        with pytest.raises(ValueError, match="must be binary.*found the value 2"):
            fn()
    with pytest.raises(ValueError, match="NaN"):
        M.recall_at_k(np.array([[np.nan, 1.0]]), [1], 1)
    with pytest.raises(TypeError, match="bool or numeric"):
        M.recall_at_k(np.array([["a", "b"]]), [1], 1)
    assert M.precision_at_k(np.array([[1.0, 0.0]]), 1).tolist() == [1.0]  # 0/1 floats are binary


def test_bad_n_relevant():
    with pytest.raises(ValueError, match="non-negative integers"):
        M.recall_at_k(REL, [2.5, 1], 1)
    with pytest.raises(ValueError, match=">= 0"):
        M.recall_at_k(np.zeros((2, 3), bool), [-1, 1], 1)
    with pytest.raises(ValueError, match="query 0: the ranking holds 2 relevant items but n_relevant says 1"):
        M.average_precision(REL, [1, 1])


def test_ids_missing_from_the_gallery_or_repeated():
    with pytest.raises(ValueError, match=r"query 0: ids not in the gallery: \['x'\]"):
        M.relevance_from_ids([["a", "x"]], [{"a"}], gallery_ids=["a", "b"])
    with pytest.raises(ValueError, match=r"query 0: ids not in the gallery: \['y'\]"):
        M.relevance_from_ids([["a", "b"]], [{"a", "y"}], gallery_ids=["a", "b"])
    with pytest.raises(ValueError, match="more than once"):
        M.relevance_from_ids([["a", "b", "a"]], [{"a"}])
    with pytest.raises(ValueError, match="query set is empty"):
        M.relevance_from_ids([], [])
    with pytest.raises(ValueError, match="grades must be >= 0"):
        M.relevance_from_ids([["a"]], [{"a": -1}])


def test_bad_options():
    with pytest.raises(ValueError, match="divide_by must be one of"):
        M.average_precision(REL, R, divide_by="k")
    with pytest.raises(ValueError, match="divide_by must be 'k' or 'min_k_r'"):
        M.precision_at_k(REL, 1, R, divide_by="r")
    with pytest.raises(ValueError, match="needs n_relevant"):
        M.precision_at_k(REL, 1, divide_by="min_k_r")
    with pytest.raises(ValueError, match="no_relevant must be one of"):
        M.retrieval_metrics(REL, R, no_relevant="ignore")
    with pytest.raises(ValueError, match="average must be"):
        M.retrieval_metrics(REL, R, average="weighted")
    with pytest.raises(ValueError, match="gain must be"):
        M.ndcg_at_k(REL, 2, R, gain="log")
    with pytest.raises(ValueError, match="graded relevance"):
        M.ndcg_at_k(np.array([[2.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="more gain than its ideal"):
        M.ndcg_at_k(np.array([[2.0, 1.0]]), 2, ideal_gains=[[1.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        M.rank_by_score([[0.1, np.nan]])
