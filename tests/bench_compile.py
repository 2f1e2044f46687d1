"""`Embedder(compile=True)` against the eager pipeline and the naive loop: steady-state speed, compile cost, break-even.

Run as a script: `python tests/bench_compile.py [--n 512] [--batch-size 32] [--rounds 3]`
or as a slow test: `pytest -m slow tests/bench_compile.py`.

Same run, same 512 JPEG files and ResNet-18 (random init, 224 px, GeM, fp32) as tests/bench_embed.py:
- naive loop: one image at a time, fp32, no_grad;
- eager pipeline: `Embedder.embed(folder)`;
- compiled pipeline: the same with `compile=True`, measured after its first (compiling) pass, on an empty inductor
  cache (TORCHINDUCTOR_CACHE_DIR set to a fresh folder, as on a fresh machine);
- compile seconds: the first batch's extra time, from `Embedder.compile_seconds`;
- break-even: images after which compiling has paid for itself = compile seconds / (1/eager − 1/compiled);
- top-10 overlap of the compiled and eager vectors (retrieval unchanged means 1.0).
Rounds are interleaved (eager, compiled, naive, ...) so machine load hits all alike; medians are reported.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))  # before torch compiles anything

import torch  # noqa: E402
from bench_embed import make_embedder, naive_loop, pipeline, write_jpegs  # noqa: E402
from cbir.embed import topk_overlap  # noqa: E402


def run(n=512, batch_size=32, rounds=3):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        paths = write_jpegs(folder, n=n)
        torch.manual_seed(0)
        eager = make_embedder(precision="fp32")
        compiled = make_embedder(precision="fp32", compile=True)
        compiled.load_state_dict(eager.state_dict())
        t = time.perf_counter(); first = compiled.embed(folder, batch_size=batch_size, progress=False)
        first_pass = time.perf_counter() - t
        ref = eager.embed(folder, batch_size=batch_size, progress=False)  # also the eager warm-up
        overlap = topk_overlap(ref.vectors, first.vectors, k=10).mean()
        max_diff = float(np.abs(ref.vectors - first.vectors).max())
        rows = {"naive loop": [], "eager pipeline": [], "compiled pipeline": []}
        chunk = -(-n // rounds)
        for r in range(rounds):
            rows["eager pipeline"].append(pipeline(eager, folder, n, batch_size))
            rows["compiled pipeline"].append(pipeline(compiled, folder, n, batch_size))
            rows["naive loop"].append(naive_loop(paths[r * chunk:(r + 1) * chunk]))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    ratio = med["compiled pipeline"] / med["eager pipeline"]
    saved = 1 / med["eager pipeline"] - 1 / med["compiled pipeline"]
    breakeven = compiled.compile_seconds / saved if saved > 0 else float("inf")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; ResNet-18 224 px fp32, "
          f"batch {batch_size}, {n} images, {rounds} rounds")
    for k, v in rows.items(): print(f"{k:20s} {med[k]:7.1f} img/s   (rounds: {', '.join(f'{x:.1f}' for x in v)})")
    print(f"compiled / eager      {ratio:.2f}x at steady state;  eager / naive {med['eager pipeline'] / med['naive loop']:.2f}x;  "
          f"compiled / naive {med['compiled pipeline'] / med['naive loop']:.2f}x")
    print(f"compile seconds       {compiled.compile_seconds:.1f}s (first pass over {n} images took {first_pass:.1f}s)")
    print(f"break-even            {breakeven:,.0f} images")
    print(f"top-10 overlap        {overlap:.4f} (max |compiled - eager| {max_diff:.1e})")
    return dict(median=med, ratio=ratio, compile_seconds=compiled.compile_seconds, breakeven=breakeven, overlap=overlap)


@pytest.mark.slow
def test_compile_bench():
    out = run(n=256, rounds=2)
    assert out["overlap"] >= 0.99 and out["compile_seconds"] > 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    run(a.n, a.batch_size, a.rounds)
