"""Interactions benchmark (lesson 14_interactions): on the simulated shop (200 users, 6,000 searches, ~135,000 events),
for two seeds and two regimes (strong tastes, no taste):
  - held-out purchases: naive nDCG@10 / MRR, IPS-estimated DCG@10 and the true DCG@10, for visual-only and each
    added signal (popularity, personal ALS, personal taste, both);
  - clicks per search of each re-ranking: naive and IPS estimates against the simulator's truth;
and the re-ranking latency: 1,000 queries at K = 100 against the visual search time on flat indexes.

Run as a script (prints the numbers):   python tests/bench_interactions.py
or through pytest:                      pytest tests/bench_interactions.py -m slow -s
"""
import time

import numpy as np
import pandas as pd
import pytest

from cbir.data import make_shapes
from cbir.embed import LITE0, Embedder
from cbir.index import Index, l2_normalize
from cbir.interactions import (InteractionRerank, blend, engagement, estimate_clicks, examination_from_shuffled, implicit_als,
                               offline_metrics, popularity, rerank_sessions, taste_vectors, true_clicks)
from cbir.logs import logged_sessions, simulate_log, split_sessions
from cbir.search import Searcher


def shop():
    "The lesson's catalogue: 600 shapes embedded with EfficientNet-Lite0 at 64 px; each item's 20 nearest are shown."
    catalogue = make_shapes(600, size=64, seed=0)
    searcher = Searcher.build(Embedder.from_name(LITE0, image_size=64), catalogue)
    gallery = searcher.gallery_vectors
    return catalogue, gallery, searcher.search_embeddings(gallery, k=20, exclude=[[i] for i in catalogue.ids]).positions


def run_offline(catalogue, gallery, shown, taste: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Offline metrics per method, and click estimates per method, for one simulated log."
    log, users, truth = simulate_log(catalogue, shown, taste=taste, seed=seed)
    sessions = logged_sessions(log, users.index, catalogue.ids)
    past, future = split_sessions(sessions, 0.8)
    scores = engagement(log[log.timestamp.dt.tz_convert(None) <= past.start.max()], users.index, catalogue.ids)
    pop, (uv, iv), tv = popularity(scores), implicit_als(scores), taste_vectors(scores, gallery)
    unit = l2_normalize(gallery)
    sim = np.einsum("sld,sd->sl", unit[future.shown], unit[future.queries])
    als = dict(item_vectors=iv, user_vectors=uv[future.users])
    orders = {"visual": rerank_sessions(future, sim),
              "+ popularity": rerank_sessions(future, blend(sim, future.shown, pop, w_pop=0.3)),
              "+ personal (taste)": rerank_sessions(future, blend(sim, future.shown, item_vectors=unit,
                                                                  user_vectors=tv[future.users], w_user=1.0)),
              "+ personal (ALS)": rerank_sessions(future, blend(sim, future.shown, **als, w_user=1.0)),
              "+ both (ALS)": rerank_sessions(future, blend(sim, future.shown, pop, **als, w_pop=0.3, w_user=1.0))}
    theta = examination_from_shuffled(sessions)
    metrics = offline_metrics(future, orders, k=10, examine=theta, truth=truth)
    clicks = {}
    for name, order in orders.items():
        true, est = true_clicks(truth, future, order), estimate_clicks(future, order, theta)
        clicks[name] = dict(true=true, naive=est["naive"], ips=est["ips"], naive_error=est["naive"] / true - 1,
                            ips_error=est["ips"] / true - 1)
    return metrics, pd.DataFrame(clicks).T


def latency(n_items: int, dim: int, factors: int, one_user: bool = False, n_queries: int = 1000, k: int = 100, seed: int = 0) -> dict:
    "Seconds of a flat visual search for n_queries at k, and of re-ranking its hits (popularity + user affinity)."
    rng = np.random.default_rng(seed)
    vectors = l2_normalize(rng.normal(size=(n_items, dim)).astype(np.float32))
    queries = l2_normalize(rng.normal(size=(n_queries, dim)).astype(np.float32))
    searcher = Searcher(None, Index.build(vectors, ids=[str(i) for i in range(n_items)], kind="flat", metric="cosine"),
                        gallery_vectors=vectors)
    items = vectors if factors == dim else rng.normal(size=(n_items, factors)).astype(np.float32)
    users = rng.normal(size=(n_queries, factors)).astype(np.float32)
    if one_user: users = users[0]                                       # one user's queries (the CLI): (F,)
    pop = rng.random(n_items)
    best = {"visual": np.inf, "rerank": np.inf}
    for _ in range(3):                                                  # best of three, interleaved
        t = time.perf_counter()
        first = searcher.search_embeddings(queries, k=k, rerank="none")
        best["visual"] = min(best["visual"], time.perf_counter() - t)
        t = time.perf_counter()
        score = blend(first.distances, first.positions, pop, items, users, w_pop=0.3, w_user=1.0)
        order = np.argsort(-score, axis=1, kind="stable")
        np.take_along_axis(first.positions, order, 1)
        best["rerank"] = min(best["rerank"], time.perf_counter() - t)
    # the same through the Searcher contract (its own first-stage search included), for the record
    t = time.perf_counter()
    searcher.search_embeddings(queries, k=k, rerank=InteractionRerank(pop, items, users, w_pop=0.3, w_user=1.0, depth=k))
    return dict(items=n_items, dim=dim, factors=factors, users="one" if one_user else "one per query", visual_s=best["visual"], rerank_s=best["rerank"],
                ratio=best["rerank"] / best["visual"], through_searcher_s=time.perf_counter() - t)


def main() -> dict:
    catalogue, gallery, shown = shop()
    out = {}
    for taste in (3.0, 0.0):
        for seed in (0, 1):
            metrics, clicks = run_offline(catalogue, gallery, shown, taste, seed)
            out[(taste, seed)] = (metrics, clicks)
            print(f"\n=== taste={taste}, seed={seed}\n{metrics.round(3).to_string()}\n{clicks.round(3).to_string()}")
    rows = [latency(n, 1280, f, one) for n in (10_000, 100_000) for f in (16, 1280) for one in (False, True)]
    print("\n=== re-ranking latency, 1,000 queries at K = 100\n" + pd.DataFrame(rows).round(4).to_string(index=False))
    out["latency"] = rows
    return out


@pytest.mark.slow
def test_interactions_benchmark():
    out = main()
    for seed in (0, 1):
        m, clicks = out[(3.0, seed)]
        assert m.loc["+ personal (ALS)", "true DCG@10"] > 1.08 * m.loc["visual", "true DCG@10"]
        assert m.loc["+ personal (ALS)", "nDCG@10"] < m.loc["visual", "nDCG@10"]          # the naive metric is fooled
        assert (clicks.ips_error.abs() < 0.10).all() and (clicks.naive_error.abs() > 0.3).all()
        m0, _ = out[(0.0, seed)]
        assert m0.loc["+ personal (ALS)", "true DCG@10"] < 1.02 * m0.loc["visual", "true DCG@10"]
    for row in out["latency"]:                # ALS vectors, or one user: a small share of the search; see the note for the rest
        if row["factors"] == 16 or row["users"] == "one": assert row["ratio"] <= 0.10, row


if __name__ == "__main__":
    main()
