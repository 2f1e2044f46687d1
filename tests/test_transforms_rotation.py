"""Rotated near-duplicates carry no artificial cue: the corners a rotation turns into view are filled from the image."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cbir.data import make_shapes
from cbir.transforms import RandomRotationReflect, augment, near_duplicate_set

COLOUR = (200, 120, 40)


@pytest.mark.parametrize("angle", [-45, -15, 3, 15, 30, 90, 170])
@pytest.mark.parametrize("size", [(64, 48), (48, 64), (33, 33)])
def test_uniform_image_stays_uniform(angle, size):
    "A rotated uniform-colour image keeps that colour everywhere, corners included, and its size."
    img = Image.new("RGB", size, COLOUR)
    out = RandomRotationReflect((angle, angle))(img)
    assert out.size == img.size
    arr = np.asarray(out)
    for corner in (arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]):
        np.testing.assert_array_equal(corner, COLOUR)
    np.testing.assert_array_equal(np.unique(arr.reshape(-1, 3), axis=0), [COLOUR])


def test_constant_fill_leaves_black_corners():
    "The old behaviour, kept behind rotation_fill=0, really did paint the corners (what the fix removes)."
    img = Image.new("RGB", (64, 64), COLOUR)
    out = v2.RandomRotation((30, 30), interpolation=v2.InterpolationMode.BILINEAR)(img)
    np.testing.assert_array_equal(np.asarray(out)[0, 0], (0, 0, 0))


def test_tensor_input_uint8_and_float():
    "Works on uint8 and float tensors (what `augment` passes it), size unchanged, uniform stays uniform."
    for x in (torch.full((3, 40, 56), 7, dtype=torch.uint8), torch.full((3, 40, 56), 0.25)):
        out = RandomRotationReflect((25, 25))(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        torch.testing.assert_close(out, x)


@pytest.mark.parametrize("fill", ["reflect", 0])
def test_augment_keeps_size_and_is_seeded(fill):
    "augment() keeps the size, and the same torch seed gives the same image."
    img = make_shapes(n=4, size=64, seed=0)[1]
    aug = augment(rotation_fill=fill)
    torch.manual_seed(3); a = np.asarray(aug(img))
    torch.manual_seed(3); b = np.asarray(aug(img))
    torch.manual_seed(4); c = np.asarray(aug(img))
    assert a.shape == np.asarray(img).shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_same_angle_as_random_rotation():
    "With the same seed the reflecting rotation draws the same angle as v2.RandomRotation (only the corners differ)."
    img = make_shapes(n=2, size=64, seed=0)[0]
    torch.manual_seed(5); p_new = RandomRotationReflect(15).make_params([img])
    torch.manual_seed(5); p_old = v2.RandomRotation(15).make_params([img])
    assert p_new == p_old


def test_rotation_only_copies_have_image_corners():
    "Rotation-only near duplicates of a uniform image keep its colour in the corners (default augment)."
    from cbir.data import ImageSet
    ds = ImageSet(items=[Image.new("RGB", (48, 48), COLOUR)] * 3, labels=np.zeros(3, int), classes=["flat"])
    copies, src = near_duplicate_set(ds, [0, 1, 2], n_copies=2, seed=0, transform=augment(0, 20, 0, 0, 0, 0))
    for im in copies.items:
        np.testing.assert_array_equal(np.unique(np.asarray(im).reshape(-1, 3), axis=0), [COLOUR])
    again, _ = near_duplicate_set(ds, [0, 1, 2], n_copies=2, seed=0, transform=augment(0, 20, 0, 0, 0, 0))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(copies.items, again.items))
