"""Cross-checks for `cbir.metrics`.

1. Independent brute-force reference implementations: plain Python loops written from the formulas in
   nbs/04_metrics.ipynb, one query at a time (no numpy in the metric code). The vectorised functions must agree
   with them to 1e-12 on thousands of random cases, including ties, K > gallery, R = 0, R = 1 and all relevant.
2. Established libraries, conventions mapped explicitly:
   - ranx (trec_eval conventions): precision@k, recall@k, hit_rate@k, f1@k, mrr, mrr@k, map, map@k, ndcg@k,
     ndcg_burges@k, r-precision. ranx's `map@k` divides by R (our default `divide_by="r"`); its precision@k
     divides by k even when fewer than k results exist; its ndcg builds the ideal ranking from all qrels.
   - scikit-learn: `ndcg_score` (linear gain, ideal from all of y_true) and `average_precision_score` (AP over
     the whole gallery, R = number of positives).
   Both libraries order tied scores their own way, so cross-checked runs use distinct scores.
"""
import math
import warnings

import numpy as np
import pytest

from cbir import metrics as M

TOL = 1e-12


# ---------------------------------------------------------------------------------------------------------
# reference implementations: plain loops, one query (a Python list of 0/1 or gains) at a time
# ---------------------------------------------------------------------------------------------------------
def ref_hits(row, k):
    return sum(1 for r in row[:k] if r)


def ref_precision(row, k, R=None, divide_by="k"):
    hits = ref_hits(row, k)
    if divide_by == "k":
        return hits / k
    d = min(k, R)
    return hits / d if d else 0.0


def ref_recall(row, R, k):
    return ref_hits(row, k) / R if R else 0.0


def ref_hit_rate(row, k):
    return 1.0 if ref_hits(row, k) > 0 else 0.0


def ref_f1(row, R, k):
    p, r = ref_precision(row, k), ref_recall(row, R, k)
    return 2 * p * r / (p + r) if p + r else 0.0


def ref_rr(row, k=None):
    k = len(row) if k is None else k
    for i, r in enumerate(row):
        if i >= k:
            break
        if r:
            return 1.0 / (i + 1)
    return 0.0


def ref_ap(row, R, k=None, divide_by="r"):
    k = len(row) if k is None else k
    hits, total = 0, 0.0
    for i, r in enumerate(row):
        if i >= k:
            break
        if r:
            hits += 1
            total += hits / (i + 1)  # precision at this rank
    d = {"r": R, "min_k_r": min(k, R), "hits": hits}[divide_by]
    return total / d if d else 0.0


def ref_r_precision(row, R):
    return ref_hits(row, R) / R if R else 0.0


def ref_map_at_r(row, R):
    return ref_ap(row, R, k=R, divide_by="r") if R else 0.0


def ref_dcg(gains, k, exp=False):
    total = 0.0
    for i, g in enumerate(gains):
        if i >= k:
            break
        total += ((2 ** g - 1) if exp else g) / math.log2(i + 2)
    return total


def ref_ndcg(gains, ideal, k, exp=False):
    idcg = ref_dcg(sorted(ideal, reverse=True), k, exp)
    return ref_dcg(gains, k, exp) / idcg if idcg > 0 else 0.0


def ref_all(row, R, ks):
    "Every metric of `retrieval_metrics`, for one query, from the reference loops."
    out = {}
    for k in ks:
        out[f"P@{k}"], out[f"R@{k}"] = ref_precision(row, k), ref_recall(row, R, k)
        out[f"HR@{k}"], out[f"F1@{k}"] = ref_hit_rate(row, k), ref_f1(row, R, k)
        out[f"mAP@{k}"], out[f"nDCG@{k}"] = ref_ap(row, R, k), ref_ndcg(row, [1] * R, k)
    out["mAP"], out["MRR"] = ref_ap(row, R), ref_rr(row)
    out["R-precision"], out["MAP@R"] = ref_r_precision(row, R), ref_map_at_r(row, R)
    return out


# ---------------------------------------------------------------------------------------------------------
# random cases
# ---------------------------------------------------------------------------------------------------------
def random_case(rng, n_queries, width):
    "A (Q, W) binary matrix with varied densities and R >= hits, plus edge rows: R=0, R=1, all relevant."
    density = rng.uniform(0, 1, size=(n_queries, 1)) ** 2
    rel = rng.uniform(size=(n_queries, width)) < density
    n_relevant = rel.sum(1) + rng.integers(0, 4, n_queries) * (rng.uniform(size=n_queries) < 0.6)
    edge = rng.integers(0, 6, n_queries)
    rel[edge == 0] = False
    n_relevant[edge == 0] = 0  # R = 0
    rel[edge == 1] = False
    rel[edge == 1, rng.integers(0, width)] = True
    n_relevant[edge == 1] = 1  # R = 1, found
    rel[edge == 2] = True
    n_relevant[edge == 2] = width  # all relevant
    return rel, n_relevant


