"""cbir.mining miners cross-checked against pytorch-metric-learning (PML) miners, as sets of triplets.

Conventions, both sides: Euclidean distance between L2-normalised embeddings (PML's default LpDistance);
no self-pairs without a reference set, self-pairs allowed with one.
"""
import pytest
import torch
import torch.nn.functional as F

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu  # noqa: E402

from cbir.mining import (batch_hard_triplets, distance_weighted_triplets, distance_weights, hard_triplets,  # noqa: E402
                         make_miner, semi_hard_triplets)
from test_mining import KINDS, as_set, clustered_512, dist, make_batch  # noqa: E402

PML_KINDS = [k for k in KINDS if k != "memory"]  # PML has no notion of "the reference starts with the batch"


def pml_args(kind):
    emb, labels, ref, ref_labels, _ = make_batch(kind)
    return (emb, labels) if ref is None else (emb, labels, ref, ref_labels)


@pytest.mark.parametrize("kind", PML_KINDS)
def test_batch_hard_equals_pml(kind):
    args = pml_args(kind)
    ours = batch_hard_triplets(*args)
    theirs = pml_miners.BatchHardMiner()(*args)
    for x, y in zip(ours, theirs): assert torch.equal(x, y.long())  # same triplets, same order, same tie-breaking


@pytest.mark.parametrize("kind", PML_KINDS)
@pytest.mark.parametrize("margin", [0.0, 0.2, -0.1])
def test_hard_equals_pml_hard(kind, margin):
    args = pml_args(kind)
    assert as_set(hard_triplets(*args, margin=margin)) == \
        as_set(pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="hard")(*args))


def boundary_triplets(args, margin):
    "Triplets with d_an - d_ap == margin exactly (float32, as both libraries compute it)."
    d = dist(args[0], args[2] if len(args) == 4 else None)
    a, p, n = lmu.get_all_triplets_indices(*args[1::2]) if len(args) == 4 else lmu.get_all_triplets_indices(args[1])
    gap = torch.from_numpy(d)[a, n] - torch.from_numpy(d)[a, p]
    keep = gap == torch.tensor(margin, dtype=gap.dtype)
    return as_set((a[keep], p[keep], n[keep]))


@pytest.mark.parametrize("kind", PML_KINDS)
@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_semi_hard_equals_pml_except_upper_boundary(kind, margin):
    args = pml_args(kind)
    ours = as_set(semi_hard_triplets(*args, margin=margin))
    theirs = as_set(pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")(*args))
    assert ours <= theirs and theirs - ours == boundary_triplets(args, margin)


def test_semi_hard_boundary_differs_from_pml_exactly_there():
    "With margin set to one triplet's own gap, PML (<= margin) keeps it and FaceNet's definition (< margin) does not."
    args = pml_args("random")
    a, p, n = semi_hard_triplets(*args, margin=0.3)
    d = torch.from_numpy(dist(args[0]))
    t = (a[0].item(), p[0].item(), n[0].item())
    gap = float(d[t[0], t[2]] - d[t[0], t[1]])
    ours = as_set(semi_hard_triplets(*args, margin=gap))
    theirs = as_set(pml_miners.TripletMarginMiner(margin=gap, type_of_triplets="semihard")(*args))
    assert t in theirs and t not in ours
    assert theirs - ours == boundary_triplets(args, gap)


@pytest.mark.parametrize("kind", PML_KINDS)
def test_pml_all_is_hard_plus_semi_hard_plus_boundary(kind):
    "PML's type_of_triplets='all' means 'all margin-violating' = its hard + its semihard (not all triplets)."
    args = pml_args(kind)
    margin = 0.2
    theirs = as_set(pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="all")(*args))
    ours = as_set(hard_triplets(*args, margin=margin)) | as_set(semi_hard_triplets(*args, margin=margin))
    assert theirs == ours | boundary_triplets(args, margin)


@pytest.mark.parametrize("kind", PML_KINDS)
def test_all_miner_equals_pml_all_triplets(kind):
    args = pml_args(kind)
    ours = make_miner("all")(*args)
    for x, y in zip(ours, lmu.get_all_triplets_indices(*args[1::2]) if len(args) == 4 else lmu.get_all_triplets_indices(args[1])):
        assert torch.equal(x, y)
    # and TripletMarginMiner with an infinite margin keeps every triplet
    assert as_set(ours) == as_set(pml_miners.TripletMarginMiner(margin=float("inf"), type_of_triplets="all")(*args))


def pml_weights(monkeypatch, *args):
    "The (B, M) negative-sampling weights PML's DistanceWeightedMiner computes, and its triplets."
    seen = {}
    real = lmu.get_random_triplet_indices

    def spy(labels, ref_labels=None, t_per_anchor=None, weights=None):
        seen["w"] = weights.clone()
        return real(labels, ref_labels=ref_labels, t_per_anchor=t_per_anchor, weights=weights)

    monkeypatch.setattr(lmu, "get_random_triplet_indices", spy)
    out = pml_miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)(*args)
    return seen["w"], out


@pytest.mark.parametrize("kind", ["random", "mixed_singletons", "reference"])
def test_distance_weights_equal_pml_where_pml_is_finite(monkeypatch, kind):
    args = pml_args(kind)
    w_pml, _ = pml_weights(monkeypatch, *args)
    d = torch.from_numpy(dist(args[0], args[2] if len(args) == 4 else None))
    ref_labels = args[3] if len(args) == 4 else args[1]
    ours = distance_weights(d, args[0].shape[1], 0.5, 1.4, mask=args[1][:, None] != ref_labels[None])
    finite = torch.isfinite(w_pml).all(1)
    assert finite.sum() >= len(finite) // 2
    torch.testing.assert_close(ours[finite], w_pml[finite], rtol=1e-4, atol=1e-6)
    assert (ours[~finite] == 0).all()  # PML's NaN rows (0/0) are rows with nothing drawable


def test_distance_weighted_pml_underflow_vs_ours(monkeypatch):
    "512-D clustered batch: PML's global-max weights underflow to all-zero (then NaN) rows and it drops anchors."
    emb, labels = clustered_512()
    w_pml, (a_pml, _, _) = pml_weights(monkeypatch, emb, labels)
    a, p, n = distance_weighted_triplets(emb, labels, generator=torch.Generator().manual_seed(0))
    assert set(a.tolist()) == set(range(32))  # ours: every anchor has a drawable negative and gets triplets
    if w_pml.isnan().any(1).sum() == 0:
        pytest.skip("this PML version no longer produces NaN rows here")
    assert len(set(a_pml.tolist())) < 32  # the anchors PML silently loses
