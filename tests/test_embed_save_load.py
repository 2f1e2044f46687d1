"""Saving and loading embeddings: round trip, JSON sidecar, no pickle, atomic writes, mismatches refused naming both sides."""
import json
import os

import numpy as np
import pytest

import cbir.embed as embed_mod
from cbir.embed import Embedder, Embeddings, PixelEmbedder


def make(n=5, d=4, **config):
    rng = np.random.default_rng(0)
    cfg = dict(backbone="resnet18", weights=None, pooling="gem", image_size=64, dim=d, normalize=True, version="0.1.0") | config
    return Embeddings(rng.normal(size=(n, d)), [f"img/{i}.jpg" for i in range(n)], cfg, [("bad.jpg", "empty file (0 bytes)")])


def test_round_trip(tmp_path):
    e = make()
    p = e.save(tmp_path / "sub" / "emb.npz")
    back = Embeddings.load(p, expect=e.config)
    np.testing.assert_array_equal(back.vectors, e.vectors)
    np.testing.assert_array_equal(back.ids, e.ids)
    assert back.config == e.config and back.failed == e.failed
    assert back.vectors.dtype == np.float32 and back.vectors.flags.c_contiguous


def test_files_are_plain_numpy_and_json(tmp_path):
    p = make().save(tmp_path / "emb.npz")
    meta = json.loads((tmp_path / "emb.npz.json").read_text())
    with np.load(tmp_path / meta["files"]["npz"]["name"], allow_pickle=False) as z:  # would raise if anything needed pickle
        assert z["ids"].dtype.kind == "U" and z["vectors"].dtype == np.float32
    assert {"backbone", "weights", "pooling", "image_size", "dim", "version"} <= set(meta["config"])
    assert meta["n"] == 5


@pytest.mark.parametrize("key,value", [("backbone", "resnet50"), ("pooling", "avg"), ("image_size", 224),
                                       ("dim", 8), ("weights", "ResNet18_Weights.IMAGENET1K_V1"), ("normalize", False)])
def test_mismatch_names_both_sides(tmp_path, key, value):
    e = make()
    p = e.save(tmp_path / "emb.npz")
    with pytest.raises(ValueError) as err:
        Embeddings.load(p, expect=e.config | {key: value})
    msg = str(err.value)
    assert f"{key}={e.config[key]!r}" in msg and f"{key}={value!r}" in msg and str(p) in msg


def test_expect_an_embedder(tmp_path):
    pix = PixelEmbedder(image_size=4)
    e = pix.embed([np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8) * 200], progress=False)
    p = e.save(tmp_path / "pix.npz")
    assert len(Embeddings.load(p, expect=pix)) == 2
    cnn = Embedder.from_name("resnet18", weights=None, image_size=32)
    with pytest.raises(ValueError, match="backbone='pixels'.*backbone='resnet18'"):
        Embeddings.load(p, expect=cnn)


def test_precision_and_version_do_not_block_loading(tmp_path):
    p = make(precision="bf16", version="0.0.1").save(tmp_path / "e.npz")
    assert len(Embeddings.load(p, expect=make(precision="fp32").config)) == 5


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    p = make(n=3).save(tmp_path / "emb.npz")
    files_before = sorted(os.listdir(tmp_path))
    before = [(tmp_path / f).read_bytes() for f in files_before]

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(embed_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        make(n=7).save(p)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == files_before  # the old set, and no temp file left behind
    assert [(tmp_path / f).read_bytes() for f in files_before] == before
    assert len(Embeddings.load(p)) == 3


def test_missing_or_foreign_sidecar(tmp_path):
    np.savez(tmp_path / "raw.npz", vectors=np.zeros((2, 2), np.float32), ids=np.array(["a", "b"]))
    with pytest.raises(FileNotFoundError, match="sidecar"):
        Embeddings.load(tmp_path / "raw.npz")
    p = make(n=3).save(tmp_path / "a.npz")
    make(n=4).save(tmp_path / "b.npz")
    os.replace(tmp_path / "b.npz.json", tmp_path / "a.npz.json")
    with pytest.raises(ValueError, match="belongs to another saved set"):
        Embeddings.load(p)


def test_embeddings_validate_shapes():
    with pytest.raises(ValueError, match=r"\(N, D\) vectors and N ids"):
        Embeddings(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match=r"\(N, D\) vectors"):
        Embeddings(np.zeros(3), ["a", "b", "c"])
    e = Embeddings(np.asfortranarray(np.ones((3, 2))), np.array([1, 2, 3]))
    assert e.vectors.flags.c_contiguous and e.vectors.dtype == np.float32 and e.ids.dtype.kind == "U"
