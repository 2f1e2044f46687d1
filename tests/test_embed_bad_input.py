"""Embedding a messy real-world folder: every readable image is embedded (EXIF orientation applied, converted to RGB),
every unreadable one is reported with its reason, nothing crashes; empty / all-unreadable input is a clear error."""
import io

import numpy as np
import pytest
from PIL import Image

from cbir.embed import ColorHistogramEmbedder, Embedder, PixelEmbedder


@pytest.fixture(scope="module")
def small_cnn():
    return Embedder.from_name("resnet18", weights=None, pooling="gem", image_size=32, precision="fp32")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_messy_folder_cnn(messy_image_folder, small_cnn, num_workers):
    with pytest.warns(UserWarning, match=f"skipped {len(messy_image_folder.unreadable)} of"):
        out = small_cnn.embed(messy_image_folder, batch_size=3, num_workers=num_workers, progress=False)
    assert sorted(out.ids) == sorted(messy_image_folder.readable)
    assert out.vectors.shape == (len(messy_image_folder.readable), 512) and np.isfinite(out.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    reasons = dict(out.failed)
    assert sorted(reasons) == sorted(messy_image_folder.unreadable)
    for rel, word in messy_image_folder.unreadable.items():
        assert word in reasons[rel], (rel, reasons[rel])


def test_messy_folder_baselines(messy_image_folder):
    for emb in (PixelEmbedder(image_size=8), ColorHistogramEmbedder(bins=4)):
        with pytest.warns(UserWarning, match="unreadable"):
            out = emb.embed(messy_image_folder, batch_size=4, progress=False)
        assert sorted(out.ids) == sorted(messy_image_folder.readable)
        assert sorted(i for i, _ in out.failed) == sorted(messy_image_folder.unreadable)


def test_exif_orientation_is_applied(messy_image_folder):
    "The stored 40x20 red|blue JPEG with orientation 6 is embedded as the displayed 20x40 red-over-blue image."
    displayed = np.zeros((40, 20, 3), np.uint8)
    displayed[:20] = (255, 0, 0)
    displayed[20:] = (0, 0, 255)
    pix = PixelEmbedder(image_size=8)
    from_file = pix.embed_one(messy_image_folder.path("good/exif_rotated.jpg"))
    assert np.dot(from_file, pix.embed_one(displayed)) > 0.95
    stored = np.asarray(Image.fromarray(displayed).rotate(90, expand=True))  # what ignoring EXIF would give
    assert np.dot(from_file, pix.embed_one(stored)) < 0.5


def test_odd_modes_become_rgb(messy_image_folder):
    "CMYK cyan embeds like RGB cyan; RGBA transparency is composited on white (as read_image promises)."
    hist = ColorHistogramEmbedder(bins=4)
    cyan = hist.embed_one(np.full((16, 24, 3), (0, 255, 255), np.uint8))
    assert np.dot(hist.embed_one(messy_image_folder.path("odd/cmyk.jpg")), cyan) > 0.95
    half = np.full((16, 16, 3), 255, np.uint8); half[:, :8] = (255, 0, 0)
    assert np.dot(hist.embed_one(messy_image_folder.path("odd/rgba.png")), hist.embed_one(half)) > 0.99


def test_list_of_mixed_sources(messy_image_folder, small_cnn):
    good = messy_image_folder.path("good/rgb.jpg")
    sources = [good, Image.open(good), np.zeros((10, 12, 3), np.uint8), good.read_bytes(), b"not an image",
               messy_image_folder.path("odd/empty.jpg")]
    with pytest.warns(UserWarning, match="skipped 2 of 6"):
        out = small_cnn.embed(sources, batch_size=4, progress=False)
    empty = messy_image_folder.path("odd/empty.jpg")
    assert list(out.ids) == [str(good), "1", "2", "3"]  # paths keep their names, other items are numbered by position
    assert [i for i, _ in out.failed] == ["4", str(empty)]
    np.testing.assert_allclose(out.vectors[0], out.vectors[3], atol=1e-5)  # same file as path and as bytes


def test_paths_keep_their_names(messy_image_folder, small_cnn):
    paths = [messy_image_folder.path(r) for r in ("good/rgb.jpg", "good/gray_L.png")]
    out = small_cnn.embed(paths, progress=False)
    assert list(out.ids) == [str(p) for p in paths] and not out.failed


def test_all_unreadable_is_a_clear_error(tmp_path, small_cnn):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/x.jpg").write_bytes(b"")
    (tmp_path / "a/y.png").write_text("text")
    with pytest.raises(ValueError, match="none of the 2 images could be read"):
        small_cnn.embed(tmp_path, progress=False)


def test_empty_input_is_a_clear_error(tmp_path, small_cnn):
    with pytest.raises(ValueError, match="nothing to embed"): small_cnn.embed([], progress=False)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no image files"): small_cnn.embed(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError): small_cnn.embed(tmp_path / "missing", progress=False)


def test_embed_one_bad_input_names_the_image(tmp_path, small_cnn):
    from cbir.reading import ImageReadError
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageReadError, match="bad.jpg"): small_cnn.embed_one(tmp_path / "bad.jpg")
