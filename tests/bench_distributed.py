"""Distributed embedding: 2 local Ray workers against 1 process on the same 512 images.

Run as a script: `python tests/bench_distributed.py [--n 512] [--workers 2]` or as a slow test:
`pytest -m slow tests/bench_distributed.py`.

Same run, same JPEG files as tests/bench_embed.py (generated, 256 px), ResNet-18 random init at 224 px, fp32, batch 32:
- one process: `Embedder.embed(folder)` with all the machine's threads;
- Ray: `embed_distributed(..., workers=2)` on a local Ray started beforehand (its start-up is reported apart), shards
  of 64 images, each worker with cpus/2 threads; the first (cold) job includes starting the actors, the second
  (resume=False) is measured again to separate actor start-up from steady work.
On 2 cores expect ≈ 1× or less: both workers share the same two cores the single process already uses, and Ray
adds process start-up, pickling the model to each actor and writing shards.
"""
import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench_embed import make_embedder, write_jpegs


def run(n=512, workers=2, batch_size=32, shard_size=64):
    import ray
    from cbir.distributed import embed_distributed
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(d) / "images"; write_jpegs(folder, n=n)
        emb = make_embedder(precision="fp32")
        emb.embed(folder, batch_size=batch_size, progress=False)  # warm-up
        t = time.perf_counter(); single = emb.embed(folder, batch_size=batch_size, progress=False); one = time.perf_counter() - t
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        start = time.perf_counter() - t
        t = time.perf_counter(); a = embed_distributed(emb, folder, Path(d) / "s", workers, shard_size, batch_size); cold = time.perf_counter() - t
        t = time.perf_counter(); embed_distributed(emb, folder, Path(d) / "s", workers, shard_size, batch_size, resume=False); warm = time.perf_counter() - t
        ray.shutdown()
    same = np.array_equal(a.vectors, single.vectors)
    print(f"{n} images, ResNet-18 224 px fp32, batch {batch_size}, {os.cpu_count()} cpus")
    print(f"{'run':34s} {'seconds':>8s} {'img/s':>8s} {'vs 1 process':>13s}")
    print(f"{'1 process':34s} {one:8.1f} {n / one:8.1f} {1:13.2f}")
    print(f"{f'Ray, {workers} workers, 1st job (cold)':34s} {cold:8.1f} {n / cold:8.1f} {one / cold:13.2f}")
    print(f"{f'Ray, {workers} workers, 2nd job':34s} {warm:8.1f} {n / warm:8.1f} {one / warm:13.2f}")
    print(f"ray.init: {start:.1f}s (once per session); identical vectors: {same}")
    return dict(one=one, cold=cold, warm=warm, start=start, same=same)


@pytest.mark.slow
def test_distributed_bench():
    pytest.importorskip("ray")
    assert run(n=128)["same"]


if __name__ == "__main__":
    p = argparse.ArgumentParser(); p.add_argument("--n", type=int, default=512); p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(); run(a.n, a.workers)
