"""Leave-one-out ranking of N embeddings (`class_retrieval`, which every training epoch runs on its validation set):
`rank_gallery` against the plain way, one stable sort of every row by (score, gallery position).

`rank_gallery` re-sorts only the rows a searcher returned out of that order. An exact index returns rows sorted by
score, so only ties can be out of order: with distinct vectors (the usual case) no row is re-sorted; with exact
duplicates in the gallery every query's row holds a tie, and the cost is that of the plain way (the worst case).

Run as a script: `python tests/bench_rank.py [--n 2000] [--dim 128] [--rounds 5]`, or as a slow test:
`pytest -m slow tests/bench_rank.py`. Both rankings are checked to be identical; times are the best of interleaved
rounds, and the ratio is what to read (the machines are shared).
"""
import argparse
import time

import numpy as np
import pytest

from cbir.evaluate import rank_gallery
from cbir.index import Index
from cbir.train import class_retrieval


def sort_every_row(queries, gallery):
    "The baseline: FAISS's ranking of the whole gallery, then a stable sort of every row by (closer first, position)."
    res = Index.build(gallery, kind="flat", metric="cosine").search(queries, k=len(gallery))
    order = np.lexsort((res.positions, -res.distances), axis=-1)
    return np.take_along_axis(res.positions, order, 1), np.take_along_axis(res.distances, order, 1)


def run(n=2000, dim=128, classes=100, rounds=5, duplicates=False) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    v = (rng.standard_normal((classes, dim))[labels] + rng.standard_normal((n, dim))).astype(np.float32)
    if duplicates: v[1:4], labels[1:4] = v[0], labels[0]  # exact duplicates: ties in every row, to break by position
    ours, base, full = [], [], []
    for _ in range(rounds):
        t = time.perf_counter(); got = rank_gallery(v, v, metric="cosine"); ours.append(time.perf_counter() - t)
        t = time.perf_counter(); want = sort_every_row(v, v); base.append(time.perf_counter() - t)
        t = time.perf_counter(); class_retrieval(v, labels); full.append(time.perf_counter() - t)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), "rank_gallery and the baseline disagree"
    return dict(n=n, dim=dim, duplicates=duplicates, rank_gallery_s=min(ours), sort_every_row_s=min(base), ratio=min(base) / min(ours),
                class_retrieval_s=min(full))


@pytest.mark.slow
def test_rank_gallery_is_faster_than_sorting_every_row():
    usual, worst = run(), run(duplicates=True)
    print(usual, worst, sep="\n")
    assert usual["ratio"] > 1.5 and worst["ratio"] > 0.7, (usual, worst)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    for dup in (False, True):
        r = run(a.n, a.dim, rounds=a.rounds, duplicates=dup)
        print(f"leave-one-out ranking of {r['n']} x {r['dim']}{', with duplicates' if dup else ''}: rank_gallery "
              f"{r['rank_gallery_s']:.3f} s, sort every row {r['sort_every_row_s']:.3f} s (ratio {r['ratio']:.1f}); "
              f"class_retrieval {r['class_retrieval_s']:.3f} s")
