"""cbir.transforms beyond the notebook: every supported backbone's preset, the image_size override, augmentations
and the near-duplicate protocol (determinism, ids, labels, global RNG untouched)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights

from cbir.data import make_shapes
from cbir.transforms import augment, eval_transform, near_duplicate_set, preset_of, resolve_weights

BACKBONES = ["resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"]


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(n=40, size=96, seed=3)


@pytest.mark.parametrize("name", BACKBONES)
def test_eval_transform_matches_torchvision_preset(name, shapes):
    preset = get_model_weights(name).DEFAULT.transforms()
    ours = eval_transform(name)
    assert ours.transforms[0].size == list(preset.resize_size)
    assert ours.transforms[-1].mean == list(preset.mean) and ours.transforms[-1].std == list(preset.std)
    for i in range(3):
        torch.testing.assert_close(ours(shapes[i]), preset(shapes[i]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,weights", [("resnet50", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2"),
                                          ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")])
def test_each_weights_member_brings_its_own_preset(name, weights):
    w = resolve_weights(name, weights)
    p = preset_of(w)
    assert (p["resize_size"], p["crop_size"]) == (w.transforms().resize_size[0], w.transforms().crop_size[0])
    assert eval_transform(w)(Image.new("RGB", (500, 300))).shape[-1] == w.transforms().crop_size[0]


def test_resnet50_v1_and_v2_differ():
    "The two ResNet-50 weights were trained with different recipes: 256 vs 232 resize (why we never hard-code)."
    assert preset_of(resolve_weights("resnet50", "IMAGENET1K_V1"))["resize_size"] == 256
    assert preset_of(resolve_weights("resnet50", "IMAGENET1K_V2"))["resize_size"] == 232


@pytest.mark.parametrize("size", [32, 64, 96])
def test_image_size_override_keeps_ratio(size):
    tf = eval_transform("resnet18", image_size=size)
    assert tf.transforms[0].size == [round(size * 256 / 224)]
    assert tf(Image.new("RGB", (300, 200))).shape == (3, size, size)
    assert tf(Image.new("RGB", (1, 1))).shape == (3, size, size)  # even a 1x1 image


def test_augment_is_pil_to_pil_and_each_step_can_be_switched_off(shapes):
    img = shapes[0]
    for kwargs in [dict(), dict(flip=1.0, rotation=0, blur=0, noise=0, brightness=0, contrast=0)]:
        out = augment(**kwargs)(img)
        assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == img.size
    flipped = augment(flip=1.0, rotation=0, blur=0, noise=0, brightness=0, contrast=0)(img)
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])


def test_near_duplicates_are_deterministic_and_leave_global_rng_alone(shapes):
    torch.manual_seed(123); expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, src_a = near_duplicate_set(shapes, [1, 2, 3], n_copies=4, seed=7)
    assert torch.equal(torch.rand(1), expected_next)  # global torch RNG not consumed
    b, src_b = near_duplicate_set(shapes, [1, 2, 3], n_copies=4, seed=7)
    np.testing.assert_array_equal(src_a, src_b)
    for x, y in zip(a.items, b.items): np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the copies of one source are different from each other and from the original
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(shapes[1]))


def test_near_duplicate_fields(shapes):
    q = np.array([4, 0, 9])
    dups, src = near_duplicate_set(shapes, q, n_copies=2, seed=0)
    assert src.dtype == np.int64 and list(src) == [4, 4, 0, 0, 9, 9]
    assert list(dups.ids) == [f"{shapes.ids[i]}#dup{k}" for i in q for k in range(2)]
    np.testing.assert_array_equal(dups.labels, shapes.labels[src])
    np.testing.assert_array_equal(dups.attributes, shapes.attributes[src])
    assert dups.classes == shapes.classes and dups.attribute_names == shapes.attribute_names
    assert all(dups[i].size == shapes[int(s)].size for i, s in enumerate(src))
    # copies can be concatenated with their originals: ids never collide
    assert not set(dups.ids) & set(shapes.ids)


def test_near_duplicate_bad_input(shapes):
    with pytest.raises(ValueError, match="n_copies"): near_duplicate_set(shapes, [0], n_copies=0)
    with pytest.raises(IndexError): near_duplicate_set(shapes, [len(shapes)], n_copies=1)


def test_resolve_weights_errors():
    with pytest.raises(ValueError, match="choose one of"): resolve_weights("resnet50", "IMAGENET1K_V3")
    with pytest.raises(ValueError, match="unknown torchvision model"): resolve_weights("resnet1000")
