"""Bad input to cbir.losses raises a ValueError that says what is wrong (never a shape error from inside torch)."""
import warnings

import pytest
import torch

from cbir.losses import (LOSSES, arcface_loss, as_pairs, as_triplets, contrastive_loss, make_loss, margin_loss,
                         normalized_softmax_loss, ntxent_loss, triplet_loss)

EMB, LABELS = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
W = torch.randn(3, 4)

PAIR = {"contrastive": lambda *a, **k: contrastive_loss(*a, **k),
        "triplet": lambda *a, **k: triplet_loss(*a, **k),
        "margin": lambda e, l, *a, **k: margin_loss(e, l, 1.2, *a, **k),
        "ntxent": lambda *a, **k: ntxent_loss(*a, **k),
        "normalized_softmax": lambda e, l, *a, **k: normalized_softmax_loss(e, l, W, *a, **k),
        "arcface": lambda e, l, *a, **k: arcface_loss(e, l, W, *a, **k)}

BAD_BATCHES = [  # (emb, labels, message fragment)
    (EMB[0], LABELS[:1], "must be 2-D"),
    (EMB[None], LABELS, "must be 2-D"),
    (torch.ones(6, 4, dtype=torch.long), LABELS, "must be a float tensor"),
    (EMB.numpy(), LABELS, "must be a torch.Tensor"),
    (torch.empty(0, 4), torch.empty(0, dtype=torch.long), "is empty"),
    (torch.empty(6, 0), LABELS, "is empty"),
    (EMB, LABELS[:5], "one label per row of emb (6 rows)"),
    (EMB, LABELS[None], "one label per row of emb (6 rows)"),
    (EMB, LABELS.float(), "integer class ids"),
    (EMB, ["a", "b", "c", "a", "b", "c"], "integer class ids"),
    (torch.where(torch.arange(24).reshape(6, 4) == 5, torch.nan, EMB), LABELS, "1 non-finite values (NaN or inf) in 1 of its 6 rows"),
    (torch.where(torch.arange(24).reshape(6, 4) < 8, torch.inf, EMB), LABELS, "8 non-finite values (NaN or inf) in 2 of its 6 rows"),
]


@pytest.mark.parametrize("name", list(PAIR))
@pytest.mark.parametrize("emb,labels,msg", BAD_BATCHES, ids=[b[2] for b in BAD_BATCHES])
def test_bad_batch(name, emb, labels, msg):
    with pytest.raises(ValueError) as err:
        PAIR[name](emb, labels)
    assert msg in str(err.value)


BAD_REFS = [  # (ref_emb, ref_labels, message fragment)
    (torch.randn(5, 4), None, "go together"),
    (None, torch.arange(5), "go together"),
    (torch.randn(5, 3), torch.arange(5), "dimension 3 but emb has 4"),
    (torch.randn(5, 4).double(), torch.arange(5), "ref_emb is torch.float64"),
    (torch.randn(5, 4), torch.arange(4), "one label per row of ref_emb (5 rows)"),
    (torch.full((5, 4), torch.nan), torch.arange(5), "ref_emb has 20 non-finite values"),
    (torch.randn(5), torch.arange(5), "ref_emb must be 2-D"),
]


@pytest.mark.parametrize("name", ["contrastive", "triplet", "margin", "ntxent"])
@pytest.mark.parametrize("ref_emb,ref_labels,msg", BAD_REFS, ids=[b[2] for b in BAD_REFS])
def test_bad_reference_set(name, ref_emb, ref_labels, msg):
    with pytest.raises(ValueError) as err:
        PAIR[name](EMB, LABELS, ref_emb, ref_labels)
    assert msg in str(err.value)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "margin", "ntxent"])
