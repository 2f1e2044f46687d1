"""GeM is correct for every backbone family `Embedder.from_name` accepts, including those whose maps go negative."""
import numpy as np
import pytest
import torch

from cbir.embed import Embedder, GeM, avg_pool, gem_pool, strip_classifier
from torchvision.models import get_model

SIZE = 64
# family -> does the trunk's output have negative activations (random init)?
BACKBONES = {
    "resnet18": False,            # ReLU last
    "resnet50": False,            # ReLU last
    "vgg11": False,               # ReLU, then max-pool
    "mobilenet_v3_small": True,   # hard-swish (min -0.375)
    "efficientnet_b0": True,      # SiLU (min -0.28)
    "convnext_tiny": True,        # residual add, no activation
    "densenet121": False,         # norm5 + the ReLU DenseNet's classifier applies (appended by strip_classifier)
    "swin_t": True,               # LayerNorm, permuted to (B, C, H, W)
}


def reference_gem(x: torch.Tensor, p: float) -> torch.Tensor:
    "Brute force, one channel at a time, in float64: sign(m)|m|^(1/p), m = mean(sign(x)|x|^p)."
    x = x.double()
    out = torch.empty(x.shape[:2], dtype=torch.float64)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[b, c].flatten()
            m = float(sum(np.sign(t) * abs(t) ** p for t in v.tolist()) / len(v))
            out[b, c] = np.sign(m) * abs(m) ** (1 / p)
    return out


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    return torch.randn(1, 3, SIZE, SIZE)


@pytest.fixture(scope="module", params=list(BACKBONES))
def fmap(request, probe):
    "The trunk's feature map for a small random batch, for one backbone (random init, no download)."
    torch.manual_seed(0)
    trunk = strip_classifier(get_model(request.param, weights=None).eval())
    with torch.inference_mode(): f = trunk(probe)
    # at random init some maps are tiny (efficientnet ~1e-13): rescale to max |x| = 1 (GeM is homogeneous, tested below)
    return request.param, (f / f.abs().amax()).clone()


def test_feature_map_sign(fmap):
    "NCHW map; negatives exactly where the family's last layer allows them."
    name, f = fmap
    assert f.ndim == 4 and f.shape[-1] == f.shape[-2], (name, f.shape)  # channels first (Swin permuted)
    share = (f < 0).float().mean().item()
    assert (share > 0.1) if BACKBONES[name] else (share == 0), (name, share)


def test_gem_matches_reference(fmap):
    name, f = fmap
    f = f[:, :24]  # a few channels are enough for the brute-force loop
    for p in (1.0, 3.0, 4.5):
        torch.testing.assert_close(gem_pool(f, p).double(), reference_gem(f, p), rtol=1e-4, atol=1e-5, msg=f"{name} p={p}")


def test_negative_activation_is_not_clamped_away(fmap):
    "Making the most negative activation more negative lowers the pooled value (the old clamp at eps ignored it)."
    name, f = fmap
    if not BACKBONES[name]: f = f - f.mean()  # a ReLU backbone's map, shifted so that it has negatives
    b, c, h, w = np.unravel_index(int(f.argmin()), f.shape)
    assert f[b, c, h, w] < 0
    g = f.clone(); g[b, c, h, w] -= 1.0
    assert gem_pool(g)[b, c] < gem_pool(f)[b, c] - 1e-4
    assert torch.equal(gem_pool(g)[:, :c], gem_pool(f)[:, :c])  # other channels untouched


def test_p1_is_average_pooling(fmap):
    name, f = fmap
    torch.testing.assert_close(gem_pool(f, 1.0), avg_pool(f), rtol=1e-4, atol=1e-5)


def test_large_p_is_signed_max(fmap):
    "Where one activation dominates a channel's magnitudes, GeM with a large p is that activation, with its sign."
    name, f = fmap
    flat = f.flatten(2)
    top2 = flat.abs().topk(2, dim=2).values
    signed_max = flat.gather(2, flat.abs().argmax(2, keepdim=True))[..., 0]
    clear = (top2[..., 1] < 0.9 * top2[..., 0]) & (top2[..., 0] > 1e-3)  # second largest |x| < 0.9 max: 0.9^400 ~ 5e-19
    assert clear.sum() >= 5, name
    p, n = 400.0, flat.shape[-1]
    got = gem_pool(f, p)
    torch.testing.assert_close(got[clear], signed_max[clear] * n ** (-1 / p), rtol=1e-3, atol=1e-6)


def test_gem_on_nonnegative_map_is_classic_gem(fmap):
    name, f = fmap
    f = f.clamp(min=0) + 0.01
    classic = f.pow(3.0).mean(dim=(-2, -1)).pow(1 / 3.0)
    torch.testing.assert_close(gem_pool(f, 3.0), classic, rtol=1e-4, atol=1e-6)


def test_homogeneous_and_scale_free():
    "gem_pool(k x) = k gem_pool(x) for k > 0, down to maps as small as random-init EfficientNet's (~1e-13)."
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 3)
    for k in (1e-13, 1e-6, 1e4):
        torch.testing.assert_close(gem_pool(x * k) / k, gem_pool(x), rtol=1e-4, atol=1e-6)


def test_learnable_p_gradients_finite():
    "GeM's p and the input get finite gradients, on signed maps and on an all-zero map."
    torch.manual_seed(0)
    pool = GeM()
    for x in (torch.randn(2, 5, 3, 3), torch.zeros(2, 5, 3, 3), torch.randn(2, 5, 3, 3).relu()):
        x = x.requires_grad_()
        pool.p.grad = None
        pool(x).sum().backward()
        assert torch.isfinite(pool.p.grad) and torch.isfinite(x.grad).all()
    assert torch.isfinite(gem_pool(torch.randn(1, 2, 4, 4) * 1e4, 60.0)).all()  # no overflow


def test_embedder_from_name_signed_backbone():
    "End to end through from_name (mobilenet_v3_small: hard-swish): unit vectors that depend on the negative part of the map."
    torch.manual_seed(0)
    e = Embedder.from_name("mobilenet_v3_small", weights=None, image_size=SIZE, pooling="gem", precision="fp32", device="cpu")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        v, f = e.encode(x), e._features(x)
    assert e.pools and (f < 0).any()
    torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(v, torch.nn.functional.normalize(gem_pool(f, e.pool.p.detach()), dim=1))
    torch.testing.assert_close(e(x), v)  # forward is encode


def test_densenet_trunk_has_its_relu_and_keeps_weight_names():
    model = get_model("densenet121", weights=None)
    names = set(model.state_dict())
    trunk = strip_classifier(model)
    assert "relu_out" in dict(trunk.named_children())
    assert {f"features.{k}" for k in trunk.state_dict()} <= names  # checkpoints of the trunk load as before
    assert strip_classifier(model) is trunk and list(trunk.named_children()).count(("relu_out", trunk.relu_out)) == 1


def test_vit_has_no_pooling():
    "A ViT's trunk outputs the class token: a vector, so no pooling applies (a tiny ViT keeps the test fast)."
    from torchvision.models import VisionTransformer
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    e = Embedder(strip_classifier(vit), image_size=32, device="cpu", precision="fp32")
    assert not e.pools and e.config["pooling"].startswith("none") and e.dim == 32
