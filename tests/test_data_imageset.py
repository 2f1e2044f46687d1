"""ImageSet: constructor validation, subset consistency, repr, lazy reading, to_folder / load_image_folder round trips."""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbir.data import ImageSet, load_image_folder, make_shapes
from cbir.reading import ImageReadError


def _set(n=6, attrs=True):
    items = [Image.new("RGB", (5, 4), (10 * i, 0, 0)) for i in range(n)]
    labels = np.arange(n) % 3
    a = np.eye(2, dtype=bool)[np.arange(n) % 2] if attrs else None
    return ImageSet(items, labels, ["a", "b", "c"], [f"x{i}" for i in range(n)], a, ["even", "odd"] if attrs else (), name="toy")


def test_fields_and_types():
    ds = _set()
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (6,)
    assert ds.ids.dtype.kind == "U" and ds.ids.tolist() == [f"x{i}" for i in range(6)]
    assert ds.attributes.dtype == np.bool_ and ds.attributes.shape == (6, 2)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 6
    assert ds[3].getpixel((0, 0)) == (30, 0, 0) and ds[np.int64(3)].mode == "RGB"
    assert ds[-1].getpixel((0, 0)) == (50, 0, 0)


def test_default_ids_use_the_name():
    ds = ImageSet([Image.new("RGB", (2, 2))] * 2, [0, 0], ["only"], name="demo")
    assert ds.ids.tolist() == ["demo-000000", "demo-000001"] and ds.attributes is None and ds.attribute_names == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=[0, 1]), "6 items but 2 labels"),
    (dict(ids=["a"] * 6), "ids must be unique"),
    (dict(ids=["a", "b"]), "6 items but 2 ids"),
    (dict(labels=[0, 1, 2, 3, 0, 0]), "labels must lie in [0, 3)"),
    (dict(labels=[-1, 1, 2, 0, 0, 0]), "labels must lie in [0, 3)"),
    (dict(classes=["a", "a", "c"]), "class names must be unique"),
    (dict(attributes=np.ones((5, 2))), "attributes must be (N=6, A)"),
    (dict(attributes=np.ones((6, 3))), "3 attribute columns but 2"),
    (dict(attribute_names=["x", "x"]), "attribute names repeated"),
    (dict(attributes=None, attribute_names=["x"]), "attribute_names given without attributes"),
])
def test_constructor_rejects_inconsistent_input(kwargs, message):
    base = dict(items=[Image.new("RGB", (2, 2))] * 6, labels=[0, 1, 2, 0, 1, 2], classes=["a", "b", "c"],
                ids=[str(i) for i in range(6)], attributes=np.zeros((6, 2)), attribute_names=["p", "q"])
    with pytest.raises(ValueError) as e:
        ImageSet(**{**base, **kwargs})
    assert message in str(e.value)


def test_subset_keeps_fields_in_step():
    ds = _set()
    idx = [5, 0, 3]
    sub = ds.subset(idx)
    assert [sub[i].getpixel((0, 0)) for i in range(3)] == [ds[i].getpixel((0, 0)) for i in idx]
    assert sub.ids.tolist() == ["x5", "x0", "x3"] and sub.labels.tolist() == [2, 0, 0]
    assert sub.classes == ds.classes and sub.name == "toy"
    assert (sub.attributes == ds.attributes[idx]).all() and sub.attribute_names == ds.attribute_names
    mask = ds.labels == 1
    assert ds.subset(mask).ids.tolist() == ds.ids[mask].tolist()
    compact = ds.subset(np.flatnonzero(ds.labels == 2), drop_unused_classes=True, name="c-only")
    assert compact.classes == ["c"] and compact.labels.tolist() == [0, 0] and compact.name == "c-only"
    assert len(ds.subset([])) == 0
    with pytest.raises(ValueError, match="boolean mask"):
        ds.subset(np.ones(3, bool))


def test_subset_does_not_alias_parent_arrays():
    ds = _set()
    sub = ds.subset(np.arange(6))
    sub.labels[0] = 2
    sub.attributes[0, 0] = False
    assert ds.labels[0] == 0 and ds.attributes[0, 0]


def test_repr_names_the_set():
    r = repr(make_shapes(24, 32, seed=0))
    assert r.startswith("ImageSet('shapes', n=24, classes=12 [circle, square,") and "attributes=11" in r


