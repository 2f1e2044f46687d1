"""Checkpoints: round trips for the small CNN and a torchvision backbone, and a clear error for every broken file."""
import json

import numpy as np
import pytest
import torch

from cbir.embed import Embedder, load_checkpoint, save_checkpoint


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
    assert back.config["weights"] == f"checkpoint:{side['sha256'][:16]}" and back.config["checkpoint"] == str(path.resolve())
    state, _ = load_checkpoint(path)
    assert torch.equal(state["note"], torch.tensor([1.0]))


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), tmp_path / "m.pt")


def test_truncated_or_replaced_file_is_refused(ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:1000])
    with pytest.raises(ValueError, match="does not match its sidecar"): Embedder.from_checkpoint(ckpt)


def test_unreadable_file_with_matching_hash_is_refused(ckpt):
    import hashlib
    junk = b"this is not a torch file"
    ckpt.write_bytes(junk)
    side = json.loads(ckpt.with_name("m.pt.json").read_text())
    ckpt.with_name("m.pt.json").write_text(json.dumps({**side, "sha256": hashlib.sha256(junk).hexdigest(), "bytes": len(junk)}))
    with pytest.raises(ValueError, match="cannot be read by torch.load"): Embedder.from_checkpoint(ckpt)


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
    with pytest.raises(FileNotFoundError, match="needs the JSON sidecar"): Embedder.from_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match="not found"): Embedder.from_checkpoint(tmp_path / "nope.pt")


def test_embedders_that_cannot_be_rebuilt_are_refused(tmp_path):
    emb = Embedder(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), image_size=16)
    with pytest.raises(ValueError, match="cannot checkpoint"): save_checkpoint(emb, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
