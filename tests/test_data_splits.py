"""Retrieval splits: class-disjoint train/val/test and query/gallery, as properties over many random inputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from cbir.data import ImageSet, class_disjoint_split, drop_rare_classes, query_gallery_split

_IMG = Image.new("RGB", (2, 2))


def _labelled(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    return ImageSet([_IMG] * len(labels), labels, [f"c{k}" for k in range(len(counts))], name="t")


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 6), min_size=3, max_size=25),
       fractions=st.sampled_from([(0.5, 0.25, 0.25), (0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (1 / 3, 1 / 3, 1 / 3)]),
       seed=st.integers(0, 1000))
def test_class_disjoint_split_properties(counts, fractions, seed):
    ds = _labelled(counts)
    splits = class_disjoint_split(ds, fractions, seed=seed)
    assert len(splits) == 3
    names = [set(s.classes) for s in splits]
    assert all(names) and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert names[0] | names[1] | names[2] == set(ds.classes)
    assert sorted(np.concatenate([s.ids for s in splits])) == sorted(ds.ids)
    for s in splits:  # each split's labels index its own (compact) class list, and agree with the parent
        assert set(s.labels.tolist()) == set(range(len(s.classes)))
        parent = {i: ds.classes[l] for i, l in zip(ds.ids, ds.labels)}
        assert all(parent[i] == s.classes[l] for i, l in zip(s.ids, s.labels))
    n = len(counts)
    assert abs(len(splits[0].classes) - fractions[0] * n) <= 1 + (n < 6)
    again = class_disjoint_split(ds, fractions, seed=seed)
    assert all((a.ids == b.ids).all() for a, b in zip(splits, again))  # deterministic


def test_split_names_and_other_counts():
    ds = _labelled([3] * 10)
    tr, va, te = class_disjoint_split(ds)
    assert (tr.name, va.name, te.name) == ("t-train", "t-val", "t-test")
    assert [len(s.classes) for s in (tr, va, te)] == [5, 3, 2] or [len(s.classes) for s in (tr, va, te)] == [5, 2, 3]
    two = class_disjoint_split(ds, (0.7, 0.3))
    assert [len(s.classes) for s in two] == [7, 3]
    empty_val = class_disjoint_split(ds, (0.8, 0.0, 0.2))
    assert len(empty_val[1]) == 0 and [len(s.classes) for s in empty_val] == [8, 0, 2]


def test_split_uses_only_classes_with_images():
    ds = _labelled([2, 2, 2, 2]).subset(np.r_[0:6])  # class c3 has no images left
    splits = class_disjoint_split(ds, (0.34, 0.33, 0.33))
    assert sorted(c for s in splits for c in s.classes) == ["c0", "c1", "c2"]


@pytest.mark.parametrize("fractions, message", [
    ((0.5, 0.2), "sum to 1"), ((1.2, -0.2), "non-negative"), ((), "sum to 1"), ((0.4, 0.3, 0.3), "too few")])
def test_split_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        class_disjoint_split(_labelled([2, 2]), fractions)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(2, 9), min_size=1, max_size=20), q=st.integers(1, 3), seed=st.integers(0, 99))
def test_query_gallery_properties(counts, q, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    if min(counts) < q + 1:
        with pytest.raises(ValueError, match=f"at least {q + 1} images"):
            query_gallery_split(labels, q, seed)
        return
    qi, gi = query_gallery_split(labels, q, seed)
    assert qi.dtype == gi.dtype == np.int64
    assert (np.diff(qi) > 0).all() and (np.diff(gi) > 0).all()
    assert np.array_equal(np.sort(np.r_[qi, gi]), np.arange(len(labels)))
    assert np.bincount(labels[qi], minlength=len(counts)).tolist() == [q] * len(counts)
    assert (np.bincount(labels[gi], minlength=len(counts)) >= 1).all()  # every query has something to find
    assert np.array_equal(query_gallery_split(labels, q, seed)[0], qi)


def test_query_gallery_names_offending_classes_and_fix():
    ds = _labelled([3, 1, 2, 1])
    with pytest.raises(ValueError) as e:
        query_gallery_split(ds)
    msg = str(e.value)
    assert "2 class(es) have fewer: c1 (1 image), c3 (1 image)" in msg and "drop_rare_classes(ds, 2)" in msg
    with pytest.raises(ValueError, match="c2 \\(2 images\\)"):
        query_gallery_split(ds, n_queries_per_class=2)
    with pytest.raises(ValueError, match="label 1 \\(1 image\\), label 3"):  # plain labels: named by label
        query_gallery_split(ds.labels)
    with pytest.raises(ValueError, match="n_queries_per_class must be >= 1"):
        query_gallery_split(ds.labels, 0)


def test_drop_rare_classes():
    ds = _labelled([3, 1, 2, 1])
    with pytest.warns(UserWarning, match="dropped 2 class\\(es\\) with fewer than 2 images \\(2 image\\(s\\)\\)"):
        kept = drop_rare_classes(ds, 2)
    assert kept.classes == ["c0", "c2"] and len(kept) == 5
    q, g = query_gallery_split(kept)
    assert len(q) == 2