CASES = [(300, 1), (600, 3), (800, 10), (500, 57)]  # 2,200 random queries with gallery sizes 1..57
KS = (1, 2, 5, 10, 60)  # 10 and 60 go beyond the small galleries


@pytest.mark.parametrize("n_queries,width", CASES)
def test_per_query_functions_match_reference_loops(n_queries, width):
    rng = np.random.default_rng(width)
    rel, n_rel = random_case(rng, n_queries, width)
    rows, Rs = rel.astype(int).tolist(), n_rel.tolist()
    check = lambda got, ref: np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    for k in KS:
        check(M.precision_at_k(rel, k), [ref_precision(r, k) for r in rows])
        check(M.precision_at_k(rel, k, n_rel, divide_by="min_k_r"), [ref_precision(r, k, R, "min_k_r") for r, R in zip(rows, Rs)])
        check(M.recall_at_k(rel, n_rel, k), [ref_recall(r, R, k) for r, R in zip(rows, Rs)])
        check(M.hit_rate_at_k(rel, k), [ref_hit_rate(r, k) for r in rows])
        check(M.f1_at_k(rel, n_rel, k), [ref_f1(r, R, k) for r, R in zip(rows, Rs)])
        check(M.reciprocal_rank(rel, k), [ref_rr(r, k) for r in rows])
        for d in ("r", "min_k_r", "hits"):
            check(M.average_precision(rel, n_rel, k, divide_by=d), [ref_ap(r, R, k, d) for r, R in zip(rows, Rs)])
        check(M.ndcg_at_k(rel, k, n_rel), [ref_ndcg(r, [1] * R, k) for r, R in zip(rows, Rs)])
    check(M.reciprocal_rank(rel), [ref_rr(r) for r in rows])
    check(M.average_precision(rel, n_rel), [ref_ap(r, R) for r, R in zip(rows, Rs)])
    check(M.r_precision(rel, n_rel), [ref_r_precision(r, R) for r, R in zip(rows, Rs)])
    check(M.map_at_r(rel, n_rel), [ref_map_at_r(r, R) for r, R in zip(rows, Rs)])


@pytest.mark.parametrize("n_queries,width", CASES)
def test_retrieval_metrics_match_reference_loops(n_queries, width):
    rng = np.random.default_rng(100 + width)
    rel, n_rel = random_case(rng, n_queries, width)
    ks = M.cap_ks(M.K_SWEEP + (5,), width)
    per_query = M.per_query_metrics(rel, n_rel, ks=M.K_SWEEP + (5,))
    refs = [ref_all(r, R, ks) for r, R in zip(rel.astype(int).tolist(), n_rel.tolist())]
    assert set(per_query) == set(refs[0])
    for name, values in per_query.items():
        np.testing.assert_allclose(values, [ref[name] for ref in refs], rtol=0, atol=TOL, err_msg=name)
    keep = n_rel > 0
    for policy, mask in (("skip", keep), ("zero", np.ones_like(keep))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.NoRelevantWarning)
            means = M.retrieval_metrics(rel, n_rel, ks=M.K_SWEEP + (5,), no_relevant=policy)
        for name, value in means.items():
            ref_mean = sum(ref[name] for ref, m in zip(refs, mask) if m) / mask.sum()
            assert abs(value - ref_mean) < TOL, (policy, name)


def test_micro_average_matches_reference_loops():
    rng = np.random.default_rng(7)
    rel, n_rel = random_case(rng, 500, 20)
    rel, n_rel = rel[n_rel > 0], n_rel[n_rel > 0]
    micro = M.retrieval_metrics(rel, n_rel, ks=(1, 5, 20), average="micro")
    rows, Rs = rel.astype(int).tolist(), n_rel.tolist()
    for k in (1, 5, 20):
        hits = sum(ref_hits(r, k) for r in rows)
        p, r = hits / (k * len(rows)), hits / sum(Rs)
        assert abs(micro[f"P@{k}"] - p) < TOL and abs(micro[f"R@{k}"] - r) < TOL
        assert abs(micro[f"F1@{k}"] - 2 * p * r / (p + r)) < TOL
        assert abs(micro[f"HR@{k}"] - sum(ref_hit_rate(x, k) for x in rows) / len(rows)) < TOL


