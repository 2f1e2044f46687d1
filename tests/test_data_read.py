"""Bad input for read_image: every readable file comes back RGB and upright, every unreadable one raises ImageReadError."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cbir.data import load_image_folder
from cbir.reading import ImageReadError, read_image
from conftest import png_header_claiming


def test_fixture_lists_every_file(messy_image_folder):
    on_disk = sorted(p.relative_to(messy_image_folder.root).as_posix()
                     for p in messy_image_folder.root.rglob("*") if p.is_file())
    assert on_disk == messy_image_folder.all_files
    assert not set(messy_image_folder.readable) & set(messy_image_folder.unreadable)


def test_every_readable_file_is_rgb_with_expected_size(messy_image_folder):
    for rel, size in messy_image_folder.readable.items():
        im = read_image(messy_image_folder / rel)
        assert (im.mode, im.size) == ("RGB", size), rel


@pytest.mark.parametrize("as_path", [str, lambda p: p])
def test_every_unreadable_file_raises_with_name_and_reason(messy_image_folder, as_path):
    for rel, reason in messy_image_folder.unreadable.items():
        with pytest.raises(ImageReadError) as e:
            read_image(as_path(messy_image_folder / rel))
        assert rel.split("/")[-1] in str(e.value), str(e.value)
        assert reason in str(e.value), str(e.value)
        assert isinstance(e.value, ValueError)


def test_unreadable_bytes_raise_image_read_error(messy_image_folder):
    for rel in messy_image_folder.unreadable:
        with pytest.raises(ImageReadError):
            read_image((messy_image_folder / rel).read_bytes())


def test_truncated_jpeg_is_not_silently_padded(messy_image_folder):
    from PIL import ImageFile
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(messy_image_folder / "odd/truncated.jpg")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never flipped globally


def test_exif_rotation_applied(messy_image_folder):
    im = np.asarray(read_image(messy_image_folder / "good/exif_rotated.jpg")).astype(int)
    assert im.shape == (40, 20, 3)
    top, bottom = im[5, 10], im[34, 10]
    assert top[0] > 200 and top[2] < 60, top        # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue at the bottom


def test_grayscale_becomes_equal_channels(messy_image_folder):
    im = np.asarray(read_image(messy_image_folder / "good/gray_L.png"))
    src = np.asarray(Image.open(messy_image_folder / "good/gray_L.png"))
    assert (im[..., 0] == src).all() and (im[..., 1] == src).all() and (im[..., 2] == src).all()


def test_rgba_alpha_composited_on_white(messy_image_folder):
    im = np.asarray(read_image(messy_image_folder / "odd/rgba.png"))
    assert tuple(im[4, 2]) == (255, 0, 0)
    assert tuple(im[4, 12]) == (255, 255, 255)


def test_palette_with_transparency(messy_image_folder):
    im = np.asarray(read_image(messy_image_folder / "odd/palette_P.png"))
    assert tuple(im[4, 2]) == (0, 128, 0)
    assert tuple(im[4, 12]) == (255, 255, 255)  # the transparent index is white, not black


def test_16bit_is_scaled_not_clipped(messy_image_folder):
    assert Image.open(messy_image_folder / "odd/gray16.png").mode == "I;16"
    row = np.asarray(read_image(messy_image_folder / "odd/gray16.png"))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    assert abs(row[32] - 130) <= 3  # 65535 * 32/63 / 257 ~= 129.5; clipping would give 255
    assert len(np.unique(row)) > 50


def test_cmyk_converted(messy_image_folder):
    im = np.asarray(read_image(messy_image_folder / "odd/cmyk.jpg")).astype(int)
    assert np.abs(im[8, 12] - [0, 255, 255]).max() <= 8


def test_one_pixel_image(messy_image_folder):
    im = read_image(messy_image_folder / "good/tiny_1x1.png")
    assert im.size == (1, 1) and im.getpixel((0, 0)) == (10, 200, 30)


def test_decompression_bomb_default_guard(messy_image_folder):
    with pytest.raises(ImageReadError, match="too large"):
        read_image(messy_image_folder / "odd/bomb.png")
    # under PIL's own hard limit (2x MAX_IMAGE_PIXELS) but over read_image's default: read_image's own guard fires
    # (PIL also warns about it: read_image does not touch the global warning filters, which are not thread-safe)
    with pytest.raises(ImageReadError, match="max_pixels=89,478,485"), pytest.warns(Image.DecompressionBombWarning):
        read_image(png_header_claiming(10_000, 10_000))


def test_max_pixels_is_configurable(messy_image_folder):
    path = messy_image_folder / "good/rgb.jpg"
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path, max_pixels=48 * 32 - 1)
    assert read_image(path, max_pixels=48 * 32).size == (48, 32)
    assert read_image(path, max_pixels=None).size == (48, 32)


def test_missing_file_and_folder():
    with pytest.raises(ImageReadError, match="file not found"):
        read_image("/no/such/image.jpg")


def test_folder_path_is_not_a_file(tmp_path):
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)


def test_nothing_but_image_read_error_escapes_for_random_bytes():
    rng = np.random.default_rng(0)
    good = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(good, "PNG")
    data = good.getvalue()
    for cut in [8, 20, 40, len(data) // 2, len(data) - 30]:  # (cutting only the end marker leaves all pixels: readable)
        with pytest.raises(ImageReadError):
            read_image(data[:cut])
    for _ in range(20):
        noisy = bytearray(data)
        noisy[40:60] = rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
        try:
            read_image(bytes(noisy))
        except ImageReadError:
            pass


@pytest.mark.parametrize("array, expected", [
    (np.full((4, 5), 7, np.uint8), (7, 7, 7)),
    (np.full((4, 5, 1), 7, np.uint8), (7, 7, 7)),
    (np.full((4, 5, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
    (np.dstack([np.full((4, 5, 3), 9, np.uint8), np.full((4, 5), 255, np.uint8)]), (9, 9, 9)),
    (np.full((4, 5, 3), 0.5), (128, 128, 128)),
    (np.full((4, 5), 1.0, np.float32), (255, 255, 255)),
    (np.full((4, 5), 65535, np.uint16), (255, 255, 255)),
    (np.full((4, 5), 257 * 10, ">u2"), (10, 10, 10)),  # big-endian 16-bit
    (np.ones((4, 5), bool), (255, 255, 255)),
])
def test_arrays(array, expected):
    im = read_image(array)
    assert (im.mode, im.size, im.getpixel((0, 0))) == ("RGB", (5, 4), expected)


@pytest.mark.parametrize("array, message", [
    (np.full((4, 5, 3), 2.0), "must lie in [0, 1]"),
    (np.full((4, 5, 3), -0.1), "must lie in [0, 1]"),
    (np.full((4, 5), np.nan), "must lie in [0, 1]"),
    (np.zeros(5, np.uint8), "expected HxW"),
    (np.zeros((1, 4, 5, 3), np.uint8), "expected HxW"),
    (np.zeros((4, 5, 2), np.uint8), "expected HxW"),
    (np.zeros((3, 4, 5), np.uint8), "channels first"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 5), np.int64), "dtype int64"),
])
def test_bad_arrays(array, message):
    with pytest.raises(ImageReadError) as e:
        read_image(array)
    assert message in str(e.value)


def test_tensors():
    t = torch.zeros(3, 4, 5)
    t[0] = 1.0
    im = read_image(t)
    assert im.size == (5, 4) and im.getpixel((0, 0)) == (255, 0, 0)
    assert read_image(torch.full((4, 5), 200, dtype=torch.uint8)).getpixel((1, 1)) == (200, 200, 200)
    assert read_image(torch.zeros(1, 4, 5)).size == (5, 4)
    with pytest.raises(ImageReadError, match="not a batch"):
        read_image(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ImageReadError, match="C in 1, 3, 4"):
        read_image(torch.zeros(2, 4, 5))
    assert read_image(torch.ones(3, 4, 5, dtype=torch.bfloat16)).getpixel((0, 0)) == (255, 255, 255)
    assert read_image(torch.ones(3, 4, 5, dtype=torch.float16, requires_grad=True)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageReadError, match="dtype int64"):
        read_image(torch.zeros(3, 4, 5, dtype=torch.int64))
    with pytest.raises(ImageReadError, match=r"must lie in \[0, 1\]"):
        read_image(torch.full((3, 4, 5), 255.0))


def test_pil_inputs_of_every_mode():
    for mode in ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I", "F", "I;16"]:
        im = read_image(Image.new(mode, (3, 2)))
        assert (im.mode, im.size) == ("RGB", (3, 2)), mode


def test_pil_input_is_copied_not_shared():
    src = Image.new("RGB", (2, 2), (1, 2, 3))
    out = read_image(src)
    out.putpixel((0, 0), (9, 9, 9))
    assert src.getpixel((0, 0)) == (1, 2, 3)


def test_lazy_truncated_pil_image_raises(messy_image_folder):
    lazy = Image.open(messy_image_folder / "odd/truncated.jpg")
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(lazy)


def test_unknown_type_is_a_type_error():
    with pytest.raises(TypeError, match="cannot read a list"):
        read_image([1, 2, 3])


def test_folder_of_messy_files_reads_or_reports(messy_image_folder):
    ds = load_image_folder(messy_image_folder)
    assert ds.classes == ["good", "odd"]
    assert sorted(ds.ids.tolist()) == messy_image_folder.all_files
    for i, id_ in enumerate(ds.ids):
        if id_ in messy_image_folder.readable:
            assert ds[i].size == messy_image_folder.readable[id_]
        else:
            with pytest.raises(ImageReadError, match=messy_image_folder.unreadable[id_]):
                ds[i]


def _encoded_samples():
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = []
    for fmt, kw in [("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}),
                    ("PPM", {})]:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


_SAMPLES = _encoded_samples()

from hypothesis import given, settings, strategies as st  # noqa: E402


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's own warnings about corrupt metadata
@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(_SAMPLES) - 1), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6))
def test_corrupted_files_raise_only_image_read_error(which, cut, flips):
    data = bytearray(_SAMPLES[which][: max(1, int(len(_SAMPLES[which]) * cut))] if cut < 0.98 else _SAMPLES[which])
    for pos, value in flips:
        data[min(int(pos * len(data)), len(data) - 1)] = value
    try:
        im = read_image(bytes(data), max_pixels=10**6)  # a corrupted header must not make the test allocate GBs
    except ImageReadError as e:
        assert e.reason and "<bytes>" in str(e)
    else:
        assert im.mode == "RGB" and im.size[0] * im.size[1] >= 1
