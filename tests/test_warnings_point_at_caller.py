"""Every warning from cbir names the caller's line (the first frame outside the package), not a line inside cbir.

`cbir.core.warn_caller` walks up the stack past the package's own frames; these tests call the installed package from
here, at different depths of calls inside it, and check the warning's file and line are this file's.
"""
import inspect
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cbir
from cbir.core import warn_caller
from cbir.data import ImageSet, drop_rare_classes, load_image_folder
from cbir.embed import Embedder, bf16_is_fast
from cbir.mining import PKSampler


def assert_here(w, n=1):
    assert len(w) == n, [str(x.message) for x in w]
    for x in w: assert x.filename == __file__, (x.filename, str(x.message))


def test_direct_call_points_here():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        warn_caller("plain"); line = inspect.currentframe().f_lineno
    assert_here(w)
    assert w[0].lineno == line and w[0].category is UserWarning


def test_category_is_kept():
    with pytest.warns(RuntimeWarning, match="custom") as w:
        warn_caller("custom", RuntimeWarning)
    assert w[0].filename == __file__


def test_data_warning_points_here():
    tiny = ImageSet([Image.new("RGB", (4, 4))] * 3, np.array([0, 0, 1]), ["a", "b"], name="tiny")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        drop_rare_classes(tiny, min_count=2); line = inspect.currentframe().f_lineno
    assert_here(w)
    assert w[0].lineno == line and "dropped 1 class" in str(w[0].message)


def test_folder_skip_warning_points_here(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "ok.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load_image_folder(tmp_path)
    assert len(ds) == 1
    assert_here(w)


def test_nested_embed_warning_points_here(tmp_path):
    "Embedder.embed -> its loader -> _warn: several cbir frames deep, still this file."
    good = tmp_path / "good.png"; Image.new("RGB", (16, 16), "red").save(good)
    bad = tmp_path / "bad.png"; bad.write_bytes(b"not a png")
    ds = ImageSet([str(good), str(bad)], [0, 0], ["x"])
    emb = Embedder.from_name("smallcnn", weights=None, image_size=32)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = emb.embed(ds, progress=False); line = inspect.currentframe().f_lineno
    assert len(out.failed) == 1
    assert_here(w)
    assert w[0].lineno == line and "unreadable" in str(w[0].message)


def test_mining_warning_points_here():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        PKSampler(np.array([0, 0, 0, 0, 1, 2, 2, 2]), p=2, k=3)
    assert_here(w)
    assert "fewer than k=3" in str(w[0].message)


@pytest.mark.skipif(bf16_is_fast(torch.device("cpu")), reason="this CPU runs bf16 natively: no warning to check")
def test_emulated_bf16_warning_points_here():
    "The warning that was attributed to embed.py's `return cls(...)` line before."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Embedder.from_name("smallcnn", weights=None, image_size=32, precision="bf16")
    assert_here(w)
    assert "emulated" in str(w[0].message)


def test_no_warning_call_bypasses_warn():
    "Every warnings.warn in the package sets a stacklevel: warn_caller's own, or an explicit one (metrics, losses)."
    import pathlib
    for f in pathlib.Path(cbir.__file__).parent.glob("*.py"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if "warnings.warn(" in line:
                assert "stacklevel=" in line, f"{f.name}:{n} warns from inside cbir; use cbir.core.warn_caller: {line.strip()}"
