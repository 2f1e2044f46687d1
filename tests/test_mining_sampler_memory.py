"""cbir.mining: PKSampler (P classes x K images) and CrossBatchMemory (FIFO reference set)."""
import warnings
from collections import Counter, deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbir.losses import all_pairs, all_triplets
from cbir.mining import CrossBatchMemory, PKSampler, batch_hard_triplets, make_miner, semi_hard_triplets
from test_mining import as_set, brute


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PKSampler(*args, **kwargs)


# ---- PKSampler --------------------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), [8, 5, 3, 1, 6, 2, 9, 4, 4, 7])  # classes 2, 3 and 5 have fewer than k=4 images


def test_batches_are_p_distinct_classes_times_k():
    s = quiet(LABELS, p=3, k=4, n_batches=40, seed=1)
    members = {c: set(np.flatnonzero(LABELS == c)) for c in range(10)}
    for b in s:
        assert len(b) == 12 and all(isinstance(i, int) for i in b)
        groups = np.array(b).reshape(3, 4)
        classes = [LABELS[g[0]] for g in groups]
        assert len(set(classes)) == 3
        for c, g in zip(classes, groups):
            assert set(g) <= members[c]
            if len(members[c]) >= 4: assert len(set(g)) == 4  # without replacement when the class is big enough
            else: assert len(set(g)) <= len(members[c])  # with replacement otherwise


def test_small_classes_drawn_with_replacement_and_warned_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = PKSampler(LABELS, p=10, k=4, n_batches=3)
        batches = [b for _ in range(2) for b in s]
    assert len(caught) == 1 and "3 of 10 classes" in str(caught[0].message) and "replacement" in str(caught[0].message)
    single = np.flatnonzero(LABELS == 3)[0]
    for b in batches:
        assert b.count(single) == 4  # the one-image class fills its K slots with that image


def test_no_warning_when_every_class_has_k_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(PKSampler(np.repeat(np.arange(5), 4), p=2, k=4))


def test_warning_counts_classes_below_k():
    with pytest.warns(UserWarning, match="1 of 10 classes have fewer than k=2"):
        PKSampler(LABELS, p=2, k=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=11, k=2), "only 10 classes"),
    (dict(p=0, k=2), "p \\(classes per batch\\) must be >= 1"),
    (dict(p=2, k=1), "k \\(images per class\\) must be >= 2"),
    (dict(p=2, k=2, n_batches=0), "n_batches must be >= 1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match): quiet(LABELS, **kwargs)


@pytest.mark.parametrize("labels", [np.zeros((3, 3)), np.array([]), []])
def test_bad_labels(labels):
    with pytest.raises(ValueError, match="non-empty 1-D"): PKSampler(labels, p=1, k=2)


def test_len():
    assert len(quiet(LABELS, p=2, k=4)) == len(LABELS) // 8
    assert len(quiet(LABELS, p=10, k=8)) == 1  # fewer images than one batch: still one batch
    s = quiet(LABELS, p=2, k=4, n_batches=7)
    assert len(s) == 7 and len(list(s)) == 7


@pytest.mark.parametrize("p, n_batches", [(3, 10), (4, 7), (10, 2), (1, 23)])
def test_classes_visited_equally_within_an_epoch(p, n_batches):
    s = quiet(LABELS, p=p, k=2, n_batches=n_batches, seed=p)
    for _ in range(3):
        visits = Counter(int(LABELS[b[0]]) for batch in s for b in np.array(batch).reshape(p, 2))
        counts = [visits.get(c, 0) for c in range(10)]
        assert sum(counts) == p * n_batches and max(counts) - min(counts) <= 1


def test_classes_visited_about_equally_across_epochs():
    s = quiet(LABELS, p=3, k=2, n_batches=3, seed=0)  # 9 visits per epoch over 10 classes
    visits = Counter(int(LABELS[i]) for _ in range(200) for batch in s for i in batch[::2])
    counts = np.array([visits[c] for c in range(10)])
    assert counts.sum() == 200 * 9 and counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


def test_deterministic_by_seed_and_new_order_each_epoch():
    a, b = quiet(LABELS, 3, 2, seed=5), quiet(LABELS, 3, 2, seed=5)
    ea = [list(a) for _ in range(3)]
    assert ea == [list(b) for _ in range(3)]
    assert ea[0] != ea[1] != ea[2]
    assert list(quiet(LABELS, 3, 2, seed=6)) != ea[0]
    a.epoch = 1
    assert list(a) == ea[1]  # resuming at an epoch replays it


def test_labels_as_tensor_and_strings():
    t = quiet(torch.as_tensor(LABELS), 3, 2, seed=0)
    n = quiet(LABELS, 3, 2, seed=0)
    assert list(t) == list(n)
    names = np.array([f"class-{c}" for c in LABELS])
    s = quiet(names, 3, 2, seed=0)
    for batch in s: assert len({names[i] for i in batch}) == 3


def test_dataloader_batch_sampler():
    ds = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.as_tensor(LABELS))
    dl = torch.utils.data.DataLoader(ds, batch_sampler=quiet(LABELS, p=4, k=3, seed=0))
    batches = list(dl)
    assert len(batches) == len(LABELS) // 12
    for idx, lab in batches:
        assert idx.shape == (12,) and torch.equal(lab, torch.as_tensor(LABELS)[idx])
        assert len(set(lab.tolist())) == 4


