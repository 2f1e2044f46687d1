"""Benchmark the embedded datasets: `python tests/bench_data.py` prints make_shapes timing and raw-pixel mAP vs chance,
then make_glyphs timing and raw-pixel MAP@R / P@1 (PixelEmbedder + evaluate) on 100 glyph classes vs a random ranking.

`python tests/bench_data.py --learn [EPOCHS]` also trains a tiny CNN classifier on the train classes (CPU, minutes)
and reports the mAP of its features on the unseen test classes: the evidence that the task is learnable.
"""
import sys
import time

import numpy as np
import pytest

from cbir.data import ImageSet, class_disjoint_split, make_glyphs, make_shapes


def raw_pixel_map(ds: ImageSet) -> tuple[float, float]:
    "Leave-one-out mAP of flattened, L2-normalised raw pixels with cosine similarity, and chance (mean relevant fraction)."
    x = np.stack([np.asarray(ds[i], np.float32).ravel() for i in range(len(ds))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return _map_of(x, ds.labels)


def main(n: int = 2000, size: int = 64, repeats: int = 3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = make_shapes(n, size, seed=0)
        times.append(time.perf_counter() - t0)
    print(f"make_shapes({n}, {size}): best {min(times):.2f} s, median {np.median(times):.2f} s over {repeats} runs")
    for seed in (0, 1, 2):
        _, _, test = class_disjoint_split(ds, (0.5, 0.25, 0.25), seed=seed)
        m, chance = raw_pixel_map(test)
        print(f"split seed {seed}: test classes {test.classes}: raw-pixel mAP {m:.3f}, chance {chance:.3f}, "
              f"ratio {m / chance:.3f}")


def glyphs_bench(n: int = 4000, n_classes: int = 200, size: int = 64, repeats: int = 3):
    "Time make_glyphs; raw-pixel MAP@R and P@1 on classes 100..199, for the default set and plainly drawn glyphs."
    from cbir.embed import PixelEmbedder
    from cbir.evaluate import evaluate
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = make_glyphs(n, n_classes, size, seed=0)
        times.append(time.perf_counter() - t0)
    print(f"make_glyphs({n}, {n_classes}, {size}): best {min(times):.2f} s, median {np.median(times):.2f} s "
          f"over {repeats} runs ({n / min(times):.0f} images/s)")
    for what, d in (("default", ds), ("plain (clutter=0, jitter=0)", make_glyphs(n, n_classes, size, seed=0, clutter=0, jitter=0))):
        held_out = d.subset(d.labels >= n_classes // 2, drop_unused_classes=True)
        m = evaluate(PixelEmbedder().embed(held_out, progress=False).vectors, query_labels=held_out.labels).metrics
        print(f"glyphs {what}: {len(held_out.classes)} classes, {len(held_out)} images: raw-pixel (32 px) "
              f"MAP@R {m['MAP@R']:.4f}, P@1 {m['P@1']:.4f}")
    r, g = len(held_out) // len(held_out.classes) - 1, len(held_out) - 1  # relevant items, gallery size per query
    p, q = r / g, (r - 1) / (g - 1)
    print(f"random ranking (expected): MAP@R {sum(p / i * (1 + (i - 1) * q) for i in range(1, r + 1)) / r:.4f}, P@1 {p:.4f}")


def learned_map(ds: ImageSet, epochs: int = 12, seed: int = 0) -> list[tuple[int, float, float]]:
    "Train a tiny CNN with cross-entropy on the train classes; (epoch, test mAP, chance) of its L2-normalised features."
    import torch
    from torch import nn
    torch.manual_seed(seed)
    train, _, test = class_disjoint_split(ds, seed=seed)
    def tensors(d): return torch.from_numpy(np.stack([np.asarray(d[i]) for i in range(len(d))])).permute(0, 3, 1, 2).float() / 255
    x_train, y_train, x_test = tensors(train), torch.from_numpy(train.labels), tensors(test)
    def block(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    net = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(128, len(train.classes))
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], 2e-3)
    out = []
    for epoch in range(epochs):
        net.train()
        for batch in torch.randperm(len(x_train)).split(16):
            loss = nn.functional.cross_entropy(head(net(x_train[batch])), y_train[batch])
            opt.zero_grad(); loss.backward(); opt.step()
        net.eval()
        with torch.no_grad(): feats = nn.functional.normalize(net(x_test), dim=1).numpy()
        out.append((epoch, *_map_of(feats, test.labels)))
        print(f"epoch {epoch}: learned-feature mAP on unseen classes {out[-1][1]:.3f} (chance {out[-1][2]:.3f})", flush=True)
    return out


def _map_of(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    rel = labels[np.argsort(-sims, axis=1, kind="stable")[:, :-1]] == labels[:, None]
    ap = (np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1) * rel).sum(1) / rel.sum(1)
    return float(ap.mean()), float(rel.mean(1).mean())


@pytest.mark.slow
def test_data_benchmark():
    "Raw pixels on the generated sets sit near chance: the room that learning has to use."
    ds = make_shapes(2000, 64, seed=0)
    m, chance = raw_pixel_map(class_disjoint_split(ds, (0.5, 0.25, 0.25), seed=0)[2])
    assert chance < m < 3 * chance, (m, chance)
    main(repeats=1); glyphs_bench(repeats=1)


if __name__ == "__main__":
    main()
    glyphs_bench()
    if "--learn" in sys.argv:
        rest = sys.argv[sys.argv.index("--learn") + 1:]
        learned_map(make_shapes(2000, 64, seed=0), epochs=int(rest[0]) if rest else 12)
