"""Backbones, pooling and precision: the five named backbones, any nn.Module, GeM properties, bf16 vs fp32 agreement."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from cbir.data import make_shapes
from cbir.embed import Embedder, GeM, avg_pool, gem_pool, max_pool, topk_overlap


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(n=48, size=64, seed=1)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048), ("efficientnet_b0", 1280),
                                      ("convnext_tiny", 768), ("vit_b_16", 768)])
def test_named_backbones(name, dim, shapes):
    emb = Embedder.from_name(name, weights=None, pooling="gem", image_size=32 if name != "vit_b_16" else 48)
    assert emb.dim == dim == emb.config["dim"]
    out = emb.embed(shapes.subset(np.arange(6)), batch_size=4, progress=False)
    assert out.vectors.shape == (6, dim) and np.isfinite(out.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-4)
    assert (emb.config["pooling"] == "gem") == (name != "vit_b_16")


@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_pooling_options_and_unnormalised(pooling, shapes):
    emb = Embedder.from_name("resnet18", weights=None, pooling=pooling, image_size=32, normalize=False, precision="fp32")
    torch.manual_seed(0)
    x = torch.stack([emb.transform(shapes[i]) for i in range(3)])
    with torch.inference_mode():
        fmap = emb.trunk(x.contiguous(memory_format=torch.channels_last))
        expected = {"avg": avg_pool, "max": max_pool, "gem": lambda f: gem_pool(f, 3.0)}[pooling](fmap)
        torch.testing.assert_close(emb.encode(x), expected, atol=1e-5, rtol=1e-4)


def test_any_module_and_bad_module():
    emb = Embedder(nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU()), pooling="avg", image_size=16, precision="fp32")
    v = emb.embed_one(np.zeros((20, 20, 3), np.uint8))
    assert v.shape == (5,) and emb.config["backbone"] == "Sequential"
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) or \(B, D\)"):
        Embedder(nn.Flatten(0), image_size=16)
    with pytest.raises(ValueError, match="choose one of"):
        Embedder(nn.Conv2d(3, 4, 3), pooling="sum", image_size=16)


def test_gem_p_is_learnable():
    emb = Embedder.from_name("resnet18", weights=None, pooling="gem", image_size=32, precision="fp32")
    assert isinstance(emb.pool, GeM) and emb.pool.p.requires_grad and emb.pool.p.item() == 3.0
    emb.train()
    emb(torch.rand(2, 3, 32, 32)).sum().backward()
    assert emb.pool.p.grad is not None and torch.isfinite(emb.pool.p.grad)
    assert "pool.p" in dict(emb.named_parameters())


def test_embed_restores_training_mode_and_keeps_order(shapes):
    emb = Embedder.from_name("resnet18", weights=None, image_size=32, precision="fp32")
    emb.train()
    a = emb.embed(shapes, batch_size=8, num_workers=0, progress=False)
    assert emb.training and emb.trunk.training  # put back as it was
    emb.eval()
    b = emb.embed(shapes, batch_size=5, num_workers=2, progress=False)
    np.testing.assert_array_equal(a.ids, shapes.ids)
    np.testing.assert_array_equal(b.ids, shapes.ids)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)
    np.testing.assert_allclose(a.vectors[7], emb.embed_one(shapes[7]), atol=1e-4)


feature_maps = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(shape=feature_maps, p=st.floats(1.0, 12.0), scale=st.floats(0.01, 100.0))
def test_gem_properties(shape, p, scale):
    *dims, seed = shape
    x = torch.rand(*dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1e-3
    g = gem_pool(x, p)
    assert g.shape == tuple(dims[:2])
    assert (avg_pool(x) <= g + 1e-9).all() and (g <= max_pool(x) + 1e-9).all()  # between GAP and MAC
    torch.testing.assert_close(gem_pool(x, 1.0), avg_pool(x))  # p = 1 is GAP
    torch.testing.assert_close(gem_pool(scale * x, p), scale * g)  # positively homogeneous
    assert (gem_pool(x, p + 1.0) >= g - 1e-9).all()  # the power mean grows with p


def test_bf16_retrieval_agrees_with_fp32():
    "bf16 autocast embeddings give (almost) the same top-10 neighbours as fp32."
    shapes = make_shapes(n=200, size=64, seed=2)
    fp32 = Embedder.from_name("resnet18", weights=None, image_size=64, precision="fp32")
    bf16 = Embedder.from_name("resnet18", weights=None, image_size=64, precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    a, b = fp32.embed(shapes, progress=False), bf16.embed(shapes, progress=False)
    overlap = topk_overlap(a.vectors, b.vectors, k=10)
    assert overlap.mean() >= 0.9, overlap.mean()
    assert (a.vectors * b.vectors).sum(1).min() > 0.99  # each bf16 embedding is within ~8 degrees of its fp32 twin
    assert a.config["precision"] == "fp32" and b.config["precision"] == "bf16"


def test_projection_head():
    emb = Embedder.from_name("resnet18", weights=None, image_size=32, projection=64, precision="fp32")
    assert emb.dim == 64 == emb.config["dim"] and emb.config["projection"] == 64
    v = emb.embed_one(np.zeros((40, 40, 3), np.uint8))
    assert v.shape == (64,) and abs(np.linalg.norm(v) - 1) < 1e-5
    assert "head.weight" in dict(emb.named_parameters())  # trainable with the rest
    assert Embedder.from_name("resnet18", weights=None, image_size=32).config["projection"] is None
