"""cbir.losses cross-checked against pytorch-metric-learning 2.9 (values and gradients), with PML's conventions set explicitly."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from pytorch_metric_learning import distances, losses, reducers

from cbir.losses import (LOSSES, all_pairs, all_triplets, arcface_loss, as_pairs, as_triplets, contrastive_loss, make_loss,
                         margin_loss, normalized_softmax_loss, ntxent_loss, triplet_loss)

TOL = dict(atol=1e-5, rtol=1e-5)


def lp():
    "PML's default distance, spelled out: Euclidean (not squared) on L2-normalised embeddings."
    return distances.LpDistance(normalize_embeddings=True, p=2, power=1)


# ---- PML twins of our losses: (ours, PML) given the loss's keyword arguments ----------------------------------
def pml_contrastive(pos_margin=0.0, neg_margin=1.0):
    return losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, distance=lp(), reducer=reducers.AvgNonZeroReducer())

def pml_triplet(margin=0.05, soft=False):
    return losses.TripletMarginLoss(margin=margin, smooth_loss=soft, triplets_per_anchor="all", distance=lp(), reducer=reducers.AvgNonZeroReducer())

def pml_ntxent(temperature=0.07):
    return losses.NTXentLoss(temperature=temperature, distance=distances.CosineSimilarity(), reducer=reducers.MeanReducer())

PAIR_LOSSES = {  # name -> (our function, PML factory, keyword sets to try)
    "contrastive": (contrastive_loss, pml_contrastive, [{}, {"pos_margin": 0.3, "neg_margin": 0.8}]),
    "triplet": (triplet_loss, pml_triplet, [{}, {"margin": 0.3}, {"margin": 0.2, "soft": True}]),
    "ntxent": (ntxent_loss, pml_ntxent, [{}, {"temperature": 0.5}]),
}


def batch(seed, n_classes=4, per_class=4, dim=8, n_ref=0):
    "A seeded random batch (and optional reference set whose labels overlap the batch's)."
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    emb = torch.randn(len(labels), dim, generator=g)
    if not n_ref: return emb, labels, None, None
    return emb, labels, torch.randn(n_ref, dim, generator=g), torch.randint(0, n_classes + 1, (n_ref,), generator=g)


def subset(t: tuple, seed: int, frac=0.5):
    "A random subset of an indices tuple (pairs: each half sub-sampled on its own), as a miner would return."
    g = torch.Generator().manual_seed(seed)
    groups = [t] if len(t) == 3 else [t[:2], t[2:]]
    out = []
    for grp in groups:
        keep = torch.randperm(len(grp[0]), generator=g)[: max(2, int(frac * len(grp[0])))]
        out += [x[keep] for x in grp]
    return tuple(out)


def compare(ours_fn, pml_loss, emb, labels, ref_emb=None, ref_labels=None, indices=None, extra=(), **kw):
    "Run ours and PML's on clones; compare the loss and the gradients of emb, ref_emb and `extra` pairs (ours, theirs)."
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    r1 = r2 = None
    if ref_emb is not None: r1, r2 = ref_emb.clone().requires_grad_(), ref_emb.clone().requires_grad_()
    ours = ours_fn(e1, labels, ref_emb=r1, ref_labels=ref_labels, indices=indices, **kw)
    theirs = pml_loss(e2, labels, indices_tuple=indices, ref_emb=r2, ref_labels=ref_labels)
    torch.testing.assert_close(ours, theirs.reshape(ours.shape), **TOL)
    (ours + sum(x.sum() * 0 for x, _ in extra)).backward()
    theirs.sum().backward()
    torch.testing.assert_close(e1.grad, e2.grad, **TOL)
    if ref_emb is not None: torch.testing.assert_close(r1.grad, r2.grad, **TOL)
    for x, y in extra:  # PML leaves beta's gradient None when the loss is its zero; ours is a zero gradient
        torch.testing.assert_close(x.grad, torch.zeros_like(x) if y.grad is None else y.grad.reshape(x.grad.shape), **TOL)
    return ours.item()


SCENARIOS = ["random", "ref", "mined_pairs", "mined_triplets", "one_class", "singletons"]

def scenario(name, seed=0):
    "(emb, labels, ref_emb, ref_labels, indices) for one named situation."
    if name == "random": return (*batch(seed), None)
    if name == "ref": return (*batch(seed, n_classes=3, per_class=2, n_ref=10), None)
    if name == "mined_pairs":
        emb, labels, _, _ = batch(seed)
        return emb, labels, None, None, subset(all_pairs(labels), seed)
    if name == "mined_triplets":
        emb, labels, _, _ = batch(seed)
        return emb, labels, None, None, subset(all_triplets(labels), seed)
    if name == "one_class": return (*batch(seed, n_classes=1, per_class=6), None)
    if name == "singletons": return (*batch(seed, n_classes=6, per_class=1), None)
    raise KeyError(name)


@pytest.mark.parametrize("which", SCENARIOS)
@pytest.mark.parametrize("loss_name", list(PAIR_LOSSES))
def test_pair_and_triplet_losses_match_pml(loss_name, which):
    fn, pml, kwsets = PAIR_LOSSES[loss_name]
    for kw in kwsets:
        emb, labels, ref_emb, ref_labels, indices = scenario(which)
        compare(fn, pml(**kw), emb, labels, ref_emb, ref_labels, indices, **kw)


@pytest.mark.parametrize("which", SCENARIOS)
@pytest.mark.parametrize("per_class_beta", [False, True])
def test_margin_loss_matches_pml_including_beta_gradient(which, per_class_beta):
    emb, labels, ref_emb, ref_labels, indices = scenario(which)
    n_classes = int(max(labels.max(), -1 if ref_labels is None else ref_labels.max())) + 1
    theirs = losses.MarginLoss(margin=0.2, nu=0, beta=1.2, learn_beta=True, num_classes=n_classes if per_class_beta else None,
                               triplets_per_anchor="all", distance=lp(), reducer=reducers.DivisorReducer())
    if per_class_beta:
        with torch.no_grad(): theirs.beta.copy_(torch.linspace(0.9, 1.3, n_classes))
    beta = theirs.beta.detach().clone().requires_grad_()
    compare(margin_loss, theirs, emb, labels, ref_emb, ref_labels, indices, extra=[(beta, theirs.beta)], beta=beta)


def test_larger_batch_matches_pml():
    emb, labels, _, _ = batch(7, n_classes=8, per_class=4, dim=16)  # 32 rows: torch.cdist takes its matrix-product path
    compare(triplet_loss, pml_triplet(margin=0.1), emb, labels, margin=0.1)
    compare(contrastive_loss, pml_contrastive(), emb, labels)


def separated(seed=0, n_classes=3, per_class=3):
    "Each class at its own orthogonal direction, with tiny noise: every positive is near, every negative at ~sqrt(2)."
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return torch.eye(n_classes)[labels] * 5 + 0.01 * torch.randn(len(labels), n_classes, generator=g), labels


@pytest.mark.parametrize("loss_name,fn,pml,kw", [
    ("contrastive", contrastive_loss, pml_contrastive, {"pos_margin": 0.1, "neg_margin": 1.0}),
    ("triplet", triplet_loss, pml_triplet, {"margin": 0.05}),
])
def test_all_terms_zero_gives_a_backpropagating_zero_like_pml(loss_name, fn, pml, kw):
    emb, labels = separated()
    e = emb.clone().requires_grad_()
    loss, stats = fn(e, labels, return_stats=True, **kw)
    assert loss.item() == 0 and stats["active"] == 0 and stats["n_terms"] > 0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))
    assert compare(fn, pml(**kw), emb, labels, **kw) == 0


def test_margin_loss_all_terms_zero():
    emb, labels = separated()
    beta = torch.tensor([0.7], requires_grad=True)
    theirs = losses.MarginLoss(margin=0.1, beta=0.7, learn_beta=True, distance=lp())
    assert compare(margin_loss, theirs, emb, labels, extra=[(beta, theirs.beta)], beta=beta, margin=0.1) == 0


@pytest.mark.parametrize("fn", [contrastive_loss, triplet_loss, ntxent_loss])
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3], [5]])
def test_degenerate_batches(fn, labels):
    labels = torch.tensor(labels)
    emb = torch.randn(len(labels), 4, requires_grad=True)
    loss, stats = fn(emb, labels, return_stats=True)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    pml = {contrastive_loss: pml_contrastive, triplet_loss: pml_triplet, ntxent_loss: pml_ntxent}[fn]()
    torch.testing.assert_close(loss, pml(emb.detach(), labels).reshape(()), **TOL)
    if fn is not contrastive_loss: assert loss.item() == 0  # contrastive still has its positive (or negative) terms


@given(n_classes=st.integers(1, 5), per_class=st.integers(1, 4), dim=st.integers(2, 6), n_ref=st.sampled_from([0, 1, 5]),
       seed=st.integers(0, 10_000), which=st.sampled_from(["contrastive", "triplet", "soft_triplet", "margin", "ntxent"]))
@settings(max_examples=60, deadline=None)
def test_random_batches_match_pml(n_classes, per_class, dim, n_ref, seed, which):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n_classes * per_class,), generator=g)
    emb = torch.randn(len(labels), dim, generator=g)
    ref_emb = ref_labels = None
    if n_ref: ref_emb, ref_labels = torch.randn(n_ref, dim, generator=g), torch.randint(0, n_classes, (n_ref,), generator=g)
    if which in ("contrastive", "ntxent") and 0 < max(len(x) for x in all_pairs(labels, ref_labels)) <= 1:
        return  # PML's pair losses return 0 for a single pair: a documented difference, tested below
    if which == "margin":
        beta = torch.tensor([1.1], requires_grad=True)
        theirs = losses.MarginLoss(margin=0.2, beta=1.1, learn_beta=True, distance=lp())
        compare(margin_loss, theirs, emb, labels, ref_emb, ref_labels, extra=[(beta, theirs.beta)], beta=beta)
    elif which == "soft_triplet":
        compare(triplet_loss, pml_triplet(margin=0.1, soft=True), emb, labels, ref_emb, ref_labels, margin=0.1, soft=True)
    else:
        fn, pml, _ = PAIR_LOSSES[which]
        compare(fn, pml(), emb, labels, ref_emb, ref_labels)


def test_index_conversions_match_pml():
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
    emb, labels, _, _ = batch(3)
    pairs, triplets = subset(all_pairs(labels), 1), subset(all_triplets(labels), 2)
    for ours, theirs in [(as_triplets(pairs, labels), lmu.convert_to_triplets(pairs, labels)),
                         (as_pairs(triplets, labels), lmu.convert_to_pairs(triplets, labels)),
                         (all_pairs(labels), lmu.get_all_pairs_indices(labels)),
                         (all_triplets(labels), lmu.get_all_triplets_indices(labels))]:
        assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))


# ---- classification losses: PML stores W as (dim, n_classes); ours is its transpose -----------------------------
@pytest.mark.parametrize("kind,kw", [("normalized_softmax", {}), ("normalized_softmax", {"temperature": 0.5}),
                                     ("arcface", {}), ("arcface", {"margin": 10.0, "scale": 8.0}), ("arcface", {"margin": 120.0, "scale": 4.0})])
def test_classification_losses_match_pml(kind, kw):
    torch.manual_seed(0)
    n_classes, dim = 5, 8
    if kind == "arcface": theirs, fn = losses.ArcFaceLoss(n_classes, dim, distance=distances.CosineSimilarity(), **kw), arcface_loss
    else: theirs, fn = losses.NormalizedSoftmaxLoss(n_classes, dim, distance=distances.DotProductSimilarity(), **kw), normalized_softmax_loss
    weight = theirs.W.detach().T.clone().requires_grad_()
    emb, labels = torch.randn(12, dim), torch.randint(0, n_classes, (12,))
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    ours, want = fn(e1, labels, weight, **kw), theirs(e2, labels)
    torch.testing.assert_close(ours, want, **TOL)
    ours.backward(); want.backward()
    torch.testing.assert_close(e1.grad, e2.grad, **TOL)
    torch.testing.assert_close(weight.grad, theirs.W.grad.T, **TOL)


def test_arcface_obtuse_angles_use_the_monotonic_branch():
    "Embeddings opposite their class weight (theta > 180 - margin) take cos(theta) - m sin(m), like PML."
    theirs = losses.ArcFaceLoss(2, 3, margin=60.0, scale=2.0)
    weight = theirs.W.detach().T.clone()
    emb = -weight[[0, 1]] + 0.01 * torch.randn(2, 3)
    torch.testing.assert_close(arcface_loss(emb, torch.tensor([0, 1]), weight, margin=60.0, scale=2.0), theirs(emb, torch.tensor([0, 1])), **TOL)


# ---- documented differences ------------------------------------------------------------------------------------
def test_single_pair_is_a_loss_not_pml_zero():
    emb, ref_emb = torch.randn(1, 4), torch.randn(2, 4)
    labels, ref_labels = torch.tensor([0]), torch.tensor([0, 1])
    assert pml_contrastive()(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels).item() == 0  # PML's GenericPairLoss shortcut
    x, r = torch.nn.functional.normalize(emb, dim=1), torch.nn.functional.normalize(ref_emb, dim=1)
    d_pos, d_neg = (x[0] - r[0]).norm(), (x[0] - r[1]).norm()
    want = d_pos + torch.relu(1 - d_neg)
    torch.testing.assert_close(contrastive_loss(emb, labels, ref_emb, ref_labels), want, **TOL)


def test_self_pairs_kept_with_a_reference_set_even_if_labels_object_is_shared():
    emb, ref_emb, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    ours = triplet_loss(emb, labels, ref_emb, labels, margin=0.3)
    torch.testing.assert_close(ours, pml_triplet(0.3)(emb, labels, ref_emb=ref_emb, ref_labels=labels.clone()), **TOL)
    a, p, n = all_triplets(labels, labels)
    assert (a == p).any()  # image i with its own reference i is a positive pair (PML drops it when ref_labels is labels)


# ---- the module wrapper ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSSES + ("soft_triplet",))
def test_module_equals_function_and_reports_stats(name):
    emb, labels, _, _ = batch(5)
    mod = make_loss(name, n_classes=4, dim=8)
    emb = emb.clone().requires_grad_()
    loss = mod(emb, labels)
    loss.backward()
    assert loss.ndim == 0 and emb.grad is not None
    assert all(p.grad is not None for p in mod.parameters())
    stats = mod.last_stats
    if mod.needs_class_ids:
        assert math.isnan(stats["active"]) and stats["n_terms"] == len(labels) and mod.param_lr_multiplier > 1
        fn = {"normalized_softmax": normalized_softmax_loss, "arcface": arcface_loss}[name]
        torch.testing.assert_close(loss, fn(emb, labels, mod.weight))
    else:
        assert 0 <= stats["active"] <= 1 and stats["n_terms"] > 0 and mod.param_lr_multiplier == 1


def test_module_active_fraction_is_the_fraction_of_positive_terms():
    emb, labels, _, _ = batch(9)
    d = torch.cdist(torch.nn.functional.normalize(emb, dim=1), torch.nn.functional.normalize(emb, dim=1))
    a, p, n = all_triplets(labels)
    terms = torch.relu(d[a, p] - d[a, n] + 0.1)
    mod = make_loss("triplet", margin=0.1)
    torch.testing.assert_close(mod(emb, labels), terms[terms > 0].mean())
    assert mod.last_stats == {"n_terms": len(terms), "active": (terms > 0).float().mean().item()}
    a1, p1, a2, n2 = all_pairs(labels)
    pos, neg = d[a1, p1], torch.relu(1 - d[a2, n2])
    mod = make_loss("contrastive")
    mod(emb, labels)
    assert mod.last_stats == {"n_terms": len(pos) + len(neg), "active": ((pos > 0).sum() + (neg > 0).sum()).item() / (len(pos) + len(neg))}


def test_module_margin_beta_learns_and_matches_pml():
    emb, labels, _, _ = batch(2)
    mod = make_loss("margin", beta=1.0, margin=0.1)
    theirs = losses.MarginLoss(margin=0.1, beta=1.0, learn_beta=True, distance=lp())
    compare(lambda e, l, **kw: mod(e, l, kw["ref_emb"], kw["ref_labels"], kw["indices"]), theirs, emb, labels,
            extra=[(mod.beta, theirs.beta)])
    assert mod.last_stats["n_terms"] == 2 * len(all_triplets(labels)[0])


def test_module_with_reference_set_and_indices():
    emb, labels, ref_emb, ref_labels = batch(4, n_ref=12)
    idx = subset(all_triplets(labels, ref_labels), 0)
    mod = make_loss("triplet", margin=0.2)
    torch.testing.assert_close(mod(emb, labels, ref_emb, ref_labels, idx),
                               pml_triplet(0.2)(emb, labels, indices_tuple=idx, ref_emb=ref_emb, ref_labels=ref_labels), **TOL)
    assert mod.last_stats["n_terms"] == len(idx[0])


def test_float64_inputs():
    emb, labels, _, _ = batch(1)
    emb = emb.double()
    torch.testing.assert_close(triplet_loss(emb, labels), pml_triplet()(emb, labels), **TOL)
    mod = make_loss("arcface", n_classes=4, dim=8)
    assert mod(emb, labels).dtype == torch.float64