def test_graded_ndcg_matches_reference_loops():
    rng = np.random.default_rng(3)
    for _ in range(400):
        n_gallery = int(rng.integers(1, 30))
        grades = rng.integers(0, 4, n_gallery).astype(float) * (rng.uniform(size=n_gallery) < 0.5)
        ranking = rng.permutation(n_gallery)[: int(rng.integers(1, n_gallery + 1))]
        gains, ideal = grades[ranking][None], grades[None]
        for k in (1, 3, 10, 40):
            for gain in ("linear", "exp"):
                got = M.ndcg_at_k(gains, k, ideal_gains=ideal, gain=gain)[0]
                want = ref_ndcg(gains[0].tolist(), grades.tolist(), k, exp=gain == "exp")
                assert abs(got - want) < TOL


def test_ties_are_broken_by_gallery_order():
    "rank_by_score on heavily tied integer scores == Python's stable `sorted`; metrics on it match the loops."
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 4, size=(1000, 25)).astype(float)  # many ties
    labels = rng.integers(0, 3, 25)
    query_labels = rng.integers(0, 3, 1000)
    order = M.rank_by_score(scores)
    distance_order = M.rank_by_score(-scores, higher_is_better=False)
    for q in range(len(scores)):
        ref_order = sorted(range(25), key=lambda j: -scores[q, j])  # sorted() is stable
        assert order[q].tolist() == ref_order and distance_order[q].tolist() == ref_order
    rel = M.relevance_from_labels(query_labels, labels[order])
    n_rel = (labels[None] == query_labels[:, None]).sum(1)
    ap = M.average_precision(rel, n_rel)
    for q in range(len(scores)):
        row = [int(labels[j] == query_labels[q]) for j in sorted(range(25), key=lambda j: -scores[q, j])]
        assert abs(ap[q] - ref_ap(row, int(n_rel[q]))) < TOL


def test_relevance_from_ids_matches_labels():
    rng = np.random.default_rng(5)
    gallery_ids = np.array([f"img{i}" for i in range(40)])
    labels = rng.integers(0, 5, 40)
    q_labels = rng.integers(0, 5, 30)
    ranked = np.stack([rng.permutation(40)[:15] for _ in range(30)])
    rel_ids, n_ids = M.relevance_from_ids(gallery_ids[ranked], [set(gallery_ids[labels == c]) for c in q_labels], gallery_ids)
    np.testing.assert_array_equal(rel_ids, M.relevance_from_labels(q_labels, labels[ranked]))
    np.testing.assert_array_equal(n_ids, [(labels == c).sum() for c in q_labels])
    # graded: dict {id: grade}; ids of grade 0 are not relevant
    gains, n_graded = M.relevance_from_ids([["a", "b", "c"]], [{"a": 2, "c": 0, "d": 1}])
    np.testing.assert_array_equal(gains, [[2.0, 0.0, 0.0]])
    assert n_graded.tolist() == [2]


