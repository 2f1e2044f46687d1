"""Re-ranking in cbir.search checked against loop implementations written straight from the papers' formulas.

References: Chum et al. 2007 (average query expansion), Radenović et al. 2018 (αQE / αDBA),
Zhong et al. 2017, "Re-ranking Person Re-identification with k-reciprocal Encoding" (k-reciprocal re-ranking).
"""
import numpy as np
import pytest

from cbir.search import (augment_database, expand_queries, k_reciprocal_rerank, l2_normalize, nearest_neighbours,
                         pairwise_sq_l2)


def rng_vectors(n, d, seed):
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))


# ---------------------------------------------------------------- query expansion: loop references
def loop_expand(q, gallery, neighbours, alpha):
    "q' = normalise(q + sum_i w_i g_i), w_i = max(q.g_i, 0)**alpha, for one query, in plain Python."
    total = [float(v) for v in q]
    for j in neighbours:
        if j < 0: continue
        g = gallery[j]
        sim = sum(float(a) * float(b) for a, b in zip(q, g))
        w = max(sim, 0.0) ** alpha
        total = [t + w * float(b) for t, b in zip(total, g)]
    norm = sum(t * t for t in total) ** 0.5
    return np.array([t / norm for t in total])


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(3))
def test_expand_queries_matches_loop(alpha, seed):
    rng = np.random.default_rng(seed)
    q, g = rng_vectors(5, 8, seed), rng_vectors(30, 8, seed + 100)
    nb = rng.integers(-1, 30, size=(5, 7))
    out = expand_queries(q, g, nb, alpha=alpha)
    ref = np.stack([loop_expand(q[i], g, nb[i], alpha) for i in range(5)])
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_expand_queries_without_neighbours_is_identity():
    q, g = rng_vectors(4, 6, 0), rng_vectors(10, 6, 1)
    np.testing.assert_allclose(expand_queries(q, g, -np.ones((4, 3), dtype=int)), q, atol=1e-6)
    np.testing.assert_allclose(expand_queries(q, g, np.zeros((4, 0), dtype=int)), q, atol=1e-6)


def loop_nearest(q, g, n, exclude_self):
    out = []
    for i, qi in enumerate(q):
        sims = [(-float(qi @ gj), j) for j, gj in enumerate(g) if not (exclude_self and i == j)]
        out.append([j for _, j in sorted(sims)[:n]])
    return np.array(out)


def test_nearest_neighbours_and_dba_match_loops():
    g = rng_vectors(40, 5, 7)
    nb = nearest_neighbours(g, g, 6, exclude_self=True, chunk=7)   # small chunk: exercises the blocks
    np.testing.assert_array_equal(nb, loop_nearest(g, g, 6, True))
    assert not (nb == np.arange(40)[:, None]).any()
    dba = augment_database(g, n=6, alpha=3.0)
    ref = np.stack([loop_expand(g[i], g, nb[i], 3.0) for i in range(40)])
    np.testing.assert_allclose(dba, ref, atol=1e-5)


def test_nearest_neighbours_n_larger_than_gallery():
    g = rng_vectors(4, 3, 0)
    assert nearest_neighbours(g, g, 10).shape == (4, 4)
    assert nearest_neighbours(g, g, 10, exclude_self=True).shape == (4, 3)


def test_query_expansion_bad_input():
    q, g = rng_vectors(2, 4, 0), rng_vectors(5, 4, 1)
    with pytest.raises(ValueError, match="alpha must be >= 0"): expand_queries(q, g, [[0], [1]], alpha=-1)
    with pytest.raises(ValueError, match="dimension"): nearest_neighbours(q, rng_vectors(5, 3, 1), 2)
    with pytest.raises(ValueError, match="NaN"): expand_queries(np.full((1, 4), np.nan), g, [[0]])


