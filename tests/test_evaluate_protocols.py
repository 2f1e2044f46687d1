"""`cbir.evaluate` against a brute-force protocol written with plain loops: score every gallery item in
float64, sort with Python's stable `sorted` (ties -> lower gallery position), drop the query itself and junk,
count R over what is left, and score with the reference loops of test_metrics_crosscheck.py.

Integer-valued embeddings make the scores exact in float32 too, so ties are real ties and the orders must match.
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_metrics_crosscheck import ref_all, ref_interpolated_precision, ref_ndcg  # noqa: E402

from cbir.evaluate import evaluate, rank_gallery, score_rankings  # noqa: E402
from cbir.index import Index  # noqa: E402
from cbir.metrics import NoRelevantWarning  # noqa: E402

TOL = 1e-12


def brute_force(queries, gallery, rel_of, metric, remove_of, ks):
    "Per-query reference metrics: rel_of(q, j) relevance, remove_of(q, j) whether j leaves q's ranking."
    out = []
    for q, x in enumerate(queries.tolist()):
        scored = []
        for j, y in enumerate(gallery.tolist()):
            if remove_of(q, j):
                continue
            s = sum((a - b) ** 2 for a, b in zip(x, y)) if metric == "l2" else sum(a * b for a, b in zip(x, y))
            scored.append((s if metric == "l2" else -s, j))
        ranking = [j for _, j in sorted(scored, key=lambda t: t[0])]  # stable: ties keep gallery order
        row = [int(rel_of(q, j)) for j in ranking]
        R = sum(1 for j in range(len(gallery)) if rel_of(q, j) and not remove_of(q, j))
        out.append((ranking, row, R, ref_all(row, R, ks)))
    return out


def integer_embeddings(rng, n, dim=3, high=3):
    return rng.integers(-high, high + 1, size=(n, dim)).astype(np.float32)


def check(report, refs, ks):
    for q, (ranking, row, R, ref) in enumerate(refs):
        assert report.positions[q, :len(ranking)].tolist() == ranking
        assert report.n_relevant[q] == R
        for name, value in ref.items():
            assert abs(report.per_query[name][q] - value) < TOL, (q, name)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separate_query_set_with_junk_matches_brute_force(metric, seed):
    rng = np.random.default_rng(seed)
    gallery, queries = integer_embeddings(rng, 60), integer_embeddings(rng, 25)
    g_labels, q_labels = rng.integers(0, 4, 60), rng.integers(0, 4, 25)
    junk = [set(rng.choice(60, size=rng.integers(0, 6), replace=False).tolist()) for _ in range(25)]
    ks = [1, 5, 10, 60]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRelevantWarning)
        report = evaluate(queries, gallery, query_labels=q_labels, gallery_labels=g_labels, junk=junk, metric=metric, ks=ks)
    refs = brute_force(queries, gallery, lambda q, j: q_labels[q] == g_labels[j], metric, lambda q, j: j in junk[q],
                       report.ks)
    check(report, refs, report.ks)
    assert report.ks == [1, 5, 10, report.rel.shape[1]]  # 60 capped at the longest ranking left after junk


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_leave_one_out_matches_brute_force(metric):
    rng = np.random.default_rng(5)
    vectors, labels = integer_embeddings(rng, 50), rng.integers(0, 5, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRelevantWarning)
        report = evaluate(vectors, query_labels=labels, metric=metric, ks=(1, 3, 49))
    refs = brute_force(vectors, vectors, lambda q, j: labels[q] == labels[j], metric, lambda q, j: q == j, report.ks)
    check(report, refs, report.ks)
    assert report.ks == [1, 3, 49] and report.rel.shape[1] == 49  # the query left its own ranking


def test_query_ids_remove_the_query_from_a_larger_gallery():
    rng = np.random.default_rng(6)
    gallery, labels = integer_embeddings(rng, 40), rng.integers(0, 3, 40)
    ids = np.array([f"g{i}" for i in range(40)])
    q = np.arange(0, 40, 4)  # the queries are gallery items
    report = evaluate(gallery[q], gallery, query_labels=labels[q], gallery_labels=labels, query_ids=ids[q],
                      gallery_ids=ids, metric="ip", ks=(1, 10))
    refs = brute_force(gallery[q], gallery, lambda a, j: labels[q[a]] == labels[j], "ip", lambda a, j: j == q[a], report.ks)
    check(report, refs, report.ks)


def test_attributes_binary_and_graded_match_brute_force():
    rng = np.random.default_rng(7)
    gallery, queries = integer_embeddings(rng, 50), integer_embeddings(rng, 20)
    g_attr = rng.uniform(size=(50, 4)) < 0.5
    q_attr = rng.uniform(size=(20, 4)) < 0.5
    q_attr[:, 0] = True  # every query asks for at least one attribute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRelevantWarning)
        report = evaluate(queries, gallery, query_attributes=q_attr, gallery_attributes=g_attr, metric="ip", ks=(1, 5, 50))
    has_all = lambda q, j: all(g_attr[j][a] for a in range(4) if q_attr[q][a])
    share = lambda q, j: sum(1 for a in range(4) if q_attr[q][a] and g_attr[j][a]) / sum(q_attr[q])
    refs = brute_force(queries, gallery, has_all, "ip", lambda q, j: False, report.ks)
    check(report, refs, report.ks)
    for q, (ranking, _, _, _) in enumerate(refs):
        gains = [share(q, j) for j in ranking]
        ideal = [share(q, j) for j in range(50)]
        for k in report.ks:
            assert abs(report.per_query[f"nDCG graded@{k}"][q] - ref_ndcg(gains, ideal, k)) < TOL


def test_explicit_graded_sets_and_pr_curve():
    rng = np.random.default_rng(8)
    gallery, queries = integer_embeddings(rng, 30), integer_embeddings(rng, 10)
    ids = np.array([f"item{i}" for i in range(30)])
    grades = [{str(ids[j]): int(rng.integers(1, 4)) for j in rng.choice(30, 5, replace=False)} for _ in range(10)]
    report = evaluate(queries, gallery, relevant=grades, gallery_ids=ids, metric="l2", ks=(1, 10))
    rel_of = lambda q, j: str(ids[j]) in grades[q]
    refs = brute_force(queries, gallery, rel_of, "l2", lambda q, j: False, report.ks)
    check(report, refs, report.ks)
    for q, (ranking, row, R, _) in enumerate(refs):
        gains = [grades[q].get(str(ids[j]), 0) for j in ranking]
        assert abs(report.per_query["nDCG graded@10"][q] - ref_ndcg(gains, list(grades[q].values()), 10)) < TOL
    curve = np.mean([ref_interpolated_precision(row, R, report.recall_levels) for _, row, R, _ in refs], axis=0)
    np.testing.assert_allclose(report.precision_curve, curve, rtol=0, atol=TOL)


def test_truncated_ranking_and_searcher_agree_with_full_ranking():
    rng = np.random.default_rng(9)
    gallery, queries = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    g_labels, q_labels = rng.integers(0, 6, 200), rng.integers(0, 6, 30)
    full = evaluate(queries, gallery, query_labels=q_labels, gallery_labels=g_labels, ks=(1, 10))
    top = evaluate(queries, gallery, query_labels=q_labels, gallery_labels=g_labels, ks=(1, 10), max_rank=10)
    searcher = Index.build(gallery, kind="flat", metric="cosine")
    via = evaluate(queries, searcher=searcher, query_labels=q_labels, gallery_labels=g_labels, ks=(1, 10))
    for name in ("P@1", "R@10", "HR@10", "mAP@10", "nDCG@10"):  # R counts the whole gallery in all three
        assert abs(top.metrics[name] - full.metrics[name]) < TOL and abs(via.metrics[name] - full.metrics[name]) < TOL
    assert top.rel.shape[1] == 10 and (top.n_relevant == full.n_relevant).all()
    assert "| R@K |" in full.table() and "mAP=" in repr(full)


def test_score_rankings_without_embeddings():
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], bool)
    report = score_rankings(rel, [2, 3], ks=(1, 4))
    assert report.metrics["P@1"] == 0.5 and report.ks == [1, 4]
    assert report.worst_queries(1).tolist() == [1]


def test_rank_gallery_breaks_ties_by_position():
    gallery = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    for metric in ("ip", "l2", "cosine"):
        positions, _ = rank_gallery(np.array([[1, 0]], np.float32), gallery, metric=metric)
        assert positions[0].tolist() == [0, 2, 3, 1]


def test_rank_gallery_orders_any_searchers_rows_by_score_then_position():
    "Whatever order a searcher returns (shuffled rows, ties, empty slots), the ranking is by score, ties by gallery position."
    from types import SimpleNamespace
    from cbir.index import SearchResult
    rng = np.random.default_rng(0)
    for trial in range(40):
        q, n = int(rng.integers(1, 6)), int(rng.integers(2, 30))
        metric = ("ip", "l2")[trial % 2]
        scores = rng.integers(0, 4, (q, n)).astype(np.float32)     # few values: many ties
        positions = np.array([rng.permutation(n) for _ in range(q)])
        valid = rng.random((q, n)) > 0.2
        if trial % 3 == 0:  # rows already in order, as an exact index returns them
            order = np.lexsort((positions, scores if metric == "l2" else -scores), axis=-1)
            scores, positions = np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)
        given = np.where(valid, positions, -1)

        class Shuffled:  # a searcher (it has .index and .search) that returns these rows as they are
            index = SimpleNamespace(ids=np.arange(n))
            def search(self, queries, k): return SearchResult(given, np.where(valid, scores, np.nan), given, metric, valid)
        got_pos, got_scores = rank_gallery(np.zeros((q, 2), np.float32), searcher=Shuffled())
        for r in range(q):  # the definition, one row at a time: valid items by (closer first, position), then empty slots
            items = sorted((s if metric == "l2" else -s, p) for s, p, v in zip(scores[r], given[r], valid[r]) if v)
            want = [p for _, p in items] + [-1] * (n - len(items))
            assert got_pos[r].tolist() == want, (trial, r)
            np.testing.assert_array_equal(got_scores[r][:len(items)], [s if metric == "l2" else -s for s, _ in items])
            assert np.isnan(got_scores[r][len(items):]).all()


def test_bad_input_gets_clear_errors():
    rng = np.random.default_rng(10)
    g, q = rng.normal(size=(10, 4)), rng.normal(size=(3, 4))
    gl, ql = np.arange(10) % 3, np.arange(3)
    cases = [
        (lambda: evaluate(q, g), "exactly one source"),
        (lambda: evaluate(q, g, query_labels=ql, query_attributes=np.ones((3, 2))), "exactly one source"),
        (lambda: evaluate(q, g, query_labels=ql), "need gallery_labels"),
        (lambda: evaluate(q, g, query_labels=ql[:2], gallery_labels=gl), "check the lengths"),
        (lambda: evaluate(np.zeros((0, 4)), g, query_labels=[], gallery_labels=gl), "non-empty"),
        (lambda: evaluate(q, g, relevant=[{1}, {2}, {99}]), "ids not in the gallery: [99]"),
        (lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, junk=[{1}]), "one set per query"),
        (lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, ks=(1, -5)), "positive integer"),
        (lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, gallery_ids=["a"]), "1 gallery ids for 10"),
        (lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, disjoint_from=[2, 7]), "not class-disjoint"),
        (lambda: evaluate(q[:, :3], g, query_labels=ql, gallery_labels=gl), "dim"),
        (lambda: evaluate(q, g, query_attributes=np.zeros((3, 2)), gallery_attributes=np.ones((10, 2))), "no attribute"),
        (lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, no_relevant="drop"), "no_relevant must be one of"),
    ]
    for fn, message in cases:
        with pytest.raises((ValueError, TypeError)) as err:
            fn()
        assert message in str(err.value), (message, str(err.value))


def test_a_cbir_search_searcher_gives_the_exact_report():
    from cbir.search import Searcher
    rng = np.random.default_rng(11)
    gallery, queries = rng.normal(size=(100, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    g_labels, q_labels = rng.integers(0, 4, 100), rng.integers(0, 4, 20)
    searcher = Searcher(None, Index.build(gallery, kind="flat", metric="cosine"))
    via = evaluate(queries, searcher=searcher, query_labels=q_labels, gallery_labels=g_labels, ks=(1, 10))
    exact = evaluate(queries, gallery, query_labels=q_labels, gallery_labels=g_labels, ks=(1, 10))
    assert (via.positions == exact.positions).all()
    assert all(abs(via.metrics[k] - exact.metrics[k]) < TOL for k in exact.metrics)
