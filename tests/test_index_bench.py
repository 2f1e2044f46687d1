"""Benchmarks of cbir.index (slow, run with `pytest -m slow`), plus a fast check of the numpy baseline they use."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_index import numpy_topk_l2, run  # noqa: E402

from cbir.index import Index, make_clustered_vectors, ann_recall_at_k  # noqa: E402


def test_numpy_baseline_matches_exact_index():
    x = make_clustered_vectors(2100, 24, seed=3)[0]
    base, queries = x[:2000], x[2000:]
    ours, faiss_ids = numpy_topk_l2(base, queries, 10), Index.build(base, kind="flat", metric="l2").search(queries, 10).ids
    assert ann_recall_at_k(ours, faiss_ids) > 0.995  # float32 near-ties may swap a neighbour at rank 10
    assert (ours[:, 0] == faiss_ids[:, 0]).mean() > 0.99


@pytest.mark.slow
def test_bench_small(tmp_path):
    s = run("small", png=str(tmp_path / "small.png"), log=lambda *_: None)
    assert s["agree"] > 0.99 and (tmp_path / "small.png").stat().st_size > 0
    assert s["best"]["recall"] >= 0.95 and s["best"]["speedup"] > 1


@pytest.mark.slow
def test_bench_1m(tmp_path):
    s = run("1m", png=str(tmp_path / "1m.png"), log=print)
    assert s["exact_vs_numpy"] >= 1.0  # exact FAISS at least as fast as numpy, same run
    assert s["best"]["recall"] >= 0.95 and s["best"]["speedup"] >= 10
    assert s["best_pq"]["recall"] >= 0.8 and s["best_pq"]["flat_ratio"] >= 16
