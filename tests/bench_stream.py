"""Streaming training vs the decoded cache: training throughput when both fit in memory, peak memory as the folder grows.

Run as a script: `python tests/bench_stream.py [--rounds 3] [--json nbs/bench_stream.json]`
or as a slow test: `pytest -m slow tests/bench_stream.py -s`.

Throughput: `Trainer.fit` img/s (training steps only; decoding is inside them when streaming) of the same run cached
(`cache=True`: every image decoded once, kept as float16) and streamed (`cache=False`: each batch decoded by a DataLoader,
with the default worker count and with one worker), in interleaved rounds on the same machine; the ratio of medians.
Three cases, from the cheapest training step (where decoding weighs most) to real resolution:

- `smallcnn 64 px`: SmallCNN on 2,000 glyph PNGs (lesson 10's setting), batches of 32 x 4;
- `smallcnn 224 px`: SmallCNN on JPEG crops (320 px wide) of scikit-image's photographs, batches of 8 x 4;
- `lite0 224 px`: EfficientNet-Lite0 from its ImageNet weights on the same JPEGs, batches of 8 x 4.

Peak memory: a fresh process per (mode, number of images) builds a SmallCNN trainer at 224 px on N JPEG crops and
trains 4 steps; its peak resident set (VmHWM, the least of 2 runs; worker processes, when any, not counted) is reported.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.data import load_image_folder, load_photos, make_glyphs
from cbir.embed import LITE0, Embedder, auto_num_workers
from cbir.train import Trainer


def photo_folder(root: Path, n: int, side: int = 320, seed: int = 0) -> Path:
    "n JPEG crops (50-90 % of each side, `side` px wide) of the bundled photographs, one class per photograph."
    photos, rng = load_photos(max_side=None), np.random.default_rng(seed)
    for j in range(n):
        i = j % len(photos)
        im, cls = photos[i], photos.classes[photos.labels[i]]
        W, H = im.size
        s = rng.uniform(0.5, 0.9); w, h = int(W * s), int(H * s)
        x, y = rng.integers(0, W - w + 1), rng.integers(0, H - h + 1)
        (root / cls).mkdir(parents=True, exist_ok=True)
        im.crop((x, y, x + w, y + h)).resize((side, max(1, int(side * h / w)))).save(root / cls / f"{j:06d}.jpg", quality=90)
    return root


def new_embedder(backbone: str, size: int) -> Embedder:
    torch.manual_seed(0)
    if backbone == LITE0: return Embedder.from_name(LITE0, weights="imagenet", image_size=size, projection=64)
    return Embedder.from_name(backbone, weights=None, image_size=size, projection=64)


def throughput(ds, backbone: str, size: int, p: int, k: int, steps: int, rounds: int) -> dict:
    modes = {"cached": dict(cache=True), "streamed": dict(cache=False), "streamed, 1 worker": dict(cache=False, num_workers=1)}
    rates = {m: [] for m in modes}
    for _ in range(rounds):
        for m, kw in modes.items():
            t = Trainer(new_embedder(backbone, size), ds, None, loss="ntxent", miner=None, p=p, k=k, seed=0, **kw)
            rates[m].append(t.fit(epochs=1, steps_per_epoch=steps, verbose=False)[0]["img/s"])
    med = {m: statistics.median(r) for m, r in rates.items()}
    return {"img/s": {m: [round(x, 1) for x in r] for m, r in rates.items()},
            "ratio": {m: round(med[m] / med["cached"], 3) for m in modes if m != "cached"},
            "default workers": auto_num_workers(len(ds), p * k)}


def peak_rss(mode: str, n: int, folder: Path, repeats: int = 2) -> float:
    "Peak resident memory (MB) of a fresh process that trains 4 steps on the first n images of `folder` (the least of `repeats` runs)."
    runs = [subprocess.run([sys.executable, __file__, "--rss-child", mode, str(n), str(folder)], capture_output=True, text=True, check=True)
            for _ in range(repeats)]
    return min(float(out.stdout.strip().splitlines()[-1]) for out in runs)


def rss_child(mode: str, n: int, folder: str):
    ds = load_image_folder(folder)
    ds = ds.subset(np.arange(n))
    t = Trainer(new_embedder("smallcnn", 224), ds, None, loss="ntxent", miner=None, p=8, k=4, seed=0, cache=mode == "cached")
    t.fit(epochs=1, steps_per_epoch=4, verbose=False)
    # VmHWM: the peak resident set of this process's own memory (ru_maxrss would carry the parent's peak across exec);
    # worker processes, when any, are not counted
    kb = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    print(kb / 1024)


def run_benchmark(rounds: int = 3, sizes=(250, 1000, 4000)) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        glyphs = make_glyphs(n=2000, n_classes=100, size=64, seed=0).to_folder(tmp / "glyphs")
        photos = photo_folder(tmp / "photos", max(sizes))
        small = load_image_folder(photos).subset(np.arange(456))
        res = {"throughput": {
            "smallcnn 64 px (2,000 glyph PNGs)": throughput(load_image_folder(glyphs), "smallcnn", 64, 32, 4, 15, rounds),
            "smallcnn 224 px (456 photo JPEGs)": throughput(small, "smallcnn", 224, 8, 4, 8, rounds),
            "lite0 224 px ImageNet (456 photo JPEGs)": throughput(small, LITE0, 224, 8, 4, 5, rounds)}}
        res["peak RSS MB"] = {mode: {n: round(peak_rss(mode, n, photos)) for n in sizes} for mode in ("cached", "streamed")}
    res["cache MB per image at 224 px"] = round(3 * 224 * 224 * 2 / 2**20, 3)
    return res


def format_report(r: dict) -> str:
    lines = ["throughput, streamed / cached (median of rounds):"]
    for case, v in r["throughput"].items():
        lines.append(f"  {case}: " + ", ".join(f"{m} {x:.2f}" for m, x in v["ratio"].items())
                     + "   [img/s cached " + " ".join(f"{x:.0f}" for x in v["img/s"]["cached"]) + "]")
    lines.append("peak RSS (MB) by number of training images:")
    for mode, v in r["peak RSS MB"].items(): lines.append(f"  {mode:9s}" + "".join(f"  {n}: {mb}" for n, mb in v.items()))
    return "\n".join(lines)


@pytest.mark.slow
def test_stream_benchmark():
    r = run_benchmark(rounds=3)
    print(format_report(r))
    rss = r["peak RSS MB"]
    assert rss["streamed"][4000] < 1.25 * rss["streamed"][250]  # flat in the number of images
    assert rss["cached"][4000] - rss["cached"][250] > 0.8 * 3750 * r["cache MB per image at 224 px"]  # the cache grows as it must
    assert r["throughput"]["lite0 224 px ImageNet (456 photo JPEGs)"]["ratio"]["streamed"] >= 0.9


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], int(sys.argv[3]), sys.argv[4]); sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this JSON file")
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = run_benchmark(a.rounds)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    res = {"command": "python tests/bench_stream.py " + " ".join(sys.argv[1:]), "cpu": cpu, "cores": __import__("os").cpu_count(),
           "seconds": round(time.perf_counter() - t0), **res}
    print(format_report(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