# ---- CrossBatchMemory -------------------------------------------------------------------------------------------

def test_fifo_against_deque():
    g = torch.Generator().manual_seed(0)
    mem, ref = CrossBatchMemory(size=13, dim=3), deque(maxlen=13)
    assert len(mem) == 0 and mem.embeddings.shape == (0, 3) and mem.labels.shape == (0,)
    for step, b in enumerate([4, 5, 1, 9, 20, 3, 13, 2]):
        emb, labels = torch.randn(b, 3, generator=g), torch.randint(0, 100, (b,), generator=g)
        mem.add(emb, labels)
        ref.extend(zip(emb, labels))
        assert len(mem) == len(ref)
        assert torch.equal(mem.embeddings, torch.stack([e for e, _ in ref]))
        assert torch.equal(mem.labels, torch.stack([l for _, l in ref]))


def test_add_detaches_and_keeps_dtype():
    mem = CrossBatchMemory(4, 2)
    emb = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    mem.add(emb * 2, torch.tensor([1, 2, 3], dtype=torch.int32))
    assert not mem.embeddings.requires_grad and mem.embeddings.dtype == torch.float64
    assert mem.labels.dtype == torch.int32 and mem.labels.tolist() == [1, 2, 3]
    assert "filled=3" in repr(mem)


@pytest.mark.parametrize("call, match", [
    (lambda: CrossBatchMemory(0, 4), "size and dim must be >= 1"),
    (lambda: CrossBatchMemory(4, 0), "size and dim must be >= 1"),
    (lambda: CrossBatchMemory(4, 3).add(torch.randn(2, 4), torch.arange(2)), "3-d embeddings"),
    (lambda: CrossBatchMemory(4, 3).add(torch.randn(2, 3), torch.arange(3)), "one label per row of emb"),
    (lambda: CrossBatchMemory(4, 3).reference(torch.randn(2, 4), torch.arange(2)), "3-d embeddings"),
    (lambda: CrossBatchMemory(4, 3).reference(torch.randn(2, 3), torch.arange(2), lambda *a, **k: (torch.arange(2),) * 2),
     "expected \\(a, p, n\\)"),
])
def test_memory_bad_input(call, match):
    with pytest.raises(ValueError, match=match): call()


def steps(miner, seed=0, n_steps=3, b=8, size=12, dim=5):
    "Run reference() for a few steps; yield (emb, labels, memory-before, result) per step."
    g = torch.Generator().manual_seed(seed)
    mem = CrossBatchMemory(size, dim)
    for _ in range(n_steps):
        emb, labels = torch.randn(b, dim, generator=g), torch.randint(0, 3, (b,), generator=g)
        before = (mem.embeddings.clone(), mem.labels.clone())
        out = mem.reference(emb, labels, miner)
        yield emb, labels, before, out, mem


def test_reference_all_triplets_vs_brute():
    for emb, labels, (m_emb, m_lab), (ref_emb, ref_labels, idx), mem in steps(None):
        assert torch.equal(ref_emb, torch.cat([emb, m_emb])) and torch.equal(ref_labels, torch.cat([labels, m_lab]))
        assert as_set(idx) == brute(emb, labels, ref_emb, ref_labels, exclude_self=True)
        assert torch.equal(mem.embeddings[-len(emb):], emb)  # enqueued after mining