def test_paths_are_read_lazily_and_report_their_name(messy_image_folder):
    ds = ImageSet([messy_image_folder / "good/rgb.jpg", str(messy_image_folder / "odd/empty.jpg")], [0, 0], ["x"])
    assert ds.items[0] == str(messy_image_folder / "good/rgb.jpg")  # stored as str
    assert ds[0].size == (48, 32)
    with pytest.raises(ImageReadError, match="empty.jpg"):
        ds[1]


def test_dataloader_batches(tmp_path):
    ds = make_shapes(12, 32, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=lambda b: [np.asarray(im) for im in b])
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (32, 32, 3)


def test_to_folder_round_trip(tmp_path):
    ds = make_shapes(40, 32, seed=5)
    root = ds.to_folder(tmp_path / "out")
    assert root == tmp_path / "out"
    back = load_image_folder(root)
    assert back.classes == sorted(ds.classes)
    assert len(back) == len(ds)
    want = {i: (ds.classes[l], np.asarray(ds[k])) for k, (i, l) in enumerate(zip(ds.ids, ds.labels))}
    for k, id_ in enumerate(back.ids):
        cls, fname = id_.split("/")
        assert back.classes[back.labels[k]] == cls == want[fname[:-4]][0]
        assert (np.asarray(back[k]) == want[fname[:-4]][1]).all()  # PNG is lossless
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind


def test_to_folder_refuses_then_overwrites(tmp_path):
    ds = make_shapes(12, 16, seed=0)
    root = ds.to_folder(tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ds.to_folder(root)
    ds.subset([0, 1]).to_folder(root, overwrite=True)
    assert len(list(root.rglob("*.png"))) == 2  # old contents replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_to_folder_into_existing_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    make_shapes(3, 16).to_folder(tmp_path / "empty")
    assert len(list((tmp_path / "empty").rglob("*.png"))) == 3


def test_to_folder_failure_leaves_nothing(messy_image_folder, tmp_path):
    ds = load_image_folder(messy_image_folder)
    with pytest.raises(ImageReadError):
        ds.to_folder(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_to_folder_can_skip_unreadable(messy_image_folder, tmp_path):
    ds = load_image_folder(messy_image_folder)
    with pytest.warns(UserWarning, match=f"skipped {len(messy_image_folder.unreadable)} unreadable"):
        root = ds.to_folder(tmp_path / "copy", skip_unreadable=True)
    back = load_image_folder(root)
    assert len(back) == len(messy_image_folder.readable)
    assert sorted(back.ids) == sorted(Path(r).with_suffix(".png").as_posix() for r in messy_image_folder.readable)


def test_to_folder_sanitises_names(tmp_path):
    ds = ImageSet([Image.new("RGB", (2, 2))] * 3, [0, 1, 1], ["Track/Pants", "T-shirts"], ["a/b.jpg", "c/b.jpg", "../x"])
    root = ds.to_folder(tmp_path / "o")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len(names) == 3 and all(".." not in n for n in names)
    assert load_image_folder(root).classes == ["T-shirts", "Track_Pants"]


def test_load_image_folder_layouts(tmp_path):
    # CUB-like: class folders with nested sub-folders and upper-case extensions; a hidden file and stray files
    (tmp_path / "001.Albatross" / "extra").mkdir(parents=True)
    (tmp_path / "002.Auklet").mkdir()
    (tmp_path / "003.Empty").mkdir()
    Image.new("RGB", (3, 3)).save(tmp_path / "001.Albatross" / "a.JPG", "JPEG")
    Image.new("RGB", (3, 3)).save(tmp_path / "001.Albatross" / "extra" / "b.png")
    Image.new("RGB", (3, 3)).save(tmp_path / "002.Auklet" / "c.jpeg", "JPEG")
    (tmp_path / "002.Auklet" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "002.Auklet" / "labels.txt").write_text("x")
    (tmp_path / "README.md").write_text("x")
    with pytest.warns(UserWarning) as record:
        ds = load_image_folder(tmp_path, name="birds")
    msg = str(record[0].message)
    assert "1 file(s) not an image by extension" in msg and "1 file(s) outside any class folder" in msg
    assert ds.classes == ["001.Albatross", "002.Auklet"] and ds.name == "birds"
    assert ds.ids.tolist() == ["001.Albatross/a.JPG", "001.Albatross/extra/b.png", "002.Auklet/c.jpeg"]
    assert ds.labels.tolist() == [0, 0, 1] and all(os.path.isabs(p) for p in ds.items)


def test_load_image_folder_clean_folder_is_silent(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (3, 3)).save(tmp_path / "a" / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_image_folder(tmp_path)) == 1


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path)