# ---------------------------------------------------------------- k-reciprocal: loop reference from the paper
def loop_k_reciprocal(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. 2017, one definition at a time, with Python sets and loops.

    N(x, k): x and its k nearest items (k+1 in all, as in the authors' code); R(x, k): the y in N(x, k) with x in N(y, k);
    R*(x, k1): R(x, k1) plus R(y, round(k1/2)) for y in R(x, k1) when |R(x,k1) ∩ R(y,k1/2)| >= 2/3 |R(y,k1/2)|;
    V[x, y] = exp(-d(x,y)) normalised over R*(x); V̂x = mean of V over the k2 nearest of x (x included);
    d_J = 1 - Σ min / Σ max; d* = (1-λ) d_J + λ d, d = squared distances with each row divided by its maximum.
    """
    Q, N = q_g.shape
    P = Q + N
    d = np.zeros((P, P))
    for a in range(P):
        for b in range(P):
            if a < Q and b < Q: d[a, b] = q_q[a, b]
            elif a < Q: d[a, b] = q_g[a, b - Q]
            elif b < Q: d[a, b] = q_g[b, a - Q]
            else: d[a, b] = g_g[a - Q, b - Q]
    for a in range(P): d[a] = d[a] / max(d[a].max(), 1e-12)
    order = [list(np.argsort(d[a], kind="stable")) for a in range(P)]

    def near(x, k): return set(order[x][:k + 1])
    def recip(x, k): return {y for y in near(x, k) if x in near(y, k)}

    half = int(np.around(k1 / 2))
    V = np.zeros((P, P))
    for x in range(P):
        r = recip(x, k1)
        star = set(r)
        for y in r:
            ry = recip(y, half)
            if len(r & ry) >= 2 / 3 * len(ry): star |= ry
        total = sum(np.exp(-d[x, y]) for y in star)
        for y in star: V[x, y] = np.exp(-d[x, y]) / total
    Vh = np.zeros((P, P))
    for x in range(P):
        nbrs = order[x][:k2]
        for y in nbrs: Vh[x] += V[y] / len(nbrs)
    out = np.zeros((Q, N))
    for p in range(Q):
        for g in range(N):
            mins = sum(min(Vh[p, j], Vh[Q + g, j]) for j in range(P))
            maxs = sum(max(Vh[p, j], Vh[Q + g, j]) for j in range(P))
            out[p, g] = (1 - lam) * (1 - mins / maxs) + lam * d[p, Q + g]
    return out


def random_case(Q, N, D, seed, clusters=3):
    "Clustered points, so that reciprocal neighbourhoods are non-trivial."
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, D)) * 3
    pts = centres[rng.integers(0, clusters, size=Q + N)] + rng.normal(size=(Q + N, D))
    q, g = pts[:Q], pts[Q:]
    return pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.3), (4, 1, 0.0), (7, 2, 0.5), (3, 4, 1.0), (1, 1, 0.3)])
@pytest.mark.parametrize("seed", range(3))
def test_k_reciprocal_matches_loop(k1, k2, lam, seed):
    q_g, q_q, g_g = random_case(4, 23, 3, seed)
    fast = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_=lam)
    ref = loop_k_reciprocal(q_g, q_q, g_g, k1, k2, lam)
    np.testing.assert_allclose(fast, ref, atol=1e-9)


def test_k_reciprocal_k_larger_than_pool():
    q_g, q_q, g_g = random_case(2, 5, 3, 0)
    np.testing.assert_allclose(k_reciprocal_rerank(q_g, q_q, g_g, k1=20, k2=10),
                               loop_k_reciprocal(q_g, q_q, g_g, 20, 10, 0.3), atol=1e-9)


def test_k_reciprocal_lambda_one_keeps_original_ranking():
    q_g, q_q, g_g = random_case(5, 40, 4, 1)
    out = k_reciprocal_rerank(q_g, q_q, g_g, lambda_=1.0)
    np.testing.assert_array_equal(np.argsort(out, 1), np.argsort(q_g, 1))


def test_k_reciprocal_properties():
    q_g, q_q, g_g = random_case(6, 50, 4, 2)
    out = k_reciprocal_rerank(q_g, q_q, g_g, lambda_=0.0)
    assert out.shape == (6, 50) and (out >= -1e-12).all() and (out <= 1 + 1e-12).all()
    # permuting the gallery permutes the columns of the result and nothing else
    perm = np.random.default_rng(0).permutation(50)
    out_p = k_reciprocal_rerank(q_g[:, perm], q_q, g_g[np.ix_(perm, perm)], lambda_=0.3)
    np.testing.assert_allclose(out_p, k_reciprocal_rerank(q_g, q_q, g_g, lambda_=0.3)[:, perm], atol=1e-12)


def test_k_reciprocal_exact_duplicate_ranks_first():
    """A gallery copy of the query has (almost) the same neighbourhoods, so it stays the top hit.

    Not exactly Jaccard 0: the query and its copy tie in every other item's ranking, so at the k-th place one of
    the two can fall inside N(y, k) and the other outside.
    """
    rng = np.random.default_rng(3)
    g = rng.normal(size=(30, 4))
    q = g[:1].copy()
    for lam in (0.0, 0.3):
        out = k_reciprocal_rerank(pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g), k1=6, k2=1,
                                  lambda_=lam)
        assert out[0].argmin() == 0


def test_k_reciprocal_helps_on_clusters():
    "On well-separated clusters the re-ranked top hits stay in the query's cluster."
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 4
    labels = np.repeat(np.arange(4), 15)
    g = centres[labels] + rng.normal(size=(60, 8))
    q = centres[:4] + rng.normal(size=(4, 8))
    out = k_reciprocal_rerank(pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g), k1=10, k2=3)
    top = np.argsort(out, 1)[:, :10]
    assert (labels[top] == np.arange(4)[:, None]).mean() > 0.95


def test_k_reciprocal_bad_input():
    q_g, q_q, g_g = random_case(2, 5, 3, 0)
    with pytest.raises(ValueError, match="shapes"): k_reciprocal_rerank(q_g, q_q, g_g[:4, :4])
    with pytest.raises(ValueError, match="k1 and k2"): k_reciprocal_rerank(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match="lambda_"): k_reciprocal_rerank(q_g, q_q, g_g, lambda_=1.5)


# ---------------------------------------------------------------- k-reciprocal: per-item loop in the authors' style
def per_item_k_reciprocal(q_g, q_q, g_g, k1=20, k2=6, lam=0.3, strict=True):
    """A second, independent implementation organised like the authors' published one (Zhong et al.,
    person-re-ranking): float32, one item at a time with index arrays, an inverted index for the Jaccard sums, and the
    shortcut sum(max) = 2 - sum(min) for rows that sum to 1. `strict=True` uses `>` in the 2/3 expansion test as their
    code does; `strict=False` the paper's `>=`. Inputs are already squared distances."""
    Q = len(q_g)
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32)
    dist = (dist / dist.max(axis=0)).T                                   # column-wise max; dist is symmetric
    P = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")

    def recip(x, k):
        fwd = rank[x, :k + 1]
        return fwd[(rank[fwd, :k + 1] == x).any(axis=1)]

    half = int(np.around(k1 / 2))
    V = np.zeros((P, P), np.float32)
    for x in range(P):
        base = recip(x, k1)
        members = base
        for y in base:
            ry = recip(y, half)
            shared = len(np.intersect1d(ry, base))
            if shared > 2 / 3 * len(ry) or (not strict and shared >= 2 / 3 * len(ry)):
                members = np.append(members, ry)
        members = np.unique(members)
        w = np.exp(-dist[x, members])
        V[x, members] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[x, :k2]].mean(axis=0) for x in range(P)])
    holders = [np.flatnonzero(V[:, j]) for j in range(P)]                # inverted index: rows with V[:, j] != 0
    out = np.zeros((Q, P), np.float32)
    for p in range(Q):
        mins = np.zeros(P, np.float32)
        for j in np.flatnonzero(V[p]):
            mins[holders[j]] += np.minimum(V[p, j], V[holders[j], j])
        out[p] = 1 - mins / (2 - mins)
    return ((1 - lam) * out + lam * dist[:Q])[:, Q:]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("k1,k2", [(20, 6), (6, 3), (9, 1)])
