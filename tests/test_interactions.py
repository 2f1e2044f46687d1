"""Interactions beyond the lesson: the re-rankers' ordering against a brute-force loop, the IPS estimate against its
definition, the loader on bad rows, and `cbir search --user --interactions` end to end."""
import warnings

import numpy as np
import pandas as pd
import pytest

from cbir.data import make_shapes
from cbir.embed import PixelEmbedder
from cbir.interactions import InteractionRerank, affinity, blend, engagement, estimate_clicks, popularity, true_clicks
from cbir.logs import logged_sessions, read_log, simulate_log, split_sessions, write_log
from cbir.search import Searcher


@pytest.fixture(scope="module")
def shop():
    cat = make_shapes(120, size=32, seed=3)
    searcher = Searcher.build(PixelEmbedder(16), cat)
    shown = searcher.search_embeddings(searcher.gallery_vectors, k=10, exclude=[[i] for i in cat.ids]).positions
    log, users, truth = simulate_log(cat, shown, n_users=40, sessions=20, seed=1)
    return cat, searcher, log, users, truth


def test_interaction_rerank_orders_hits_as_a_brute_force_loop(shop):
    cat, searcher, log, users, _ = shop
    rng = np.random.default_rng(0)
    pop, items, user = rng.random(len(cat)), rng.normal(size=(len(cat), 4)), rng.normal(size=4)
    q = searcher.gallery_vectors[:5]
    got = searcher.search_embeddings(q, k=7, rerank=InteractionRerank(pop, items, user, w_pop=0.7, w_user=0.4, depth=20))
    first = searcher.search_embeddings(q, k=20)
    for i in range(len(q)):
        scored = [(float(first.distances[i, j]) + 0.7 * pop[p] + 0.4 * float(items[p] @ user), j)
                  for j, p in enumerate(first.positions[i])]
        best = [first.positions[i, j] for _, j in sorted(scored, key=lambda t: (-t[0], t[1]))[:7]]
        assert list(got.positions[i]) == best
        np.testing.assert_allclose(got.distances[i], sorted((s for s, _ in scored), reverse=True)[:7], rtol=1e-5)


def test_blend_checks_its_inputs():
    sim, rows = np.zeros((1, 2)), np.array([[0, 1]])
    with pytest.raises(ValueError, match="w_pop needs popularity"): blend(sim, rows, w_pop=1.0)
    with pytest.raises(ValueError, match="w_user needs"): blend(sim, rows, w_user=1.0)
    np.testing.assert_allclose(blend(sim, rows, np.array([0.5, 1.0]), w_pop=2.0), [[1.0, 2.0]])


def test_ips_estimate_matches_its_definition_and_the_truth(shop):
    cat, _, log, users, truth = shop
    s = logged_sessions(log, users.index, cat.ids)
    order = np.argsort(-np.random.default_rng(2).random(s.shown.shape), axis=1)   # any new order of each list
    est = estimate_clicks(s, order, truth.examine)
    naive = ips = 0.0
    for i in range(len(s.users)):                                                 # the definition, one click at a time
        for logged in np.flatnonzero(s.clicks[i]):
            new = int(np.flatnonzero(order[i] == logged)[0])
            naive += truth.examine[new]; ips += truth.examine[new] / truth.examine[logged]
    assert est["naive"] == pytest.approx(naive / len(s.users)) and est["ips"] == pytest.approx(ips / len(s.users))
    true = true_clicks(truth, s, order)
    assert abs(est["ips"] / true - 1) < 0.10 < abs(est["naive"] / true - 1)


def test_sessions_rebuild_the_simulated_lists(shop):
    cat, _, log, users, _ = shop
    s = logged_sessions(log, users.index, cat.ids)
    assert s.shown.shape == (40 * 20, 10) and (s.shown >= 0).all()
    assert s.clicks.sum() == (log.event == "click").sum() and s.purchases.sum() == (log.event == "purchase").sum()
    early, late = split_sessions(s, 0.75)
    assert len(early.users) + len(late.users) == len(s.users) and early.start.max() <= late.start.min()
    assert (s.purchases <= s.clicks).all()                                       # a purchase follows a click


