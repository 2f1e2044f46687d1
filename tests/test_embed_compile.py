"""`Embedder(compile=True)`: same vectors as eager, one-time cost reported, padding of short batches, training stays
eager, and the precision option is honest per CPU. Compiles a small CNN on an empty inductor cache (seconds)."""
import os
import tempfile
import warnings

import numpy as np
import pytest
import torch

from cbir.data import make_shapes
from cbir.embed import Embedder, bf16_is_fast, resolve_precision, topk_overlap


@pytest.fixture(scope="module")
def pair():
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # a fresh machine's empty cache
    torch.manual_seed(0)
    compiled = Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16, compile=True, precision="fp32")
    eager = Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16, precision="fp32")
    eager.load_state_dict(compiled.state_dict())
    return compiled, eager


def test_compiled_vectors_match_eager(pair):
    compiled, eager = pair
    images = make_shapes(n=90, size=32, seed=3)  # batches of 40: 40, 40 and a padded 10
    a, b = compiled.embed(images, batch_size=40, progress=False), eager.embed(images, batch_size=40, progress=False)
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0 and compiled._compiled_batch == 40
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)
    assert topk_overlap(a.vectors, b.vectors, k=10).mean() >= 0.99
    assert a.config == b.config  # compiling does not change what the vectors mean: no config mismatch
    np.testing.assert_allclose(compiled.embed_one(images[5]), b.vectors[5], atol=1e-4)  # batch of 1: padded, not recompiled
    assert compiled._compiled_batch == 40


def test_training_stays_eager_and_new_weights_recompile(pair):
    compiled, eager = pair
    compiled.train()
    assert compiled._compiled is None
    x = torch.randn(4, 3, 32, 32)
    loss = compiled(x).sum(); loss.backward()  # gradients flow through the eager trunk
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in compiled.parameters())
    with torch.no_grad():
        for p in compiled.parameters(): p.add_(0.01 * torch.randn_like(p))
    compiled.eval(); compiled.zero_grad()
    eager.load_state_dict(compiled.state_dict())
    imgs = make_shapes(n=8, size=32, seed=4)
    np.testing.assert_allclose(compiled.embed(imgs, batch_size=8, progress=False).vectors,
                               eager.embed(imgs, batch_size=8, progress=False).vectors, atol=1e-4)  # compiled again, new weights


def test_precision_is_honest_on_this_cpu():
    cpu = torch.device("cpu")
    native = bf16_is_fast(cpu)
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("bf16", cpu) == "bf16"
    assert any("emulated" in str(w.message) for w in caught) == (not native)
