"""load_attribute_file: CelebA-style attribute files, offline on miniature copies."""
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from cbir.data import query_gallery_split
from cbir.datasets import load_attribute_file


def _write(tmp_path, n=6, names=("Smiling", "Male", "Blond_Hair"), extra_lines=(), count_line=True):
    rng = np.random.default_rng(0)
    values = rng.choice(["1", "-1"], size=(n, len(names)))
    lines = ([str(n + len(extra_lines))] if count_line else []) + ["  ".join(names)]
    for k in range(n):
        Image.new("RGB", (8, 10), (k * 30, 0, 0)).save(tmp_path / f"{k:06d}.jpg")
        lines.append(f"{k:06d}.jpg " + " ".join(f"{v:>2}" for v in values[k]))
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join([*lines, *extra_lines]) + "\n")
    (tmp_path / "identity_CelebA.txt").write_text("".join(f"{k:06d}.jpg {k % 3 + 1}\n" for k in range(n)))
    return values == "1"


def _load(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_attribute_file(*args, **kw)
    return ds, [str(w.message) for w in caught if "load_attribute_file" in str(w.message)]


def test_reads_attributes_and_identities(tmp_path):
    truth = _write(tmp_path)
    ds, messages = _load(tmp_path / "list_attr_celeba.txt", identity_file=tmp_path / "identity_CelebA.txt")
    assert messages == [] and ds.skipped == {}
    assert ds.attribute_names == ["Smiling", "Male", "Blond_Hair"]
    assert np.array_equal(ds.attributes, truth)
    assert ds.classes == ["1", "2", "3"] and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds[2].size == (8, 10)
    q, g = query_gallery_split(ds)
    assert len(q) == 3


def test_without_identity_file_one_class(tmp_path):
    _write(tmp_path, count_line=False)
    ds, _ = _load(tmp_path / "list_attr_celeba.txt")
    assert ds.classes == ["all"] and (ds.labels == 0).all() and len(ds) == 6


def test_bad_rows_skipped_counted_reported(tmp_path):
    _write(tmp_path, extra_lines=["000001.jpg 1 1 1", "bad.jpg 1 1", "odd.jpg 1 2 1", "000099.jpg 1 1 1"])
    ds, messages = _load(tmp_path / "list_attr_celeba.txt", identity_file=tmp_path / "identity_CelebA.txt")
    assert len(ds) == 6
    assert ds.skipped == {"rows with a repeated file name": 1, "rows malformed": 2, "rows whose image file is missing": 1}
    assert len(messages) == 1 and "2 row(s) malformed (first at line 10)" in messages[0]


def test_images_without_identity_are_reported(tmp_path):
    _write(tmp_path)
    (tmp_path / "identity_CelebA.txt").write_text("000000.jpg 5\n")
    ds, messages = _load(tmp_path / "list_attr_celeba.txt", identity_file=tmp_path / "identity_CelebA.txt")
    assert len(ds) == 1 and ds.skipped == {"rows with no identity": 5} and "5 row(s) with no identity" in messages[0]


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("3\n")
    with pytest.raises(ValueError, match="no attribute-name line"):
        load_attribute_file(tmp_path / "a.txt")


@pytest.mark.slow
def test_scales_linearly(tmp_path):
    names = [f"a{j}" for j in range(40)]
    n = 20000
    lines = [str(n), " ".join(names)] + [f"{k:06d}.jpg " + " ".join(["1"] * 40) for k in range(n)]
    (tmp_path / "list.txt").write_text("\n".join(lines))
    (tmp_path / "img").mkdir()
    t0 = time.perf_counter()
    ds, messages = _load(tmp_path / "list.txt", images_dir=tmp_path / "img")
    assert len(ds) == 0 and ds.skipped == {"rows whose image file is missing": n}
    assert time.perf_counter() - t0 < 30  # a quadratic scan would take minutes