@pytest.mark.parametrize("seed", range(2))
def test_k_reciprocal_matches_per_item_implementation(k1, k2, seed, strict):
    q_g, q_q, g_g = random_case(6, 60, 4, seed)
    ours = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_=0.3, strict=strict)
    np.testing.assert_allclose(ours, per_item_k_reciprocal(q_g, q_q, g_g, k1, k2, 0.3, strict=strict), atol=2e-5)


def test_strict_and_papers_inequality_differ():
    "Overlaps of exactly 2/3 are common, so `>` (authors' code) and `>=` (paper) give different distances."
    q_g, q_q, g_g = random_case(6, 60, 4, 0)
    paper = k_reciprocal_rerank(q_g, q_q, g_g)
    code = k_reciprocal_rerank(q_g, q_q, g_g, strict=True)
    assert np.abs(paper - code).max() > 1e-3


def test_leading_ranks_equal_a_stable_full_sort_even_with_ties():
    from cbir.search import _leading_ranks
    rng = np.random.default_rng(0)
    for dist in (rng.integers(0, 4, size=(50, 80)).astype(float), rng.normal(size=(50, 80))):
        for m in (1, 2, 7, 21, 79, 80):
            np.testing.assert_array_equal(_leading_ranks(dist, m), np.argsort(dist, axis=1, kind="stable")[:, :m])


