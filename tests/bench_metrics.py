"""Benchmark: every metric of `cbir.metrics.retrieval_metrics` on 10,000 queries x 1,000 ranks.

Compared, in the same run, against
- per-query pure-Python loops, the way a first notebook writes them: one function per metric, from its formula
  (the reference implementations of tests/test_metrics_crosscheck.py);
- the same loops hand-fused: every metric from a single pass over each query (a harder baseline);
- per-query numpy loops (one query at a time, numpy inside the loop);
- ranx (numba, parallel over the cores) on the metrics it shares, inputs prebuilt as ranx's typed lists so only
  its metric computation is timed, after a warm-up call (numba compiles on first use).
All four compute the same values; the script checks they agree before it prints the table.

Run:  .venv/bin/python tests/bench_metrics.py          (prints a table)
      .venv/bin/python -m pytest tests/bench_metrics.py -m slow -q -s
"""
import math
import sys
from pathlib import Path
import time
import warnings

import numpy as np
import pytest

from cbir import metrics as M

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_metrics_crosscheck import ranx_typed_lists, ref_all  # noqa: E402  one plain-loop function per metric

N_QUERIES, N_RANKS, KS = 10_000, 1_000, M.K_SWEEP  # K = 1, 10, 50, 1000


def make_case(n_queries=N_QUERIES, n_ranks=N_RANKS, seed=0):
    "Relevance that thins out down the ranking, R = hits + relevant items never retrieved (every R >= 1)."
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.02, 0.6, (n_queries, 1))
    rel = rng.uniform(size=(n_queries, n_ranks)) < quality * np.exp(-np.arange(n_ranks) / 150)
    n_relevant = rel.sum(1) + rng.integers(1, 30, n_queries)
    return rel, n_relevant


def notebook_loop_metrics(rows, n_relevant, ks=KS):
    "Per-query Python loops, the way a first notebook writes them: one plain-loop function per metric."
    per_query = [ref_all(row, R, ks) for row, R in zip(rows, n_relevant)]
    return {name: sum(q[name] for q in per_query) / len(rows) for name in per_query[0]}


def fused_loop_metrics(rows, n_relevant, ks=KS):
    "Per-query Python loops, hand-fused: every metric from one pass over each query's list of 0/1."
    totals = {}
    add = lambda name, v: totals.__setitem__(name, totals.get(name, 0.0) + v)
    for row, R in zip(rows, n_relevant):
        for k in ks:
            top = row[:k]
            hits = sum(top)
            p, r = hits / k, hits / R
            add(f"P@{k}", p), add(f"R@{k}", r), add(f"HR@{k}", 1.0 if hits else 0.0)
            add(f"F1@{k}", 2 * p * r / (p + r) if hits else 0.0)
            found, ap, dcg = 0, 0.0, 0.0
            for i, x in enumerate(top):
                if x:
                    found += 1
                    ap += found / (i + 1)
                    dcg += 1 / math.log2(i + 2)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, R)))
            add(f"mAP@{k}", ap / R), add(f"nDCG@{k}", dcg / idcg)
        found, ap, rr, ap_r = 0, 0.0, 0.0, 0.0
        for i, x in enumerate(row):
            if x:
                found += 1
                ap += found / (i + 1)
                rr = rr or 1 / (i + 1)
                if i < R:
                    ap_r += found / (i + 1)
        add("mAP", ap / R), add("MRR", rr), add("R-precision", sum(row[:R]) / R), add("MAP@R", ap_r / R)
    return {name: v / len(rows) for name, v in totals.items()}


