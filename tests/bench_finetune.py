"""Fine-tuning an ImageNet backbone vs training from scratch, at equal wall time, on classes never trained on.

Run as a script: `python tests/bench_finetune.py [--minutes 3] [--seeds 0 1] [--json nbs/bench_finetune.json]`
or as a slow test: `pytest -m slow tests/bench_finetune.py -s`.

Data: the split of `tests/bench_train.py` — `make_glyphs` at 64 px, 20 images per class, 280 training classes,
20 validation classes (they pick the epoch), 100 test classes (never trained on, never used to choose).
Every model gets the same recipe: NT-Xent loss, batches of 32 classes x 4 images, AdamW at lr 1e-3 with a cosine
schedule over the budget, the same augmentations, a GeM-pooled 128-d projection, and the same budget of
training + validation wall time (measuring the test classes after each epoch, for the curve, is not counted):

- `smallcnn scratch`: the 4-stage SmallCNN of lesson 03_embed, random init;
- `lite0 scratch`: EfficientNet-Lite0 (4.7 M parameters, built for 64 px), random init;
- `lite0 fine-tuned`: the same network starting from its ImageNet weights (the `pretrained` extra).

Baselines without training: raw pixels and frozen ImageNet Lite0 (GeM, no projection).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.embed import LITE0, Embedder, PixelEmbedder
from cbir.train import Trainer, cache_images, class_retrieval, embed_tensor

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import make_split  # noqa: E402  (the same split as the training benchmark)

MODELS = {"smallcnn scratch": ("smallcnn", None), "lite0 scratch": (LITE0, None), "lite0 fine-tuned": (LITE0, "imagenet")}


def new_embedder(name: str, seed: int) -> Embedder:
    backbone, weights = MODELS[name]
    torch.manual_seed(seed)
    return Embedder.from_name(backbone, weights=weights, image_size=64, projection=128)


def run_benchmark(minutes: float = 3.0, seeds=(0, 1), train_classes: int = 280) -> dict:
    train, val, test = make_split(train_classes)
    frozen = Embedder.from_name(LITE0, image_size=64)
    x_test, y_test, _ = cache_images(test, frozen.transform)
    results = {"pixels": class_retrieval(PixelEmbedder(image_size=32).embed(test, progress=False).vectors, test.labels),
               "lite0 frozen (ImageNet)": class_retrieval(embed_tensor(frozen, x_test), y_test.numpy())}
    curves = {}
    for name in MODELS:
        for seed in seeds:
            t = Trainer(new_embedder(name, seed), train, val, loss="ntxent", miner=None, seed=seed, report={"test": test})
            t.fit(minutes=minutes, verbose=False)
            xt, yt, _ = cache_images(test, t.embedder.transform)
            results[f"{name}, seed {seed}"] = class_retrieval(embed_tensor(t.embedder, xt), yt.numpy()) | {
                "epochs": t.epoch, "best epoch": t.best["epoch"], "seconds": round(t.history[-1]["seconds"], 1),
                "img/s": round(t.timing["images"] / t.timing["train_seconds"], 1)}
            curves[f"{name}, seed {seed}"] = [{k: r[k] for k in ("epoch", "seconds", "val MAP@R", "test MAP@R")} for r in t.history]
            print(f"{name}, seed {seed}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in results[f"{name}, seed {seed}"].items()), flush=True)
    split = {n: (len(s.classes), len(s)) for n, s in (("train", train), ("val", val), ("test", test))}
    return dict(split=split, minutes=minutes, seeds=list(seeds), threads=torch.get_num_threads(), results=results, curves=curves)


def format_report(r: dict) -> str:
    lines = [f"split (classes, images): {r['split']}; {r['threads']} threads; budget {r['minutes']} min per run",
             f"{'100 unseen test classes':>32} {'MAP@R':>7} {'P@1':>7} {'mAP':>7}"]
    for name, m in r["results"].items():
        extra = f"   ({m['epochs']} epochs, kept {m['best epoch']}, {m['img/s']:.0f} img/s)" if "epochs" in m else ""
        lines.append(f"{name:>32} {m['MAP@R']:7.3f} {m['P@1']:7.3f} {m['mAP']:7.3f}{extra}")
    return "\n".join(lines)


@pytest.mark.slow
def test_finetune_benchmark():
    r = run_benchmark(minutes=3.0, seeds=(0, 1))
    print("\n" + format_report(r))
    for seed in r["seeds"]:  # fine-tuning beats the same network from scratch at equal wall time
        assert r["results"][f"lite0 fine-tuned, seed {seed}"]["MAP@R"] > r["results"][f"lite0 scratch, seed {seed}"]["MAP@R"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-classes", type=int, default=280)
    ap.add_argument("--json", help="also write the results (with curves) to this JSON file")
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = run_benchmark(a.minutes, a.seeds, a.train_classes)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    res = {"command": "python tests/bench_finetune.py " + " ".join(sys.argv[1:]), "cpu": cpu, **res}
    print(format_report(res) + f"\n({time.perf_counter() - t0:.0f} s in all)")
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
