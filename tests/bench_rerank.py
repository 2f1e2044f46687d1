"""Re-ranking benchmark: mAP / hit-rate gains and extra CPU time of QE, αQE, DBA and k-reciprocal re-ranking on the
embedded shapes, over several seeds; plus the speed of the vectorised k-reciprocal code against a per-item loop.

Run as a script (prints the numbers):   python tests/bench_rerank.py [--seeds 5] [--cnn]
or through pytest:                      pytest tests/bench_rerank.py -m slow -s
"""
import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from cbir.data import ImageSet, make_shapes, query_gallery_split
from cbir.embed import Embedder, PixelEmbedder
from cbir.index import Index
from cbir.metrics import relevance_from_labels, retrieval_metrics
from cbir.search import KReciprocal, QueryExpansion, Searcher, augment_database, k_reciprocal_rerank, pairwise_sq_l2
from cbir.transforms import near_duplicate_set

sys.path.insert(0, str(Path(__file__).parent))
from test_search_rerank import per_item_k_reciprocal  # noqa: E402

RERANKINGS = {"none": None, "AQE n=10": "aqe", "aQE n=10 a=3": "alpha_qe", "k-recip 20/6/0.3": "k_reciprocal",
              "k-recip 20/6/0.3 strict": KReciprocal(strict=True), "AQE n=2": QueryExpansion(2, 0.0),
              "aQE n=3 a=3": QueryExpansion(3, 3.0), "k-recip 8/3/0.3": KReciprocal(8, 3, 0.3)}


def measure(searcher, queries, query_labels, gallery_labels, rerankings, rounds=3):
    "Per re-ranking: mAP, HR@1, HR@10 of a full ranking, and its best CPU time over interleaved rounds."
    n_relevant = (gallery_labels[None, :] == query_labels[:, None]).sum(1)
    secs, ranked, out = {n: [] for n in rerankings}, {}, {}
    for _ in range(rounds):
        for name, how in rerankings.items():
            t = time.process_time()
            ranked[name] = searcher.search_embeddings(queries, k=searcher.index.ntotal, rerank=how).positions
            secs[name].append(time.process_time() - t)
    for name, pos in ranked.items():
        m = retrieval_metrics(relevance_from_labels(query_labels, gallery_labels[pos]), n_relevant, ks=(1, 10))
        out[name] = dict(mAP=m["mAP"], HR1=m["HR@1"], HR10=m["HR@10"], cpu=min(secs[name]))
    return out


def class_protocol(embedder, seed, n=600):
    data = make_shapes(n, size=64, seed=seed)
    q, g = query_gallery_split(data.labels, n_queries_per_class=5, seed=seed)
    s = Searcher.build(embedder, data.subset(g))
    queries = embedder.embed(data.subset(q), progress=False).vectors
    return measure(s, queries, data.labels[q], data.labels[g], RERANKINGS)


def duplicate_protocol(embedder, seed, n_orig=40, n_copies=4, n_distractors=400):
    data = make_shapes(n_orig + n_distractors, size=64, seed=seed)
    orig, distract = np.arange(n_orig), np.arange(n_orig, n_orig + n_distractors)
    copies, source = near_duplicate_set(data, orig, n_copies=n_copies, seed=seed)
    gallery = ImageSet(list(copies.items) + [data.items[i] for i in distract], np.zeros(len(copies) + n_distractors, int),
                       ["any"], ids=list(copies.ids) + list(data.ids[distract]))
    copy_of = np.concatenate([source, -1 - np.arange(n_distractors)])
    s = Searcher.build(embedder, gallery)
    queries = embedder.embed(data.subset(orig), progress=False).vectors
    rows = measure(s, queries, orig, copy_of, RERANKINGS)
    dba = Searcher(embedder, Index.build(augment_database(s.gallery_vectors, n=3, alpha=3.0), ids=gallery.ids,
                                         embedder_config=embedder.config), gallery)
    rows["aDBA n=3 (gallery)"] = measure(dba, queries, orig, copy_of, {"none": None})["none"]
    return rows


def summarise(title, runs):
    "Mean over seeds and mean ± std of the change against no re-ranking."
    print(f"\n{title} ({len(runs)} seeds)")
    print(f"{'re-ranking':26s} {'mAP':>6s} {'dmAP':>14s} {'HR@1':>6s} {'dHR@1':>14s} {'HR@10':>6s} {'dHR@10':>14s} {'CPU x':>6s}")
    for name in runs[0]:
        cols = []
        for key in ("mAP", "HR1", "HR10"):
            vals = np.array([r[name][key] for r in runs])
            delta = vals - np.array([r["none"][key] for r in runs])
            cols.append(f"{vals.mean():6.3f} {delta.mean():+7.3f}±{delta.std():5.3f}")
        ratio = np.median([r[name]["cpu"] / r["none"]["cpu"] for r in runs])
        print(f"{name:26s} {' '.join(cols)} {ratio:6.1f}")


def speed_of_vectorised_k_reciprocal(n_queries=50, n_gallery=550, dim=64, seed=0):
    "CPU seconds of the vectorised implementation and of the per-item loop (the authors' organisation), same input."
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_queries + n_gallery, dim))
    q, g = x[:n_queries], x[n_queries:]
    args = pairwise_sq_l2(q, g), pairwise_sq_l2(q, q), pairwise_sq_l2(g, g)
    t = time.process_time(); fast = k_reciprocal_rerank(*args, strict=True); t_fast = time.process_time() - t
    t = time.process_time(); slow = per_item_k_reciprocal(*args, strict=True); t_slow = time.process_time() - t
    assert np.allclose(fast, slow, atol=2e-5)
    return t_fast, t_slow


def main(seeds=5, cnn=False):
    faiss.omp_set_num_threads(1)
    torch.manual_seed(0)
    embedders = {"pixels 16x16": PixelEmbedder(image_size=16)}
    if cnn: embedders["resnet18 random-init GeM"] = Embedder.from_name("resnet18", weights=None, pooling="gem", image_size=64)
    results = {}
    for name, emb in embedders.items():
        start = time.perf_counter()
        summarise(f"A. shape classes, {name}", a := [class_protocol(emb, s) for s in range(seeds)])
        summarise(f"B. near duplicates (R=4 of 560), {name}", b := [duplicate_protocol(emb, s) for s in range(seeds)])
        print(f"({time.perf_counter() - start:.0f} s)")
        results[name] = (a, b)
    t_fast, t_slow = speed_of_vectorised_k_reciprocal()
    print(f"\nk-reciprocal on a pool of 600: vectorised {t_fast * 1000:.0f} ms CPU, per-item loop {t_slow * 1000:.0f} ms CPU "
          f"({t_slow / t_fast:.1f}x faster)")
    return results, t_fast, t_slow


@pytest.mark.slow
def test_rerank_benchmark():
    results, t_fast, t_slow = main(seeds=2)
    for a, b in results.values():
        for runs in (a, b):
            for r in runs:
                assert all(0 <= v["mAP"] <= 1 for v in r.values())
    assert t_fast < t_slow                                                # vectorising must pay


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cnn", action="store_true", help="also a random-init resnet18 with GeM (slower)")
    args = p.parse_args()
    main(args.seeds, args.cnn)