def test_engagement_counts_by_hand(shop):
    cat, _, log, users, _ = shop
    part = log.iloc[:400]
    w = dict(click=1.0, like=2.0, purchase=5.0, dwell=0.01)
    E = engagement(part, users.index, cat.ids, weights=w, dwell_cap=30)
    expect = np.zeros_like(E)
    for r in part.itertuples():
        if r.event == "view": continue
        v = w[r.event] + (w["dwell"] * min(r.dwell, 30) if r.event == "click" else 0)
        expect[list(users.index).index(r.user_id), list(cat.ids).index(r.item_id)] += v
    np.testing.assert_allclose(E, expect)
    assert popularity(E).max() == pytest.approx(1.0) and (popularity(E) >= 0).all()
    with pytest.warns(UserWarning, match="outside user_ids/item_ids"):
        engagement(part, users.index[:3], cat.ids)


def test_round_trip_and_bad_rows(shop, tmp_path):
    cat, _, log, _, _ = shop
    path = write_log(log.iloc[:300], tmp_path / "log.csv")
    back, report = read_log(path, item_ids=cat.ids)
    assert report.kept == 300 and not report.skipped
    gap = (back.timestamp - log.timestamp.iloc[:300].reset_index(drop=True)).abs().max()
    assert gap < pd.Timedelta("1us"), gap                                          # written to the microsecond
    assert (back[["user_id", "item_id", "session"]] == log.iloc[:300][["user_id", "item_id", "session"]].reset_index(drop=True)).all().all()
    text = path.read_text().splitlines()
    text.append(text[1].replace(str(log.item_id.iloc[0]), "missing.jpg"))
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    with pytest.warns(UserWarning, match="1 unknown item"):
        _, report = read_log(tmp_path / "bad.csv", item_ids=cat.ids)
    assert report.kept == 300 and report.examples["unknown item"] == [302]


def test_cli_search_for_a_user(tmp_path, capsys):
    """`cbir search IDX QUERY --user U --interactions LOG`: the items the user engaged with rise; bad rows are reported."""
    from cbir.cli import main
    folder = make_shapes(n=36, size=32, seed=4).to_folder(tmp_path / "imgs")
    assert main(["index", str(folder), "--out", str(tmp_path / "idx"), "--backbone", "pixels", "--image-size", "16"]) == 0
    query = sorted((folder / "star").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(query), "-k", "36"]) == 0
    plain = [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]]
    liked = plain[-3:]                                                             # the three least similar images
    rows = [dict(user_id="ann", item_id=i, event=e, timestamp="2026-03-01T10:00:00Z", dwell=30 if e == "click" else "")
            for i in liked for e in ("click", "purchase")]
    rows.append(dict(user_id="ann", item_id="nowhere.png", event="click", timestamp="2026-03-01T10:00:00Z", dwell=3))
    pd.DataFrame(rows).to_csv(tmp_path / "log.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["search", str(tmp_path / "idx"), str(query), "-k", "36", "--user", "ann",
                     "--interactions", str(tmp_path / "log.csv"), "--w-pop", "0", "--w-user", "2"]) == 0
    assert not [w for w in caught if "skipped" in str(w.message)]                # printed once, in the report, not warned too
    out = capsys.readouterr().out
    assert "6 of 7 rows kept, 1 skipped: 1 unknown item" in out and "blended score" in out
    mine = [line.split()[2] for line in out.splitlines()[2:]]
    assert sorted(mine) == sorted(plain) and max(mine.index(i) for i in liked) < min(plain.index(i) for i in liked)
    assert main(["search", str(tmp_path / "idx"), str(query), "--user", "ann"]) == 2
    assert "--user and --interactions go together" in capsys.readouterr().err


def test_affinity_paths_agree_with_a_loop():
    rng = np.random.default_rng(5)
    items, rows = rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 50, (300, 7))
    users = rng.normal(size=(300, 6)).astype(np.float32)
    loop = np.array([[items[r] @ users[q] for r in rows[q]] for q in range(300)])
    np.testing.assert_allclose(affinity(items, users, rows), loop, rtol=1e-5, atol=1e-5)        # one user per query, chunked
    one = np.array([[items[r] @ users[0] for r in row] for row in rows])
    np.testing.assert_allclose(affinity(items, users[0], rows), one, rtol=1e-5, atol=1e-5)      # one user: a catalogue pass
    np.testing.assert_allclose(affinity(items, users[0], rows[:2]), [[items[r] @ users[0] for r in row] for row in rows[:2]],
                               rtol=1e-5, atol=1e-5)                                             # one user: a gather
    with pytest.raises(ValueError, match="3 user vectors for 300 queries"): affinity(items, users[:3], rows)