def test_k_reciprocal_with_duplicates_matches_loop():
    "Exact duplicates in the pool (tied distances) are ranked by position in both implementations."
    rng = np.random.default_rng(5)
    g = np.repeat(rng.normal(size=(8, 3)), 3, axis=0)                  # every gallery vector three times
    q = g[[0, 7, 14]]
    args = pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g)
    for k1, k2 in ((5, 3), (20, 6)):
        np.testing.assert_allclose(k_reciprocal_rerank(*args, k1=k1, k2=k2), loop_k_reciprocal(*args, k1, k2, 0.3),
                                   atol=1e-9)


def test_any_object_with_a_rerank_method_is_a_reranker():
    "The re-ranker contract: Searcher calls rerank(searcher, vectors, k, excludes, query_images) on any object that has it."
    import numpy as np
    import pytest
    from cbir.index import Index
    from cbir.search import Searcher

    class Reverse:  # a toy re-ranker: the plain top-k, in reverse order
        def rerank(self, searcher, vectors, k, excludes, query_images=None):
            self.seen = (len(vectors), k, excludes, query_images)
            res = searcher.search_embeddings(vectors, k, exclude=excludes, rerank="none")
            res.ids, res.distances, res.positions = res.ids[:, ::-1], res.distances[:, ::-1], res.positions[:, ::-1]
            return res

    rng = np.random.default_rng(0)
    g = rng.normal(size=(20, 8)).astype(np.float32)
    s = Searcher(None, Index.build(g, ids=[f"g{i}" for i in range(20)]))
    reverse = Reverse()
    rev = s.search_embeddings(g[:2], k=4, exclude=["g0", "g1"], rerank=reverse)
    ref = s.search_embeddings(g[:2], k=4, exclude=["g0", "g1"], rerank="none")
    np.testing.assert_array_equal(rev.ids, ref.ids[:, ::-1])
    assert reverse.seen[:2] == (2, 4) and reverse.seen[2] == [{"g0"}, {"g1"}] and reverse.seen[3] is None
    with pytest.raises(ValueError, match="re-ranker object"):
        s.search_embeddings(g[:1], k=2, rerank=object())