def test_graded_ids_ndcg_matches_reference_loops():
    rng = np.random.default_rng(9)
    gallery = [f"g{i}" for i in range(25)]
    graded = [{g: int(rng.integers(1, 4)) for g in rng.choice(gallery, int(rng.integers(0, 8)), replace=False)}
              for _ in range(300)]
    ranked = [list(rng.permutation(gallery)[: int(rng.integers(1, 26))]) for _ in range(300)]
    gains, n_rel = M.relevance_from_ids(ranked, graded, gallery)
    ideal = M.relevant_grades(graded)
    assert n_rel.tolist() == [len(g) for g in graded]
    for k in (1, 5, 30):
        want = [ref_ndcg([g.get(i, 0) for i in r], list(g.values()), k) for r, g in zip(ranked, graded)]
        np.testing.assert_allclose(M.ndcg_at_k(gains, k, ideal_gains=ideal), want, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------------------
# established libraries
# ---------------------------------------------------------------------------------------------------------
def ranx_typed_lists(rel, n_relevant, grades=None):
    """ranx's own input form (numba typed lists, one (doc id, score) array per query, best first).

    Ranked doc i of a query has id i and score W - i (distinct: ranx's tie order is its own); relevant docs never
    retrieved get fresh ids W, W+1, ...; `grades` (Q, W+extra) optionally gives graded qrels.
    """
    from numba.typed import List
    from ranx.utils import descending_sort_parallel
    width = rel.shape[1]
    ranked = np.stack([np.arange(width, dtype=np.float64), np.arange(width, 0, -1, dtype=np.float64)], 1)
    run, qrels = List([ranked.copy() for _ in range(len(rel))]), List()
    for q, (row, R) in enumerate(zip(rel, n_relevant)):
        ids = np.concatenate([np.flatnonzero(row), width + np.arange(R - row.sum())]).astype(np.float64)
        judged = np.ones_like(ids) if grades is None else grades[q][ids.astype(int)].astype(np.float64)
        qrels.append(np.stack([ids, judged], 1))
    return descending_sort_parallel(qrels), descending_sort_parallel(run)


def test_agrees_with_ranx():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(21)
    rel, n_rel = random_case(rng, 400, 30)
    keep = n_rel > 0  # ranx needs at least one relevant document per query in its qrels
    rel, n_rel = rel[keep], n_rel[keep]
    # ours <-> ranx, conventions mapped: every one of these is ranx's trec_eval-style definition
    ours = {
        "precision@5": M.precision_at_k(rel, 5), "precision@50": M.precision_at_k(rel, 50),
        "recall@5": M.recall_at_k(rel, n_rel, 5), "hit_rate@3": M.hit_rate_at_k(rel, 3),
        "f1@10": M.f1_at_k(rel, n_rel, 10), "mrr": M.reciprocal_rank(rel), "mrr@3": M.reciprocal_rank(rel, 3),
        "map": M.average_precision(rel, n_rel), "map@10": M.average_precision(rel, n_rel, 10, divide_by="r"),
        "ndcg@10": M.ndcg_at_k(rel, 10, n_rel), "r-precision": M.r_precision(rel, n_rel),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ranx.evaluate(*ranx_typed_lists(rel, n_rel), list(ours), return_mean=False)
    for name, values in ours.items():
        np.testing.assert_allclose(values, theirs[name], rtol=0, atol=TOL, err_msg=name)


def test_graded_ndcg_agrees_with_ranx():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(22)
    grades = rng.integers(0, 4, (200, 20)) * (rng.uniform(size=(200, 20)) < 0.5)
    grades[:, 0] = 3  # at least one relevant item per query
    order = np.stack([rng.permutation(20) for _ in range(200)])  # each query's ranking of the 20 items
    ranked = np.take_along_axis(grades, order, 1)[:, :12].astype(float)  # the top 12 are retrieved
    unretrieved = np.take_along_axis(grades, order, 1)[:, 12:]
    rel, n_rel = ranked > 0, (grades > 0).sum(1)
    qrels_grades = np.concatenate([ranked, -np.sort(-unretrieved, 1)], 1)  # the missed relevant ones, best first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ranx.evaluate(*ranx_typed_lists(rel, n_rel, qrels_grades), ["ndcg@5", "ndcg_burges@10"], return_mean=False)
    np.testing.assert_allclose(M.ndcg_at_k(ranked, 5, ideal_gains=grades), theirs["ndcg@5"], rtol=0, atol=TOL)
    np.testing.assert_allclose(M.ndcg_at_k(ranked, 10, ideal_gains=grades, gain="exp"), theirs["ndcg_burges@10"], rtol=0, atol=TOL)


def test_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(23)
    n_queries, n_gallery = 300, 40
    grades = rng.integers(0, 4, (n_queries, n_gallery)) * (rng.uniform(size=(n_queries, n_gallery)) < 0.3)
    grades[:, 0] = np.maximum(grades[:, 0], 1)  # every query has a relevant item
    scores = rng.permutation(n_queries * n_gallery).reshape(n_queries, n_gallery).astype(float)  # distinct
    order = M.rank_by_score(scores)
    ranked_grades = np.take_along_axis(grades, order, 1).astype(float)
    for k in (1, 5, 10, 40):  # nDCG: linear gain, ideal from every item of y_true
        ours = M.ndcg_at_k(ranked_grades, k, ideal_gains=grades)
        theirs = [metrics.ndcg_score(grades[q:q + 1], scores[q:q + 1], k=k) for q in range(n_queries)]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
    binary = grades > 0  # AP over the whole gallery, R = number of positives
    ours = M.average_precision(np.take_along_axis(binary, order, 1), binary.sum(1))
    theirs = [metrics.average_precision_score(binary[q], scores[q]) for q in range(n_queries)]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


def ref_interpolated_precision(row, R, levels):
    "Best precision at any rank whose recall reaches the level (0 if no rank does)."
    points, hits = [], 0
    for i, r in enumerate(row):
        if r:
            hits += 1
            points.append((hits / R, hits / (i + 1)))
    return [max([p for rec, p in points if rec >= level - 1e-12], default=0.0) if R else 0.0 for level in levels]


@pytest.mark.parametrize("n_queries,width", CASES)
def test_interpolated_precision_matches_reference_loops(n_queries, width):
    rng = np.random.default_rng(200 + width)
    rel, n_rel = random_case(rng, n_queries, width)
    levels = np.r_[np.linspace(0, 1, 11), rng.uniform(size=5), 1 / 3, 2 / 3]
    got = M.interpolated_precision(rel, n_rel, levels)
    want = [ref_interpolated_precision(r, R, levels) for r, R in zip(rel.astype(int).tolist(), n_rel.tolist())]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