def test_empty_reference_set_is_a_zero_loss(name):
    emb = EMB.clone().requires_grad_()
    loss = PAIR[name](emb, LABELS, torch.empty(0, 4), torch.empty(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(emb.grad, torch.zeros_like(emb))


I = torch.tensor([0, 1])
BAD_INDICES = [
    ((I, I), "tuple of 3 tensors"),
    ([I] * 5, "tuple of 3 tensors"),
    (I, "got Tensor"),
    ((I, I, I.float()), "indices n must be a 1-D integer tensor, got torch.float32"),
    ((I, I, I[None]), "1-D integer tensor"),
    ((I, I, [0, 1]), "got list"),
    ((I, I, I > 0), "1-D integer tensor, got torch.bool"),
    ((I, I, torch.tensor([0, 6])), "indices n must lie in [0, 6) (the reference set), got values from 0 to 6"),
    ((torch.tensor([-1, 0]), I, I), "indices a must lie in [0, 6) (the batch)"),
    ((I, I, torch.tensor([0, 1, 2])), "(a, p, n) must have equal lengths"),
    ((I, I, I, torch.tensor([2])), "(a1, p) and (a2, n) must have equal lengths"),
]


@pytest.mark.parametrize("name", ["contrastive", "triplet", "margin", "ntxent"])
@pytest.mark.parametrize("indices,msg", BAD_INDICES, ids=[b[1] for b in BAD_INDICES])
def test_bad_indices(name, indices, msg):
    with pytest.raises(ValueError) as err:
        PAIR[name](EMB, LABELS, indices=indices)
    assert msg in str(err.value)


def test_indices_range_against_reference_set():
    ref_emb, ref_labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"indices p must lie in \[0, 3\)"):
        triplet_loss(EMB, LABELS, ref_emb, ref_labels, indices=(torch.tensor([5]), torch.tensor([3]), torch.tensor([1])))
    with pytest.raises(ValueError, match=r"indices a1 must lie in \[0, 6\)"):
        as_pairs((torch.tensor([6]), I[:1], I[:1], I[:1]), LABELS)
    assert len(as_triplets((torch.tensor([5]), torch.tensor([2]), torch.tensor([1])), LABELS, ref_labels)[0]) == 1


def test_margin_beta():
    with pytest.raises(ValueError, match="one value per class"):
        margin_loss(EMB, LABELS, torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"beta has one value per class \(2\).*labels must be 0..1"):
        margin_loss(EMB, LABELS, torch.ones(2))
    with pytest.raises(ValueError, match="one float or a 1-D float tensor"):
        margin_loss(EMB, LABELS, torch.tensor([1]))


@pytest.mark.parametrize("fn", [normalized_softmax_loss, arcface_loss])
def test_classification_weight_and_labels(fn):
    with pytest.raises(ValueError, match=r"PML stores its transpose"):
        fn(EMB, LABELS, W.T)  # PML's (D, n_classes) layout
    with pytest.raises(ValueError, match=r"class ids 0..2 for 3 class weights, got values from 1 to 3"):
        fn(EMB, LABELS + 1, W)
    with pytest.raises(ValueError, match=r"got values from -1"):
        fn(EMB, LABELS - 1, W)
    with pytest.raises(ValueError, match="weight has non-finite values"):
        fn(EMB, LABELS, torch.full((3, 4), torch.nan))
    with pytest.raises(ValueError, match="2-D float tensor of shape"):
        fn(EMB, LABELS, W[0])


def test_hyper_parameters():
    with pytest.raises(ValueError, match="temperature must be > 0"): ntxent_loss(EMB, LABELS, temperature=0)
    with pytest.raises(ValueError, match="temperature must be > 0"): normalized_softmax_loss(EMB, LABELS, W, temperature=-1)
    with pytest.raises(ValueError, match="scale must be > 0"): arcface_loss(EMB, LABELS, W, scale=0)
    with pytest.raises(ValueError, match=r"degrees and must be in \[0, 180\)"): arcface_loss(EMB, LABELS, W, margin=200)
    with pytest.warns(UserWarning, match="DEGREES"): arcface_loss(EMB, LABELS, W, margin=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arcface_loss(EMB, LABELS, W)  # the default 28.6 degrees: no warning


def test_make_loss_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'npair': choose one of \('contrastive'"):
        make_loss("npair")
    for name in ("normalized_softmax", "arcface"):
        with pytest.raises(ValueError, match="pass n_classes"): make_loss(name)
        with pytest.raises(ValueError, match="got dim=0"): make_loss(name, n_classes=3, dim=0)
        with pytest.raises(ValueError, match="got n_classes=2.5"): make_loss(name, n_classes=2.5, dim=4)
        mod = make_loss(name, n_classes=3, dim=4)
        with pytest.raises(ValueError, match="no ref_emb/ref_labels and no mined indices"):
            mod(EMB, LABELS, indices=(I, I, I))
        with pytest.raises(ValueError, match="no ref_emb/ref_labels"):
            mod(EMB, LABELS, EMB, LABELS)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temprature'\] for the ntxent loss: it accepts \['temperature'\]"):
        make_loss("ntxent", temprature=0.1)
    with pytest.raises(ValueError, match=r"it accepts \['margin'\] and beta"):
        make_loss("margin", soft=True)


def test_make_loss_options():
    assert make_loss("soft_triplet").kwargs == {"soft": True}
    assert make_loss("arcface", n_classes=3, dim=4, param_lr_multiplier=100).param_lr_multiplier == 100
    assert make_loss("margin", beta=0.8).beta.item() == pytest.approx(0.8)
    assert set(LOSSES) == {"contrastive", "triplet", "margin", "ntxent", "normalized_softmax", "arcface"}


def test_device_mismatch_of_module_parameters_is_clear():
    if not torch.cuda.is_available(): pytest.skip("needs a GPU")
    mod = make_loss("arcface", n_classes=3, dim=4)
    with pytest.raises(ValueError, match="move the loss module to the model's device"):
        mod(EMB.cuda(), LABELS.cuda())


@pytest.mark.parametrize("name", list(PAIR))
def test_labels_as_a_list_or_array_give_the_same_loss(name):
    "Labels may be a tensor, a NumPy array or a list (one check for losses and miners: cbir.losses.check_batch)."
    ref = PAIR[name](EMB, LABELS)
    for labels in (LABELS.tolist(), LABELS.numpy()):
        torch.testing.assert_close(PAIR[name](EMB, labels), ref)
