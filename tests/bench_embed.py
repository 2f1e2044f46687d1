"""Embedding throughput: the batched pipeline vs a naive one-image-at-a-time loop vs the model alone.

Run as a script (prints a table): `python tests/bench_embed.py [--n 512] [--batch-size 32] [--rounds 4] [--variants]`
or as a slow test: `pytest -m slow tests/test_embed_bench.py`.

All numbers come from the same run on the same 512 JPEG files (generated shapes, 256 px, written to a temp
folder), with ResNet-18 (random init: speed does not depend on the weights' values) at 224 px:

- naive: open, transform and embed one image at a time, fp32, `torch.no_grad`, default memory layout (the
  way a first notebook does it);
- pipeline: `Embedder.embed(folder)` with its defaults (DataLoader, automatic worker count, inference_mode,
  channels_last, precision "auto"), plus with --variants fp32 and other worker counts;
- model only: `Embedder.encode` on a ready-made batch of the same size and configuration: the ceiling the
  pipeline approaches when loading and preprocessing are hidden.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cbir.data import make_shapes
from cbir.embed import Embedder, auto_num_workers
from cbir.transforms import eval_transform


def write_jpegs(root: Path, n: int = 512, size: int = 256, seed: int = 0) -> list[Path]:
    "n generated shapes images as JPEG files, one sub-folder per class."
    images = make_shapes(n=n, size=size, seed=seed, clutter=True)
    paths = []
    for i in range(n):
        p = root / images.classes[images.labels[i]] / f"{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        images[i].save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def naive_loop(paths: list[Path]) -> float:
    "Images per second of a one-at-a-time loop: open, transform, embed (fp32, no_grad, GAP, L2)."
    import torchvision
    model = torchvision.models.resnet18(weights=None).eval()
    trunk = torch.nn.Sequential(*list(model.children())[:-2])
    transform = eval_transform("resnet18")
    with torch.no_grad():
        trunk(transform(Image.open(paths[0]).convert("RGB")).unsqueeze(0))  # warm-up
        t = time.perf_counter()
        for p in paths:
            x = transform(Image.open(p).convert("RGB")).unsqueeze(0)
            F.normalize(trunk(x).mean((-2, -1)), dim=1)
    return len(paths) / (time.perf_counter() - t)


def make_embedder(**kwargs) -> Embedder:
    "ResNet-18, random init, 224 px, GeM, with the given Embedder options (precision, ...)."
    return Embedder.from_name("resnet18", weights=None, pooling="gem", **kwargs)


def pipeline(emb: Embedder, folder: Path, n: int, batch_size: int, num_workers: int | None = None) -> float:
    "Images per second of Embedder.embed over the whole folder (DataLoader, workers, inference_mode)."
    t = time.perf_counter()
    out = emb.embed(folder, batch_size=batch_size, num_workers=num_workers, progress=False)
    secs = time.perf_counter() - t
    assert len(out) == n and not out.failed
    return n / secs


def model_only(emb: Embedder, n: int, batch_size: int) -> float:
    "Images per second of Embedder.encode on a ready-made batch (same embedder, same batch size)."
    x = torch.randn(batch_size, 3, 224, 224)
    with torch.inference_mode():
        emb.encode(x)  # warm-up
        t, done = time.perf_counter(), 0
        while done < n:
            emb.encode(x); done += batch_size
    return done / (time.perf_counter() - t)


def run_benchmark(n: int = 512, batch_size: int = 32, rounds: int = 4, variants: bool = False) -> dict:
    """Measure naive loop, pipeline and model alone in interleaved rounds on one set of files (load drifts hit all
    three alike); the naive loop runs over a different n/rounds slice of the files each round, so all n are used.
    Returns rows {name: [img/s per round]} and ratios {name: [per round]}."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        paths = write_jpegs(folder, n=n)
        emb = make_embedder()
        default = f"pipeline default ({emb.precision}, {auto_num_workers(n, batch_size)} workers)"
        model = f"model only ({emb.precision}, batch {batch_size})"
        configs = {}
        if variants:
            configs = {"pipeline fp32 (default workers)": (make_embedder(precision="fp32"), None),
                       **{f"pipeline {emb.precision}, {k} workers": (emb, k) for k in (0, 1, 2) if k != auto_num_workers(n, batch_size)}}
        pipeline(emb, folder, n, batch_size)  # warm-up: kernels, file cache
        model_fp32 = f"model only (fp32, batch {batch_size})"
        rows = {k: [] for k in ["naive loop (batch 1, fp32)", default, model, *configs] + ([model_fp32] if variants else [])}
        chunk = -(-n // rounds)
        for r in range(rounds):
            rows["naive loop (batch 1, fp32)"].append(naive_loop(paths[r * chunk:(r + 1) * chunk]))
            rows[default].append(pipeline(emb, folder, n, batch_size))
            rows[model].append(model_only(emb, n, batch_size))
            for name, (e, nw) in configs.items(): rows[name].append(pipeline(e, folder, n, batch_size, nw))
            if variants: rows[model_fp32].append(model_only(configs["pipeline fp32 (default workers)"][0], n, batch_size))
            print(f"  round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    per_round = lambda a, b: [x / y for x, y in zip(rows[a], rows[b])]
    ratios = {"pipeline / naive": per_round(default, "naive loop (batch 1, fp32)"), "pipeline / model only": per_round(default, model)}
    if variants:
        ratios["pipeline fp32 / model only fp32"] = per_round("pipeline fp32 (default workers)", model_fp32)
    best = lambda a, b: max(rows[a]) / max(rows[b])  # best of rounds: load only ever slows a run down
    best_ratios = {"pipeline / naive": best(default, "naive loop (batch 1, fp32)"), "pipeline / model only": best(default, model)}
    return dict(rows=rows, ratios=ratios, best_ratios=best_ratios)


def format_table(result: dict) -> str:
    "One line per row: median and min-max over rounds."
    head = f"{'run':<42} {'median':>8} {'min':>8} {'max':>8}"
    fmt = lambda k, v, d: f"{k:<42} {np.median(v):>8.{d}f} {min(v):>8.{d}f} {max(v):>8.{d}f}"
    lines = [head + "   (img/s)", "-" * len(head)] + [fmt(k, v, 1) for k, v in result["rows"].items()]
    lines += ["-" * len(head) + "   (ratios, per round)"] + [fmt(k, v, 2) for k, v in result["ratios"].items()]
    lines += ["-" * len(head) + "   (ratios of the best round of each row)"]
    lines += [f"{k:<42} {v:>8.2f}" for k, v in result["best_ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the table shows median, min, max")
    ap.add_argument("--variants", action="store_true", help="also fp32 and 0 / 2 decoding workers")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, load {os.getloadavg()}", file=sys.stderr)
    print(format_table(run_benchmark(args.n, args.batch_size, args.rounds, args.variants)), flush=True)