def test_reference_with_our_miners_equals_exclude_self_call():
    for name in ("batch_hard", "semi_hard", "hard"):
        miner = make_miner(name)
        for emb, labels, _, (ref_emb, ref_labels, idx), _ in steps(miner, seed=1):
            want = miner(emb, labels, ref_emb, ref_labels, exclude_self=True)
            assert as_set(idx) == as_set(want) and (idx[0] != idx[1]).all()


def test_batch_hard_with_duplicates_never_loses_an_anchor_to_itself():
    "Two identical images of a class in a batch: the anchor's farthest other positive is its duplicate at d = 0."
    emb = F.normalize(torch.tensor([[1., 0], [1., 0], [0, 1], [0.1, 1], [-1, 0.2]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    mem = CrossBatchMemory(10, 2)
    _, _, (a, p, n) = mem.reference(emb, labels, make_miner("batch_hard"))
    assert a.tolist() == [0, 1, 2, 3] and p.tolist()[:2] == [1, 0]


def test_reference_with_foreign_miners_removes_self_pairs():
    triplet_miner = lambda e, l, r, rl: all_triplets(l, rl)  # takes no exclude_self: filtered afterwards
    for emb, labels, _, (ref_emb, ref_labels, idx), _ in steps(triplet_miner):
        assert as_set(idx) == brute(emb, labels, ref_emb, ref_labels, exclude_self=True)
    pair_miner = lambda e, l, r, rl: all_pairs(l, rl)
    for emb, labels, _, (ref_emb, ref_labels, (a1, p, a2, n)), _ in steps(pair_miner):
        b = len(labels)
        assert set(zip(a1.tolist(), p.tolist())) == {(i, j) for i in range(b) for j in range(len(ref_labels))
                                                    if ref_labels[j] == labels[i] and i != j}
        assert len(a2) == int((labels[:, None] != ref_labels[None]).sum())


def test_gradients_flow_through_the_batch_part_only():
    mem = CrossBatchMemory(16, 4)
    mem.add(torch.randn(6, 4), torch.arange(6) % 3)
    emb = torch.randn(5, 4, requires_grad=True)
    labels = torch.arange(5) % 3
    ref_emb, ref_labels, idx = mem.reference(emb, labels, make_miner("all"))
    b = len(emb)
    assert ref_emb.requires_grad and not mem.embeddings.requires_grad
    (ref_emb[b:] ** 2).sum().backward(retain_graph=True)  # memory rows: no path back to emb
    assert emb.grad is None or (emb.grad == 0).all()
    emb.grad = None
    (ref_emb[:b] * 3).sum().backward()  # batch rows: they are emb
    assert torch.equal(emb.grad, torch.full_like(emb, 3.0))


def test_triplet_loss_gradient_matches_loss_on_detached_memory():
    "A loss on (emb, ref_emb, idx) has the gradient of the same loss with memory rows as constants."
    g = torch.Generator().manual_seed(4)
    mem = CrossBatchMemory(32, 6)
    mem.add(torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g))
    const = mem.embeddings.clone()
    x = torch.randn(8, 6, generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    emb = x.clone().requires_grad_()
    ref_emb, _, (a, p, n) = mem.reference(emb, labels, make_miner("semi_hard", margin=0.5))
    assert len(a) > 0
    loss = lambda e, r: F.relu((e[a] - r[p]).norm(dim=1) - (e[a] - r[n]).norm(dim=1) + 0.5).mean()
    loss(emb, ref_emb).backward()
    x2 = x.clone().requires_grad_()
    loss(x2, torch.cat([x2, const])).backward()
    torch.testing.assert_close(emb.grad, x2.grad)


def test_memory_miner_uses_older_batches():
    "A negative that only the memory holds is found by batch-hard through reference()."
    mem = CrossBatchMemory(8, 2)
    mem.add(F.normalize(torch.tensor([[1., 0.05]]), dim=1), torch.tensor([7]))  # class 7, close to the anchor
    emb = F.normalize(torch.tensor([[1., 0], [0.9, 0.3], [-1, 0], [-0.9, -0.3]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    ref_emb, ref_labels, (a, p, n) = mem.reference(emb, labels, batch_hard_triplets)
    assert n[0].item() == 4 and ref_labels[4].item() == 7
    assert len(mem) == 5
