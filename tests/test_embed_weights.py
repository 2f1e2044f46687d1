"""Pretrained weights offline: the real torchvision loading path runs against a seeded $TORCH_HOME (nothing is
mocked and nothing is downloaded); missing weights give an error naming the file, where to put it, and the URL."""
import os

import pytest
import torch
import torchvision

from cbir.embed import Embedder
from cbir.weights import WeightsUnavailableError, load_backbone, weights_available, weights_path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def seed_resnet18(torch_home) -> dict:
    "Write a resnet18 state dict with a recognisable tweak where torchvision looks for the DEFAULT weights."
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    state["layer4.1.bn2.bias"] = torch.arange(512, dtype=torch.float32)
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_missing_weights_error_names_file_path_and_url(torch_home):
    assert not weights_available("resnet18", "DEFAULT")
    assert weights_available("resnet18", None)
    with pytest.raises(WeightsUnavailableError) as e:
        Embedder.from_name("resnet18", weights="DEFAULT", download=False)
    msg = str(e.value)
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth" in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "weights=None" in msg


def test_weights_path_follows_torch_home(torch_home):
    assert weights_path("resnet50", "IMAGENET1K_V2") == torch_home / "hub/checkpoints/resnet50-11ad3fa6.pth"
    assert weights_path("efficientnet_b0") == torch_home / "hub/checkpoints/efficientnet_b0_rwightman-7f5810bc.pth"
    assert weights_path("resnet18", None) is None


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_seeded_weights_are_loaded_by_the_real_path(torch_home, weights):
    state = seed_resnet18(torch_home)
    assert weights_available("resnet18", weights)
    emb = Embedder.from_name("resnet18", weights=weights, pooling="avg", image_size=32, download=False, precision="fp32")
    trunk_state = emb.trunk.state_dict()
    assert torch.equal(trunk_state["0.weight"], state["conv1.weight"])  # conv1 is the trunk's first child
    assert torch.equal(trunk_state["7.1.bn2.bias"], state["layer4.1.bn2.bias"])  # layer4 is the 8th
    assert emb.config["weights"] == "ResNet18_Weights.IMAGENET1K_V1"  # DEFAULT is recorded by its real name
    assert not any(k.startswith("fc.") for k in trunk_state)  # classifier gone


def test_load_backbone_matches_torchvision(torch_home):
    state = seed_resnet18(torch_home)
    model = load_backbone("resnet18", "DEFAULT", download=False)
    ref = torchvision.models.resnet18()
    ref.load_state_dict(state)
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    assert not model.training


def test_random_init_needs_no_file(torch_home):
    emb = Embedder.from_name("resnet18", weights=None, image_size=32)
    assert emb.config["weights"] is None and not any(torch_home.rglob("*.pth"))
