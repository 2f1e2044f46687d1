"""Pretrained features on real photographs: the retrieval ladder, spatial verification's gain and cost, and the
throughput of the EfficientNet-Lite0 pipeline against the model's own forward pass.

Run as a script (prints tables): `python tests/bench_pretrained.py [--queries 4] [--rounds 3]`
or as a slow test: `pytest -m slow tests/bench_pretrained.py -s`.

- ladder: the protocol of `nbs/tutorials/real_photos.ipynb` (12 query scenes, 60 distractors from six other
  photographs, hard edits keeping 25-50 % of the area as queries; 'details' keep 10-30 %): P@1 and mAP of raw
  pixels (32 px), Lite0 random init and Lite0 ImageNet (GeM), computed from one forward pass per image.
- spatial verification: on the 'details' queries, Lite0 + GeM alone vs re-ranked by `SpatialVerification`
  with K = 20 and K = 50 verified hits; ms per query (ORB on the query and its mirror image, matching, RANSAC;
  the gallery's features are computed once and not counted).
- throughput: `Embedder.embed` on in-memory photographs (PIL images: resize, crop, normalise and forward), with
  no decode worker (the default on 2 cores) and with one, vs `Embedder.encode` on ready-made batches of the same
  size: the pipeline's share of the model's rate.
"""
import argparse
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbir.data import load_photos
from cbir.embed import Embedder, PixelEmbedder, make_pooling
from cbir.evaluate import evaluate, score_rankings
from cbir.search import Searcher
from cbir.spatial import SpatialVerification
from cbir.transforms import photo_retrieval_task

def tasks(n_queries: int = 4, seed: int = 0):
    return {name: photo_retrieval_task(n_queries, crop, seed=seed) for name, crop in [("half crops", (0.25, 0.5)), ("details", (0.1, 0.3))]}


def ladder(sets: dict) -> dict:
    nets = {"Lite0, random": Embedder.from_name("efficientnet_lite0", weights=None), "Lite0, ImageNet": Embedder.from_name("efficientnet_lite0")}
    pix, gem, out = PixelEmbedder(32), make_pooling("gem"), {}
    def vecs(emb, ds):
        x = torch.stack([emb.transform(ds[i]) for i in range(len(ds))])
        with torch.inference_mode(): return F.normalize(gem(torch.cat([emb._features(x[i:i + 32]) for i in range(0, len(x), 32)])), dim=1).numpy()
    gallery = next(iter(sets.values()))[1]
    gal = {name: vecs(e, gallery) for name, e in nets.items()}
    for task, (q, g) in sets.items():
        rows = {"raw pixels": (pix.embed(q, progress=False).vectors, pix.embed(g, progress=False).vectors)}
        rows.update({name: (vecs(e, q), gal[name]) for name, e in nets.items()})
        for name, (vq, vg) in rows.items():
            m = evaluate(vq, vg, query_labels=q.labels, gallery_labels=g.labels).metrics
            out[(task, name)] = {"P@1": m["P@1"], "mAP": m["mAP"]}
    return out


def spatial(sets: dict, ks=(20, 50)) -> dict:
    "Details: global search alone, then re-ranked by spatial verification of the top K; P@1, mAP, ms per query."
    q, g = sets["details"]
    searcher = Searcher.build(Embedder.from_name("efficientnet_lite0", pooling="gem"), g)
    images = [q[i] for i in range(len(q))]
    def score(res):
        rel = g.labels[np.asarray(res.positions)] == q.labels[:, None]
        m = score_rankings(rel, (g.labels[None, :] == q.labels[:, None]).sum(1)).metrics
        return {"P@1": m["P@1"], "mAP": m["mAP"]}
    out = {"global": {**score(searcher.search(images, k=len(g), rerank="none")), "ms/query": 0.0, "verified": float("nan")}}
    for k in ks:
        sv = SpatialVerification(k_verify=k, warn=False)
        for gid, pos in zip(g.ids, range(len(g))): sv.gallery_features(searcher, gid, pos)   # gallery features: offline work
        res = searcher.search(images, k=len(g), rerank=sv)
        out[f"+ spatial, K={k}"] = {**score(res), "ms/query": sv.last_report["ms_per_query"],
                                    "verified": sv.last_report["verified_queries"] / len(q)}
    return out


def throughput(n: int = 128, batch_size: int = 32, rounds: int = 3) -> dict:
    "Best-of-rounds img/s of `Embedder.embed` (0 and 1 decode workers) and of `encode` on a ready batch, interleaved."
    photos = load_photos()
    images = [photos[i % len(photos)] for i in range(n)]
    emb = Embedder.from_name("efficientnet_lite0")
    x = torch.stack([emb.transform(im) for im in images[:batch_size]])
    with torch.inference_mode(): emb.encode(x)                            # warm-up
    best = {"model only": 0.0, "pipeline, 0 workers": 0.0, "pipeline, 1 worker": 0.0}
    for _ in range(rounds):
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(n // batch_size): emb.encode(x)
        best["model only"] = max(best["model only"], (n // batch_size) * batch_size / (time.perf_counter() - t))
        for w in (0, 1):
            t = time.perf_counter(); emb.embed(images, batch_size=batch_size, num_workers=w, progress=False)
            key = f"pipeline, {w} worker" + ("s" if w != 1 else "")
            best[key] = max(best[key], n / (time.perf_counter() - t))
    return {**{f"{k} img/s": v for k, v in best.items()},
            **{f"{k} / model": v / best["model only"] for k, v in best.items() if k != "model only"}}


def fmt(rows: dict) -> str:
    cols = list(next(iter(rows.values())))
    lines = [f"{'':34s}" + "".join(f"{c:>12s}" for c in cols)]
    for name, r in rows.items():
        lines.append(f"{' / '.join(name) if isinstance(name, tuple) else name:34s}" + "".join(f"{r.get(c, float('nan')):12.3f}" for c in cols))
    return "\n".join(lines)


@pytest.mark.slow
def test_pretrained_benchmarks():
    sets = tasks()
    lad = ladder(sets); print("\n" + fmt(lad))
    assert lad[("half crops", "Lite0, ImageNet")]["P@1"] >= 0.9 and lad[("half crops", "Lite0, ImageNet")]["mAP"] >= 0.9
    assert lad[("half crops", "raw pixels")]["P@1"] <= 0.35
    sp = spatial(sets); print(fmt(sp))
    assert all(sp[k]["P@1"] >= sp["global"]["P@1"] - 1e-9 for k in sp if k != "global")
    tp = throughput(); print(tp)
    assert max(tp["pipeline, 0 workers / model"], tp["pipeline, 1 worker / model"]) >= 0.9, tp


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=4, help="hard edits per scene")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (best counts)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    sets = tasks(a.queries)
    print("ladder (GeM):\n" + fmt(ladder(sets)))
    print("\nspatial verification on details:\n" + fmt(spatial(sets)))
    tp = throughput(rounds=a.rounds)
    print("\nthroughput at batch 32 (best of rounds): " + ", ".join(f"{k} {v:.2f}" for k, v in tp.items()))
    print(f"({time.perf_counter() - t0:.0f} s in all)")
