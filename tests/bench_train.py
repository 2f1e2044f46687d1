"""Metric-learning benchmark: held-out-class retrieval after minutes of CPU training, and where a step's time goes.

Run as a script: `python tests/bench_train.py [--minutes 3] [--losses triplet normalized_softmax] [--json PATH]`
or as a slow test: `pytest -m slow tests/test_train_bench.py -s`.

Data: `make_glyphs` at 64 px, 20 images per class; 100 classes are held out for the test (never trained on,
never used to choose anything), 20 validate (they pick the epoch) and the rest train (`--train-classes`,
default 280). The same split is used for every loss and every baseline. Embedder: `SmallCNN` + GeM + a
128-d projection, batches of 32 classes x 4 images, AdamW, cosine schedule over the budget. The budget counts
training and validation; measuring the test classes after every epoch (for the curve) is not counted.

Parts, all from the same run:
1. throughput: the model's own forward + backward + optimiser step on a ready batch of 128 vs the training
   loop's images/s (sampling, gathering, augmentation, mining, loss included), in interleaved rounds;
   and the share of a step spent in loss + mining;
2. accuracy: MAP@R / P@1 / mAP on the 100 test classes for raw pixels, the random-init CNN and each loss after
   the budget, with the curve of test MAP@R against training seconds.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cbir.data import class_disjoint_split, make_glyphs
from cbir.embed import Embedder, PixelEmbedder
from cbir.train import Trainer, cache_images, class_retrieval, embed_tensor

LOSS_SETTINGS = {"triplet": dict(loss="triplet", miner="semi_hard"), "normalized_softmax": dict(loss="normalized_softmax", miner=None),
                 "ntxent": dict(loss="ntxent", miner=None), "margin": dict(loss="margin", miner="distance_weighted"),
                 "contrastive": dict(loss="contrastive", miner="all"), "arcface": dict(loss="arcface", miner=None)}


def make_split(train_classes: int = 280, seed: int = 0):
    "Glyphs with 100 test, 20 validation and `train_classes` training classes, 20 images each."
    n_classes = train_classes + 120
    data = make_glyphs(n=20 * n_classes, n_classes=n_classes, size=64, seed=seed)
    return class_disjoint_split(data, fractions=(train_classes / n_classes, 20 / n_classes, 100 / n_classes), seed=seed)


def new_embedder(seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    return Embedder.from_name("smallcnn", weights=None, image_size=64, projection=128)


def throughput(train, val, rounds: int = 3, steps: int = 10) -> dict:
    "Model-only fwd+bwd+step rate vs the training loop's rate at batch 128, interleaved rounds; loss+mining share."
    t = Trainer(new_embedder(), train, None, loss="triplet", miner="semi_hard", p=32, k=4, seed=0)
    model, opt = new_embedder(), None
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = t.train_x[:128].float()
    def model_only():
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = model(x).square().sum(); opt.zero_grad(); loss.backward(); opt.step()
        return 128 * steps / (time.perf_counter() - t0)
    model_only()  # warm-up
    t.fit(epochs=1, steps_per_epoch=2, verbose=False)  # warm-up
    rates = {"model only": [], "training loop": []}
    share = []
    for _ in range(rounds):
        rates["model only"].append(model_only())
        before = dict(t.timing)
        t.fit(epochs=t.epoch + 1, steps_per_epoch=steps, verbose=False)
        d = {k: t.timing[k] - before[k] for k in t.timing}
        rates["training loop"].append(d["images"] / d["train_seconds"])
        share.append(d["loss_and_mining_seconds"] / d["train_seconds"])
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return dict(rates=rates, median=med, ratio=med["training loop"] / med["model only"], loss_and_mining_share=float(np.median(share)))


def accuracy(train, val, test, losses, minutes: float) -> dict:
    "Test-class retrieval of pixels, random init and each loss after `minutes` of training."
    x_test, y_test, _ = cache_images(test, new_embedder().transform)
    out = {"pixels": class_retrieval(PixelEmbedder(image_size=32).embed(test, progress=False).vectors, test.labels),
           "smallcnn random init": class_retrieval(embed_tensor(new_embedder(), x_test), y_test.numpy())}
    curves = {}
    for name in losses:
        t = Trainer(new_embedder(), train, val, seed=0, report={"test": test}, **LOSS_SETTINGS[name])
        t.fit(minutes=minutes, verbose=False)
        out[f"smallcnn {name}"] = class_retrieval(embed_tensor(t.embedder, x_test), y_test.numpy()) | {
            "epochs": t.epoch, "best epoch": t.best["epoch"], "seconds": t.history[-1]["seconds"]}
        curves[name] = [{k: r[k] for k in ("epoch", "seconds", "train seconds", "val MAP@R", "test MAP@R")} for r in t.history]
    return dict(results=out, curves=curves)


def run_benchmark(minutes: float = 3.0, losses=("triplet", "normalized_softmax"), train_classes: int = 280, rounds: int = 3) -> dict:
    train, val, test = make_split(train_classes)
    split = {n: (len(s.classes), len(s)) for n, s in (("train", train), ("val", val), ("test", test))}
    return dict(split=split, minutes=minutes, threads=torch.get_num_threads(), throughput=throughput(train, val, rounds),
                **accuracy(train, val, test, losses, minutes))


def format_report(r: dict) -> str:
    th = r["throughput"]
    lines = [f"split (classes, images): {r['split']}; {r['threads']} threads; budget {r['minutes']} min per loss",
             f"throughput at batch 128 (median of rounds): model fwd+bwd+step {th['median']['model only']:.0f} img/s, "
             f"training loop {th['median']['training loop']:.0f} img/s, ratio {th['ratio']:.2f}; "
             f"loss + mining {100 * th['loss_and_mining_share']:.1f}% of a step",
             f"{'100 unseen test classes':>28} {'MAP@R':>7} {'P@1':>7} {'mAP':>7} {'x pixels':>9}"]
    px = r["results"]["pixels"]["MAP@R"]
    for name, m in r["results"].items():
        extra = f"   ({m['epochs']} epochs, kept {m['best epoch']}, {m['seconds']:.0f}s)" if "epochs" in m else ""
        lines.append(f"{name:>28} {m['MAP@R']:7.3f} {m['P@1']:7.3f} {m['mAP']:7.3f} {m['MAP@R'] / px:9.0f}{extra}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--losses", nargs="+", default=["triplet", "normalized_softmax"], choices=list(LOSS_SETTINGS))
    ap.add_argument("--train-classes", type=int, default=280)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the full results (with curves) to this JSON file")
    a = ap.parse_args()
    res = run_benchmark(a.minutes, a.losses, a.train_classes, a.rounds)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else "?"
    res = {"command": "python tests/bench_train.py " + " ".join(sys.argv[1:]), "cpu": cpu, **res}
    print(format_report(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
