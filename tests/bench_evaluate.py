"""Streaming `evaluate` at 10,000 queries x 100,000 gallery items: seconds and peak memory.

Run as a script: `python tests/bench_evaluate.py [--queries 10000] [--gallery 100000] [--dim 128] [--classes 1000]`
or as a slow test: `pytest -m slow tests/bench_evaluate.py`.

Each measurement runs in a fresh subprocess so its peak resident memory (ru_maxrss, everything included: Python,
numpy, torch imported by cbir, the data) is its own. Rows:
- streamed, full size: the issue's target (2 GB, about a minute on 2 cores);
- dense and streamed at a size the dense path can hold (--dense-queries x --dense-gallery), same data, with the
  largest metric difference between them.
"""
import argparse
import json
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np
from cbir.evaluate import evaluate
nq, ng, dim, classes, stream = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
rng = np.random.default_rng(0)
centres = rng.standard_normal((classes, dim), dtype=np.float32)
gl, ql = rng.integers(0, classes, ng), rng.integers(0, classes, nq)
g = centres[gl] + 1.2 * rng.standard_normal((ng, dim), dtype=np.float32)
q = centres[ql] + 1.2 * rng.standard_normal((nq, dim), dtype=np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    r = evaluate(q, g, query_labels=ql, gallery_labels=gl, stream=stream)
s = time.perf_counter() - t
print(json.dumps(dict(seconds=s, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      before_mb=base / 1024, metrics=r.metrics)))
"""


def measure(nq, ng, dim, classes, stream):
    out = subprocess.run([sys.executable, "-c", CHILD, str(nq), str(ng), str(dim), str(classes), "1" if stream else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(queries=10_000, gallery=100_000, dim=128, classes=1000, dense_queries=2_000, dense_gallery=20_000):
    rows = [("streamed", queries, gallery, measure(queries, gallery, dim, classes, True))]
    d = measure(dense_queries, dense_gallery, dim, classes, False)
    s = measure(dense_queries, dense_gallery, dim, classes, True)
    rows += [("dense", dense_queries, dense_gallery, d), ("streamed", dense_queries, dense_gallery, s)]
    diff = max(abs(d["metrics"][k] - s["metrics"][k]) for k in d["metrics"])
    print(f"{'path':9s} {'queries':>8s} {'gallery':>8s} {'seconds':>8s} {'peak RSS MB':>12s} {'(before evaluate)':>18s}  mAP")
    for name, nq, ng, m in rows:
        print(f"{name:9s} {nq:8,d} {ng:8,d} {m['seconds']:8.1f} {m['peak_mb']:12,.0f} {m['before_mb']:18,.0f}  {m['metrics']['mAP']:.4f}")
    print(f"largest metric difference dense vs streamed at {dense_queries:,} x {dense_gallery:,}: {diff:.2e}")
    return rows, diff


@pytest.mark.slow
def test_streaming_evaluate_at_scale():
    rows, diff = run()
    full = rows[0][3]
    assert full["peak_mb"] < 2048 and diff < 1e-4


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=10_000); p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128); p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--dense-queries", type=int, default=2_000); p.add_argument("--dense-gallery", type=int, default=20_000)
    a = p.parse_args()
    run(a.queries, a.gallery, a.dim, a.classes, a.dense_queries, a.dense_gallery)
