"""Checkpoints: round trips for the small CNN and a torchvision backbone, and a clear error for every broken file."""
import json

import numpy as np
import pytest
import torch

from cbir.checkpoints import load_checkpoint, save_checkpoint
from cbir.embed import Embedder


def changed(emb: Embedder) -> Embedder:
    with torch.no_grad():
        for p in emb.parameters(): p.add_(0.01 * torch.randn_like(p))
    return emb


@pytest.mark.parametrize("backbone,size", [("smallcnn", 32), ("resnet18", 32)])
def test_round_trip_gives_the_same_embeddings(tmp_path, backbone, size):
    torch.manual_seed(0)
    emb = changed(Embedder.from_name(backbone, weights=None, image_size=size, projection=8, precision="fp32"))
    path = save_checkpoint(emb, tmp_path / "m.pt", meta={"epoch": 3}, extra={"note": torch.tensor([1.0])})
    back = Embedder.from_checkpoint(path, precision="fp32")
    x = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    np.testing.assert_allclose(back.embed_one(x), emb.embed_one(x), atol=1e-6)
    side = json.loads((tmp_path / "m.pt.json").read_text())
    assert side["architecture"]["backbone"] == backbone and side["epoch"] == 3 and side["dim"] == 8 and "version" in side
    assert back.config["weights"] == f"checkpoint:{side['files']['pt']['sha256'][:16]}" and back.config["checkpoint"] == str(path.resolve())
    state, _ = load_checkpoint(path)
    assert torch.equal(state["note"], torch.tensor([1.0]))


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), tmp_path / "m.pt")


def weights_file(ckpt):
    "The file holding the weights: a checkpoint is a file set (the sidecar names its member)."
    return ckpt.with_name(json.loads(ckpt.with_name("m.pt.json").read_text())["files"]["pt"]["name"])


def test_saved_as_a_versioned_file_set(ckpt):
    side = json.loads(ckpt.with_name("m.pt.json").read_text())
    assert side["format"] == "cbir.checkpoint/2" and weights_file(ckpt).is_file() and not ckpt.exists()
    again = save_checkpoint(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), ckpt)
    assert sorted(p.name for p in again.parent.iterdir()) == sorted(["m.pt.json", weights_file(ckpt).name])  # the old member is gone


def test_truncated_or_replaced_file_is_refused(ckpt):
    member = weights_file(ckpt)
    member.write_bytes(member.read_bytes()[:1000])
    with pytest.raises(ValueError, match="does not match m.pt.json"): Embedder.from_checkpoint(ckpt)
    member.unlink()
    with pytest.raises(ValueError, match="which is missing"): Embedder.from_checkpoint(ckpt)


def test_unreadable_file_with_matching_hash_is_refused(ckpt):
    import hashlib
    junk, member = b"this is not a torch file", weights_file(ckpt)
    member.write_bytes(junk)
    side = json.loads(ckpt.with_name("m.pt.json").read_text())
    side["files"]["pt"].update(sha256=hashlib.sha256(junk).hexdigest(), bytes=len(junk))
    ckpt.with_name("m.pt.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="cannot be read by torch.load"): Embedder.from_checkpoint(ckpt)


def test_version_1_checkpoints_still_load(tmp_path):
    "Before file sets (cbir.checkpoint/1) the .pt sat at `path` and its hash in the sidecar: such files still load and still get checked."
    import hashlib, io
    torch.manual_seed(0)
    emb = changed(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8, precision="fp32"))
    buf = io.BytesIO(); torch.save({"model": emb.state_dict()}, buf); data = buf.getvalue()
    (tmp_path / "old.pt").write_bytes(data)
    (tmp_path / "old.pt.json").write_text(json.dumps(dict(
        format="cbir.checkpoint/1", architecture={k: emb.config.get(k) for k in ("backbone", "pooling", "image_size", "projection", "normalize")},
        dim=8, started_from=None, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), version="0.1.0")))
    back = Embedder.from_checkpoint(tmp_path / "old.pt", precision="fp32")
    x = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(back.embed_one(x), emb.embed_one(x), atol=1e-6)
    (tmp_path / "old.pt").write_bytes(data[:500])
    with pytest.raises(ValueError, match="does not match its sidecar"): Embedder.from_checkpoint(tmp_path / "old.pt")
    (tmp_path / "old.pt").unlink()
    with pytest.raises(FileNotFoundError, match="moved"): Embedder.from_checkpoint(tmp_path / "old.pt")


def test_other_architecture_is_refused(ckpt):
    side = json.loads(ckpt.with_name("m.pt.json").read_text())
    ckpt.with_name("m.pt.json").write_text(json.dumps({**side, "architecture": {**side["architecture"], "projection": 16}}))
    with pytest.raises(ValueError, match="belongs to another architecture"): Embedder.from_checkpoint(ckpt)
    ckpt.with_name("m.pt.json").write_text(json.dumps({**side, "architecture": {**side["architecture"], "backbone": "no_such_net"}}))
    with pytest.raises(ValueError, match="cannot rebuild its architecture"): Embedder.from_checkpoint(ckpt)


def test_missing_or_foreign_sidecar_is_refused(ckpt, tmp_path):
    ckpt.with_name("m.pt.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"): Embedder.from_checkpoint(ckpt)
    ckpt.with_name("m.pt.json").write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ValueError, match="not a cbir checkpoint sidecar"): Embedder.from_checkpoint(ckpt)
    ckpt.with_name("m.pt.json").unlink()
    with pytest.raises(FileNotFoundError, match="nothing was saved as a checkpoint under m.pt"): Embedder.from_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match="not found"): Embedder.from_checkpoint(tmp_path / "nope.pt")


def test_embedders_that_cannot_be_rebuilt_are_refused(tmp_path):
    emb = Embedder(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), image_size=16)
    with pytest.raises(ValueError, match="cannot checkpoint"): save_checkpoint(emb, tmp_path / "x.pt")
    assert not any(tmp_path.iterdir())
