"""How much a short training run depends on its seed: the visual-search tutorial's training, 6 against 12 epochs.

Run as a script: `python tests/bench_train_seeds.py [--epochs 6 12] [--seeds 0 1 2]` (about 2 minutes on 2 cores),
or as a slow test: `pytest -m slow tests/bench_train_seeds.py`.

The tutorial's set-up (tutorials/visual_search, step 6): 2,400 glyphs of 120 classes (seed 0) split by class into
60 training, 12 validation and 48 test classes; a fresh SmallCNN (64 px, 128-d projection), NT-Xent, no miner,
lr 2e-3, batches of 32 classes x 4 images (9 batches an epoch), the cosine schedule over the whole run. The seed
sets the initial weights (`torch.manual_seed`) and the Trainer's sampling and augmentation. For each run it prints
the validation MAP@R after every epoch, the test-class MAP@R of the kept (best validation) epoch, and the tutorial's
re-ranking comparison on it: its 40 class queries against the 920 other test images, class mAP with no re-ranking,
AQE n=10 and k-reciprocal (20/6).

Measured 2026-11-24 on the 2-core AMD EPYC: 6 epochs gave test MAP@R 0.24 / 0.09 / 0.16 for seeds 0 / 1 / 2;
12 epochs gave 0.51 / 0.48 / 0.49. The tutorial trains 12; its own run starts from other initial weights, because
earlier cells draw from the random state first. After the weak runs re-ranking loses mAP; after the
12-epoch runs it gains.
"""
import argparse
import time

import pytest


def rerank_maps(vectors, test):
    "The tutorial's class protocol (its 40 queries, the other 920 test images as the gallery): mAP per re-ranking."
    import numpy as np
    from cbir.evaluate import evaluate
    from cbir.index import Index
    from cbir.search import KReciprocal, QueryExpansion, Searcher
    rng = np.random.default_rng(0)  # the tutorial's query choice, step 2
    query_rows = np.sort([rng.choice(np.flatnonzero(test.labels == c)) for c in rng.choice(len(test.classes), 40, replace=False)])
    other_rows = np.setdiff1d(np.arange(len(test)), query_rows)
    index = Index.build(vectors[other_rows], ids=other_rows)
    return {how: evaluate(vectors[query_rows], searcher=Searcher(None, index, rerank=rr), query_labels=test.labels[query_rows],
                          gallery_labels=test.labels[other_rows], ks=(10,)).metrics["mAP"]
            for how, rr in {"none": None, "AQE n=10": QueryExpansion(10, 0.0), "k-reciprocal": KReciprocal()}.items()}


def run(epochs=(6, 12), seeds=(0, 1, 2), lr=2e-3):
    import torch
    from cbir.data import class_disjoint_split, make_glyphs
    from cbir.embed import Embedder
    from cbir.train import Trainer, class_retrieval, embed_tensor
    glyphs = make_glyphs(n=2400, n_classes=120, size=64, seed=0)
    train, val, test = class_disjoint_split(glyphs, fractions=(0.5, 0.1, 0.4), seed=0)
    results = {}
    for n_epochs in epochs:
        for seed in seeds:
            torch.manual_seed(seed)
            trainer = Trainer(Embedder.from_name("smallcnn", weights=None, image_size=64, projection=128), train, val,
                              loss="ntxent", miner=None, lr=lr, seed=seed)
            t0 = time.perf_counter()
            history = trainer.fit(epochs=n_epochs, verbose=False)
            seconds = time.perf_counter() - t0
            vectors = trainer.embedder.embed(test, progress=False).vectors
            test_map = class_retrieval(vectors, test.labels)["MAP@R"]
            results[n_epochs, seed] = test_map
            rr = rerank_maps(vectors, test)
            print(f"{n_epochs:2d} epochs, seed {seed}: {seconds:4.0f}s | val MAP@R by epoch "
                  + " ".join(f"{r['val MAP@R']:.2f}" for r in history) + f" | test MAP@R {test_map:.3f} | class mAP "
                  + ", ".join(f"{how} {m:.3f}" for how, m in rr.items()), flush=True)
    for n_epochs in epochs:
        vals = [results[n_epochs, s] for s in seeds]
        print(f"{n_epochs:2d} epochs: test MAP@R min {min(vals):.3f}, max {max(vals):.3f} over seeds {list(seeds)}")
    return results


@pytest.mark.slow
def test_twelve_epochs_are_robust_to_the_seed():
    r = run()
    assert min(r[12, s] for s in (0, 1, 2)) > 0.35, r  # every seed learns at 12 epochs
    assert min(r[12, s] for s in (0, 1, 2)) > max(r[6, s] for s in (0, 1, 2)), r


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    run(tuple(args.epochs), tuple(args.seeds))
