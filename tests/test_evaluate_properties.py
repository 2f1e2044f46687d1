"""Property tests (hypothesis) for the protocols of `cbir.evaluate`."""
import warnings

import numpy as np
from hypothesis import given, settings, strategies as st

from cbir.evaluate import evaluate
from cbir.metrics import NoRelevantWarning

SEEDS = st.integers(0, 2**32 - 1)


def data(seed, n_queries=8, n_gallery=30, n_classes=3, dim=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_queries, dim)).astype(np.float32), rng.normal(size=(n_gallery, dim)).astype(np.float32),
            rng.integers(0, n_classes, n_queries), rng.integers(0, n_classes, n_gallery), rng)


def quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRelevantWarning)
        return fn()


@settings(max_examples=12, deadline=None)
@given(SEEDS)
def test_gallery_order_does_not_matter_without_ties(seed):
    q, g, ql, gl, rng = data(seed)
    perm = rng.permutation(len(g))
    a = quiet(lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, ks=(1, 5), no_relevant="zero"))
    b = quiet(lambda: evaluate(q, g[perm], query_labels=ql, gallery_labels=gl[perm], ks=(1, 5), no_relevant="zero"))
    for name, value in a.metrics.items():
        assert abs(value - b.metrics[name]) < 1e-9, name
    assert (perm[b.positions] == a.positions).all()  # the same items in the same order


@settings(max_examples=12, deadline=None)
@given(SEEDS)
def test_leave_one_out_equals_removing_the_query_by_id(seed):
    _, g, _, gl, _ = data(seed)
    ids = np.array([f"x{i}" for i in range(len(g))])
    loo = quiet(lambda: evaluate(g, query_labels=gl, ks=(1, 5), no_relevant="zero"))
    by_id = quiet(lambda: evaluate(g, g, query_labels=gl, gallery_labels=gl, query_ids=ids, gallery_ids=ids, ks=(1, 5),
                                   no_relevant="zero"))
    assert (loo.positions == by_id.positions).all() and (loo.n_relevant == by_id.n_relevant).all()
    assert loo.metrics == by_id.metrics


@settings(max_examples=12, deadline=None)
@given(SEEDS)
def test_junk_among_the_non_relevant_never_lowers_a_query_score(seed):
    q, g, ql, gl, rng = data(seed)
    junk = [set(j for j in rng.choice(len(g), 6, replace=False).tolist() if gl[j] != ql[i]) for i in range(len(q))]
    plain = quiet(lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, ks=(1, 5, 10)))
    cleaned = quiet(lambda: evaluate(q, g, query_labels=ql, gallery_labels=gl, ks=(1, 5, 10), junk=junk))
    assert (plain.n_relevant == cleaned.n_relevant).all()  # junk was not relevant: R is unchanged
    for name in ("P@1", "P@5", "R@10", "HR@5", "mAP", "MRR", "nDCG@10", "MAP@R"):
        assert (cleaned.per_query[name] >= plain.per_query[name] - 1e-12).all(), name
