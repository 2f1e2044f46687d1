"""cbir.mining miners checked against brute-force loops over every (a, p, n); distance weights against a float64 loop."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbir.losses import all_triplets
from cbir.mining import (MINERS, batch_hard_triplets, distance_weighted_triplets, distance_weights, hard_triplets,
                         make_miner, semi_hard_triplets)


def dist(emb, ref=None):
    "float32 distances between L2-normalised rows (the convention under test), as numpy."
    x = F.normalize(emb, dim=1)
    return torch.cdist(x, x if ref is None else F.normalize(ref, dim=1)).numpy()


def brute(emb, labels, ref=None, ref_labels=None, keep=lambda dap, dan: True, exclude_self=False):
    "Every (a, p, n) with keep(d_ap, d_an), by plain loops over the batch and the reference set."
    d = dist(emb, ref)
    la = labels.tolist()
    lr = la if ref_labels is None else ref_labels.tolist()
    skip_self = ref is None or exclude_self
    out = set()
    for a in range(len(la)):
        for p in range(len(lr)):
            if lr[p] != la[a] or (skip_self and p == a): continue
            for n in range(len(lr)):
                if lr[n] != la[a] and keep(d[a, p], d[a, n]): out.add((a, p, n))
    return out


def as_set(idx):
    return set(zip(*(t.tolist() for t in idx)))


def make_batch(kind, seed=0):
    "(emb, labels, ref_emb, ref_labels, exclude_self) for the batch kinds every miner is checked on."
    g = torch.Generator().manual_seed(seed)
    ref = ref_labels = None
    excl = False
    if kind == "random":
        labels = torch.randint(0, 4, (20,), generator=g)
        emb = torch.randn(20, 6, generator=g)
    elif kind == "one_class":
        labels = torch.zeros(7, dtype=torch.long)
        emb = torch.randn(7, 5, generator=g)
    elif kind == "singletons":
        labels = torch.arange(6)
        emb = torch.randn(6, 5, generator=g)
    elif kind == "mixed_singletons":
        labels = torch.tensor([0, 0, 0, 1, 2, 3, 3, 4])
        emb = torch.randn(8, 4, generator=g)
    elif kind == "ties":  # duplicated rows and points on a small grid: many exactly equal distances
        base = torch.tensor([[1., 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, 1]])
        emb = base[torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, 2, 0, 1, 3])]
        labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    elif kind == "reference":  # a separate reference set, with a class the batch lacks
        labels = torch.randint(0, 3, (10,), generator=g)
        emb = torch.randn(10, 6, generator=g)
        ref_labels = torch.randint(0, 4, (25,), generator=g)
        ref = torch.randn(25, 6, generator=g)
    elif kind == "memory":  # reference = the batch itself followed by older rows (cross-batch memory)
        labels = torch.randint(0, 3, (9,), generator=g)
        emb = torch.randn(9, 6, generator=g)
        ref_labels = torch.cat([labels, torch.randint(0, 3, (15,), generator=g)])
        ref = torch.cat([emb, torch.randn(15, 6, generator=g)])
        excl = True
    else: raise KeyError(kind)
    return emb, labels, ref, ref_labels, excl


KINDS = ["random", "one_class", "singletons", "mixed_singletons", "ties", "reference", "memory"]


def test_distance_convention_float64():
    emb = torch.randn(5, 7)
    x = (emb.double() / emb.double().norm(dim=1, keepdim=True)).numpy()
    want = np.array([[math.sqrt(sum((x[i, k] - x[j, k]) ** 2 for k in range(7))) for j in range(5)] for i in range(5)])
    np.testing.assert_allclose(dist(emb), want, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_hard_vs_brute(kind):
    emb, labels, ref, ref_labels, excl = make_batch(kind)
    a, p, n = batch_hard_triplets(emb, labels, ref, ref_labels, exclude_self=excl)
    d = dist(emb, ref)
    la, lr = labels.tolist(), (labels if ref_labels is None else ref_labels).tolist()
    want = {}
    for i in range(len(la)):
        pos = [j for j in range(len(lr)) if lr[j] == la[i] and not ((ref is None or excl) and j == i)]
        neg = [j for j in range(len(lr)) if lr[j] != la[i]]
        if pos and neg:
            dp, dn = max(d[i, j] for j in pos), min(d[i, j] for j in neg)
            # ties go to the lowest index
            want[i] = (min(j for j in pos if d[i, j] == dp), min(j for j in neg if d[i, j] == dn))
    assert a.tolist() == sorted(want)
    assert [(pi, ni) for pi, ni in zip(p.tolist(), n.tolist())] == [want[i] for i in sorted(want)]
    assert a.dtype == p.dtype == n.dtype == torch.long
    if kind in ("one_class", "singletons"): assert len(a) == 0


def test_batch_hard_ties_are_real():
    "The 'ties' batch does have anchors with several farthest positives / nearest negatives, so the rule is exercised."
    emb, labels, *_ = make_batch("ties")
    d = dist(emb)
    same = (labels[:, None] == labels[None]).numpy() & ~np.eye(len(labels), dtype=bool)
    n_tied = sum(int((d[i][same[i]] == d[i][same[i]].max()).sum() > 1) for i in range(len(labels)))
    n_tied += sum(int((d[i][~same[i] & (labels != labels[i]).numpy()] == d[i][(labels != labels[i]).numpy()].min()).sum() > 1)
                  for i in range(len(labels)))
    assert n_tied >= 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
def test_semi_hard_vs_brute(kind, margin):
    emb, labels, ref, ref_labels, excl = make_batch(kind)
    got = semi_hard_triplets(emb, labels, ref, ref_labels, margin=margin, exclude_self=excl)
    want = brute(emb, labels, ref, ref_labels, lambda dap, dan: 0 < dan - dap < margin, excl)
    assert as_set(got) == want and len(got[0]) == len(want)
    if kind == "random": assert len(want) > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("margin", [0.2, 0.0, -0.1])
def test_hard_vs_brute(kind, margin):
    emb, labels, ref, ref_labels, excl = make_batch(kind)
    got = hard_triplets(emb, labels, ref, ref_labels, margin=margin, exclude_self=excl)
    want = brute(emb, labels, ref, ref_labels, lambda dap, dan: dan - dap <= margin and dan - dap <= 0, excl)
    assert as_set(got) == want and len(got[0]) == len(want)


@pytest.mark.parametrize("kind", KINDS)
def test_all_miner_vs_brute_and_losses(kind):
    emb, labels, ref, ref_labels, excl = make_batch(kind)
    got = make_miner("all")(emb, labels, ref, ref_labels, exclude_self=excl)
    assert as_set(got) == brute(emb, labels, ref, ref_labels, exclude_self=excl)
    if not excl:  # same triplets, same order as cbir.losses.all_triplets
        for g, w in zip(got, all_triplets(labels, ref_labels)): assert torch.equal(g, w)


def test_hard_includes_ties_semi_hard_excludes_them():
    "d_an == d_ap exactly: PML-hard keeps the triplet (<= 0), semi-hard does not (0 < gap)."
    emb, labels, *_ = make_batch("ties")
    d = dist(emb)
    tie = brute(emb, labels, keep=lambda dap, dan: dan == dap)
    assert tie
    assert tie <= as_set(hard_triplets(emb, labels))
    assert not tie & as_set(semi_hard_triplets(emb, labels, margin=0.5))


def test_semi_hard_upper_boundary_is_strict():
    emb, labels, *_ = make_batch("random")
    d = dist(emb)
    a, p, n = semi_hard_triplets(emb, labels, margin=0.3)
    gap = float(d[a[0], n[0]] - d[a[0], p[0]])  # float32 difference, exactly as the miner computes it
    at = as_set(semi_hard_triplets(emb, labels, margin=gap))
    assert (a[0].item(), p[0].item(), n[0].item()) not in at
    assert at == brute(emb, labels, keep=lambda dap, dan: 0 < dan - dap < gap)


def test_miners_normalise_and_ignore_scale():
    emb, labels, *_ = make_batch("random")
    scaled = emb * torch.rand(len(emb), 1) * 10 + 0  # row-wise positive scaling: same unit vectors
    for name in ("batch_hard", "semi_hard", "hard"):
        m = make_miner(name)
        assert as_set(m(emb, labels)) == as_set(m(scaled, labels))


def test_miners_do_not_track_gradients():
    emb, labels, *_ = make_batch("random")
    emb = emb.requires_grad_()
    for name in MINERS:
        for t in make_miner(name)(emb, labels): assert not t.requires_grad
    assert emb.grad is None


def test_empty_batch():
    for name in MINERS:
        out = make_miner(name)(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        assert len(out) == 3 and all(len(t) == 0 for t in out)


# ---- distance weights -------------------------------------------------------------------------------------------

def weights_loop64(d, dim, cutoff, nzc, mask):
    "Row-normalised 1/q(max(d, cutoff)) with plain float64 Python arithmetic."
    d = np.asarray(d, dtype=np.float64)
    out = np.zeros_like(d)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            if mask[i, j] and d[i, j] < nzc:
                x = max(d[i, j], cutoff)
                out[i, j] = 1.0 / (x ** (dim - 2) * (1 - x * x / 4) ** ((dim - 3) / 2))
        s = out[i].sum()
        if s > 0: out[i] /= s
    return out


@pytest.mark.parametrize("dim", [2, 3, 8, 64, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distance_weights_vs_float64_loop(dim, dtype):
    g = torch.Generator().manual_seed(dim)
    d = (torch.rand(7, 12, generator=g, dtype=torch.float64) * 1.9).to(dtype)  # below cutoff, between, beyond 1.4
    mask = torch.rand(7, 12, generator=g) < 0.7
    mask[3] = False  # a row with nothing admissible
    got = distance_weights(d, dim, 0.5, 1.4, mask=mask)
    want = weights_loop64(d.numpy(), dim, 0.5, 1.4, mask.numpy())
    assert got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-7)
    assert (got[3] == 0).all()
    s = got.sum(1)
    assert torch.allclose(s[s > 0], torch.ones_like(s[s > 0]), atol=1e-5)


def test_distance_weights_defaults_without_mask():
    d = torch.tensor([[0.1, 0.5, 1.0, 1.39, 1.4, 2.0]], dtype=torch.float64)  # float64: 1.4 is the same number on both sides
    got = distance_weights(d, 16)
    want = weights_loop64(d.numpy(), 16, 0.5, 1.4, np.ones((1, 6), bool))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-15)
    assert got[0, 0] == got[0, 1]  # clipped up to the cutoff
    assert got[0, 4] == 0 and got[0, 5] == 0  # at and beyond nonzero_loss_cutoff


def clustered_512(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(8, 512, generator=g), dim=1)
    centers[7] = F.normalize(centers[0] + 0.15 * centers[1], dim=0)
    labels = torch.arange(8).repeat_interleave(4)
    return F.normalize(centers[labels] + 0.02 * torch.randn(32, 512, generator=g), dim=1), labels


def test_distance_weights_no_underflow_high_dim():
    emb, labels = clustered_512()
    d = torch.from_numpy(dist(emb))
    neg = labels[:, None] != labels[None]
    w = distance_weights(d, 512, mask=neg)
    admissible = (neg & (d < 1.4)).any(1)
    assert admissible.sum() == 32
    assert not w.isnan().any()
    assert torch.allclose(w.sum(1), torch.ones(32), atol=1e-5)
    # the same numbers with one maximum for the whole matrix (PML's choice) do underflow: the test input is hard
    log_w = -(510) * d.clamp_min(0.5).log() - 509 / 2 * (1 - d.clamp_min(0.5) ** 2 / 4).log()
    log_w = log_w.masked_fill(~(neg & (d < 1.4)), -torch.inf)
    assert ((log_w - log_w.max()).exp().sum(1) == 0).sum() >= 10
    np.testing.assert_allclose(w.numpy(), weights_loop64(d.numpy(), 512, 0.5, 1.4, neg.numpy()), rtol=1e-3, atol=1e-6)


def test_distance_weights_antipodal_and_disabled_cutoff():
    "nonzero_loss_cutoff above 2 admits d = 2 (and float noise above it) without inf or NaN."
    x = F.normalize(torch.randn(6, 32), dim=1)
    emb = torch.cat([x, -x])
    d = torch.from_numpy(dist(emb))
    w = distance_weights(d, 32, 0.5, 3.0, mask=~torch.eye(12, dtype=torch.bool))
    assert torch.isfinite(w).all() and torch.allclose(w.sum(1), torch.ones(12), atol=1e-5)


# ---- distance-weighted sampling ---------------------------------------------------------------------------------

def test_distance_weighted_frequencies_match_weights():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    emb = torch.randn(9, 4, generator=g)
    d = torch.from_numpy(dist(emb))
    neg = labels[:, None] != labels[None]
    w = distance_weights(d, 4, mask=neg)
    counts = torch.zeros(9, 9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        a, p, n = distance_weighted_triplets(emb, labels, generator=gen)
        counts.index_put_((a, n), torch.ones(len(a)), accumulate=True)
    for i in range(9):
        total = counts[i].sum()
        if w[i].sum() == 0 or (labels == labels[i]).sum() == 1:  # no drawable negative, or no positive (class 3)
            assert total == 0
            continue
        f = counts[i] / total
        se = (w[i] * (1 - w[i]) / total).sqrt()
        assert ((f - w[i]).abs() <= 5 * se + 2e-3).all(), (i, f, w[i])


def test_distance_weighted_one_triplet_per_positive_pair_and_determinism():
    emb, labels, *_ = make_batch("random")
    d = torch.from_numpy(dist(emb))
    same = (labels[:, None] == labels[None]) & ~torch.eye(len(labels), dtype=torch.bool)
    neg = ~(labels[:, None] == labels[None])
    w = distance_weights(d, emb.shape[1], mask=neg)
    a, p, n = distance_weighted_triplets(emb, labels, generator=torch.Generator().manual_seed(3))
    drawable = {i for i in range(len(labels)) if (neg[i] & (d[i] < 1.4)).any()}
    assert as_set((a, p)) == {(i, j) for i, j in as_set(torch.where(same)) if i in drawable}
    assert len(a) == len(as_set((a, p)))
    assert (labels[a] != labels[n]).all() and (w[a, n] > 0).all() and (d[a, n] < 1.4).all()
    again = distance_weighted_triplets(emb, labels, generator=torch.Generator().manual_seed(3))
    for x, y in zip((a, p, n), again): assert torch.equal(x, y)


def test_distance_weighted_skips_anchors_without_drawable_negative():
    "Two tight clusters on opposite sides: every negative at d ~ 2 >= 1.4, so no anchor has a drawable negative."
    x = F.normalize(torch.tensor([1., 0, 0]) + 0.01 * torch.randn(4, 3), dim=1)
    emb = torch.cat([x, -x])
    labels = torch.tensor([0] * 4 + [1] * 4)
    out = distance_weighted_triplets(emb, labels)
    assert all(len(t) == 0 for t in out) and all(t.dtype == torch.long for t in out)
    # add a third class near the first: only anchors with a negative below 1.4 keep triplets
    emb = torch.cat([emb, F.normalize(torch.tensor([[1., 0.6, 0], [1., 0.7, 0]]), dim=1)])
    labels = torch.cat([labels, torch.tensor([2, 2])])
    a, p, n = distance_weighted_triplets(emb, labels)
    assert set(a.tolist()) == {0, 1, 2, 3, 8, 9}
    assert (labels[a][labels[a] == 0] != labels[n][labels[a] == 0]).all() and set(n[a < 4].tolist()) <= {8, 9}


def test_distance_weighted_high_dim_keeps_every_anchor():
    emb, labels = clustered_512()
    a, p, n = distance_weighted_triplets(emb, labels, generator=torch.Generator().manual_seed(0))
    assert set(a.tolist()) == set(range(32)) and len(a) == 32 * 3


def test_distance_weighted_reference_and_memory():
    for kind in ("reference", "memory"):
        emb, labels, ref, ref_labels, excl = make_batch(kind)
        a, p, n = distance_weighted_triplets(emb, labels, ref, ref_labels, nonzero_loss_cutoff=2.5, exclude_self=excl)
        pairs = {(i, j) for i in range(len(labels)) for j in range(len(ref_labels))
                 if ref_labels[j] == labels[i] and not (excl and i == j) and (ref_labels != labels[i]).any()}
        assert as_set((a, p)) == pairs
        assert (labels[a] != ref_labels[n]).all()


# ---- make_miner and bad input -----------------------------------------------------------------------------------

def test_make_miner_matches_functions():
    emb, labels, ref, ref_labels, _ = make_batch("reference")
    assert as_set(make_miner("batch_hard")(emb, labels, ref, ref_labels)) == as_set(batch_hard_triplets(emb, labels, ref, ref_labels))
    assert as_set(make_miner("semi_hard", margin=0.4)(emb, labels, ref, ref_labels)) == \
        as_set(semi_hard_triplets(emb, labels, ref, ref_labels, margin=0.4))
    assert as_set(make_miner("hard", margin=0.0)(emb, labels)) == as_set(hard_triplets(emb, labels, margin=0.0))
    m = make_miner("distance_weighted", generator=torch.Generator().manual_seed(0), cutoff=0.3)
    ref_out = distance_weighted_triplets(emb, labels, cutoff=0.3, generator=torch.Generator().manual_seed(0))
    for x, y in zip(m(emb, labels), ref_out): assert torch.equal(x, y)
    assert set(MINERS) == {"all", "batch_hard", "semi_hard", "hard", "distance_weighted"}


def test_make_miner_bad_names_and_kwargs():
    with pytest.raises(ValueError, match="choose one of.*batch_hard"): make_miner("batchhard")
    with pytest.raises(ValueError, match="takes no argument"): make_miner("all", margin=0.1)
    with pytest.raises(ValueError, match="takes no argument"): make_miner("semi_hard", cutoff=0.1)


@pytest.mark.parametrize("call, match", [
    (lambda: batch_hard_triplets(torch.randn(5), torch.arange(5)), "must be 2-D, shape \\(N, D\\)"),
    (lambda: batch_hard_triplets(torch.ones(5, 3, dtype=torch.long), torch.arange(5)), "must be a float tensor"),
    (lambda: batch_hard_triplets(np.ones((5, 3), np.float32), torch.arange(5)), "must be a torch.Tensor"),
    (lambda: semi_hard_triplets(torch.randn(5, 3), torch.arange(4)), "one label per row of emb"),
    (lambda: hard_triplets(torch.tensor([[0., float("nan")]] * 3), torch.arange(3)), "NaN"),
    (lambda: hard_triplets(torch.randn(4, 3), torch.arange(4), ref_emb=torch.randn(4, 3)), "together"),
    (lambda: hard_triplets(torch.randn(4, 3), torch.arange(4), ref_labels=torch.arange(4)), "together"),
    (lambda: hard_triplets(torch.randn(4, 3), torch.arange(4), torch.randn(6, 2), torch.arange(6)), "dimension 2"),
    (lambda: hard_triplets(torch.randn(4, 3), torch.arange(4), torch.randn(6, 3), torch.arange(5)), "ref_labels must be 1-D with one label per row of ref_emb"),
    (lambda: batch_hard_triplets(torch.randn(4, 3), torch.arange(4), torch.randn(6, 3), torch.arange(6) + 1, exclude_self=True),
     "first len\\(emb\\) rows"),
    (lambda: semi_hard_triplets(torch.randn(4, 3), torch.arange(4), margin=0.0), "margin must be > 0"),
    (lambda: distance_weights(torch.rand(3, 4), 1), "dim must be >= 2"),
    (lambda: distance_weights(torch.rand(3, 4), 8, cutoff=1.5), "0 < cutoff < nonzero_loss_cutoff"),
    (lambda: distance_weights(torch.rand(3, 4), 8, cutoff=0.0), "0 < cutoff"),
    (lambda: distance_weights(torch.rand(3, 4), 8, mask=torch.ones(4, 3, dtype=torch.bool)), "mask must have the shape"),
    (lambda: distance_weights(torch.tensor([[float("nan")]]), 8), "without NaN"),
    (lambda: distance_weights(torch.rand(3), 8), "\\(B, M\\)"),
    (lambda: distance_weighted_triplets(torch.randn(4, 3), torch.arange(4), nonzero_loss_cutoff=0.2), "cutoff"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match): call()


def test_labels_as_lists_and_numpy():
    emb, labels, *_ = make_batch("random")
    want = as_set(batch_hard_triplets(emb, labels))
    assert as_set(batch_hard_triplets(emb, labels.tolist())) == want
    assert as_set(batch_hard_triplets(emb, labels.numpy())) == want