def numpy_loop_metrics(rel, n_relevant, ks=KS):
    "Per-query loops with numpy inside: the next thing a first notebook tries."
    totals = {}
    add = lambda name, v: totals.__setitem__(name, totals.get(name, 0.0) + v)
    discounts = 1 / np.log2(np.arange(2, rel.shape[1] + 2))
    for row, R in zip(rel, n_relevant):
        cum = np.cumsum(row)
        prec = cum / np.arange(1, len(row) + 1)
        for k in ks:
            hits = cum[k - 1]
            p, r = hits / k, hits / R
            add(f"P@{k}", p), add(f"R@{k}", r), add(f"HR@{k}", float(hits > 0))
            add(f"F1@{k}", 2 * p * r / (p + r) if hits else 0.0)
            add(f"mAP@{k}", (prec[:k] * row[:k]).sum() / R)
            add(f"nDCG@{k}", (row[:k] * discounts[:k]).sum() / discounts[:min(k, R)].sum())
        hit_at = np.flatnonzero(row)
        add("mAP", prec[hit_at].sum() / R), add("MRR", 1 / (hit_at[0] + 1) if len(hit_at) else 0.0)
        add("R-precision", cum[min(R, len(row)) - 1] / R), add("MAP@R", (prec[:R] * row[:R]).sum() / R)
    return {name: v / len(rel) for name, v in totals.items()}


RANX_NAMES = {"P": "precision", "R": "recall", "HR": "hit_rate", "F1": "f1", "mAP": "map", "nDCG": "ndcg"}


def ranx_metric_names(ks=KS):
    names = {f"{short}@{k}": f"{long}@{k}" for k in ks for short, long in RANX_NAMES.items()}
    return {**names, "mAP": "map", "MRR": "mrr", "R-precision": "r-precision"}  # ranx has no MAP@R


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def run_benchmark(n_queries=N_QUERIES, n_ranks=N_RANKS, with_ranx=True, echo=print):
    rel, n_relevant = make_case(n_queries, n_ranks)
    rows, n_list = rel.astype(np.int8).tolist(), n_relevant.tolist()  # conversion not timed
    t_ours, ours = best_of(lambda: M.retrieval_metrics(rel, n_relevant, ks=KS), 5)
    t_loop, loop = best_of(lambda: notebook_loop_metrics(rows, n_list), 1)
    t_fused, fused = best_of(lambda: fused_loop_metrics(rows, n_list), 1)
    t_nploop, nploop = best_of(lambda: numpy_loop_metrics(rel, n_relevant), 1)
    for name in ours:
        assert max(abs(ours[name] - other[name]) for other in (loop, fused, nploop)) < 1e-12, name
    result = {"ours": t_ours, "python loops": t_loop, "fused py loops": t_fused, "numpy loops": t_nploop}
    if with_ranx:
        import ranx
        qrels, run = ranx_typed_lists(rel, n_relevant)
        names = ranx_metric_names()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranx.evaluate(qrels, run, list(names.values()))  # warm-up: numba compiles / loads its cache
            t_ranx, theirs = best_of(lambda: ranx.evaluate(qrels, run, list(names.values())), 3)
            t_ours_shared, _ = best_of(lambda: M.retrieval_metrics(rel, n_relevant, ks=KS), 5)
        for ours_name, ranx_name in names.items():
            assert abs(ours[ours_name] - theirs[ranx_name]) < 1e-12, (ours_name, ranx_name)
        result["ranx"] = t_ranx
    echo(f"{n_queries:,} queries x {n_ranks:,} ranks, {len(ours)} metrics (K = {', '.join(map(str, KS))}); "
         f"all implementations agree to 1e-12")
    echo(f"{'implementation':<16}{'seconds':>10}{'ours is x faster':>18}")
    for name, secs in result.items():
        echo(f"{name:<16}{secs:>10.3f}{secs / t_ours:>18.1f}")
    if with_ranx:
        echo(f"(ranx computes {len(names)} of the {len(ours)} metrics, with numba on all cores; "
             f"ours single-threaded numpy)")
    return result


@pytest.mark.slow
def test_benchmark_speed_ratios():
    result = run_benchmark(echo=lambda s: print(s, file=sys.stderr))
    assert result["python loops"] / result["ours"] >= 50
    assert result["ours"] <= result["ranx"]


if __name__ == "__main__":
    run_benchmark()
