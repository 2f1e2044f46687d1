"""Embedding throughput: the batched pipeline vs a naive one-image-at-a-time loop vs the model alone.

Run as a script (prints a table): `python tests/bench_embed.py [--n 512] [--batch-size 32] [--repeats 1]`
or as a slow test: `pytest -m slow tests/test_embed_bench.py`.

All numbers come from the same run on the same 512 JPEG files (generated shapes, 256 px, written to a temp
folder), with ResNet-18 (random init: speed does not depend on the weights' values) at 224 px:

- naive: open, transform and embed one image at a time, fp32, `torch.no_grad`, default memory layout (the
  way a first notebook does it);
- pipeline: `Embedder.embed(folder)` with its defaults (DataLoader, decoding worker, inference_mode,
  channels_last, precision "auto"), plus variants (fp32, other worker counts);
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


def pipeline(folder: Path, n: int, batch_size: int, **kwargs) -> tuple[float, dict]:
    "Images per second of Embedder.embed over the folder; the embedder options go in kwargs (precision, num_workers)."
    nw = kwargs.pop("num_workers", None)
    emb = Embedder.from_name("resnet18", weights=None, pooling="gem", **kwargs)
    emb.embed([str(p) for p in sorted(folder.rglob("*.jpg"))[: 2 * batch_size]], batch_size=batch_size, num_workers=0, progress=False)  # warm-up
    t = time.perf_counter()
    out = emb.embed(folder, batch_size=batch_size, num_workers=nw, progress=False)
    secs = time.perf_counter() - t
    assert len(out) == n and not out.failed
    return n / secs, dict(precision=emb.precision, num_workers=auto_num_workers(n, batch_size) if nw is None else nw)


def model_only(n: int, batch_size: int, **kwargs) -> float:
    "Images per second of Embedder.encode on a ready batch (same configuration as the pipeline)."
    emb = Embedder.from_name("resnet18", weights=None, pooling="gem", **kwargs)
    x = torch.randn(batch_size, 3, 224, 224)
    with torch.inference_mode():
        emb.encode(x)  # warm-up
        t, done = time.perf_counter(), 0
        while done < n:
            emb.encode(x); done += batch_size
    return done / (time.perf_counter() - t)


def run_benchmark(n: int = 512, batch_size: int = 32, variants: bool = True) -> dict:
    "Measure everything on one set of files; return {row name: images per second} plus the ratios."
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        paths = write_jpegs(folder, n=n)
        rows = {}
        rows["naive loop (batch 1, fp32)"] = naive_loop(paths)
        ips, info = pipeline(folder, n, batch_size)
        default = f"pipeline default ({info['precision']}, {info['num_workers']} worker)"
        rows[default] = ips
        rows[f"model only ({info['precision']}, batch {batch_size})"] = model_only(n, batch_size)
        if variants:
            rows["pipeline fp32"] = pipeline(folder, n, batch_size, precision="fp32")[0]
            rows[f"model only (fp32, batch {batch_size})"] = model_only(n, batch_size, precision="fp32")
            for nw in (0, 2):
                rows[f"pipeline {info['precision']}, {nw} workers"] = pipeline(folder, n, batch_size, num_workers=nw)[0]
    model = rows[f"model only ({info['precision']}, batch {batch_size})"]
    ratios = {"pipeline / naive": rows[default] / rows["naive loop (batch 1, fp32)"], "pipeline / model only": rows[default] / model}
    if variants:
        ratios["pipeline fp32 / model only fp32"] = rows["pipeline fp32"] / rows[f"model only (fp32, batch {batch_size})"]
    return dict(rows=rows, ratios=ratios)


def format_table(result: dict) -> str:
    lines = [f"{'run':<42} {'img/s':>8}", "-" * 51]
    lines += [f"{k:<42} {v:>8.1f}" for k, v in result["rows"].items()]
    lines += ["-" * 51] + [f"{k:<42} {v:>8.2f}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-variants", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, load {os.getloadavg()}", file=sys.stderr)
    for r in range(args.repeats):
        print(format_table(run_benchmark(args.n, args.batch_size, variants=not args.no_variants)), flush=True)
