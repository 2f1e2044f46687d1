"""Shared pytest fixtures (a folder of messy real-world image files: `messy_image_folder`) and the test lanes.

Lanes (README, "Testing"): `python -m pytest` runs everything but the benchmarks, on parallel workers; `pytest -m "not heavy"`
is the fast lane (unit tests and the lessons that do not train); `pytest -m slow` runs the benchmarks (tests/bench_*.py).
"""
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers share the cores: one BLAS/torch thread pool each, not one per core each
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))

import numpy as np
import pytest
from PIL import Image

# Tests that train networks, run whole pipelines or start services: each took over ~5 s on 2 cores
# (`python -m pytest --durations=40`), together about 80 % of the suite's time. Longest first: parallel workers start
# them at once instead of ending the run on one of them alone. The fast lane (`-m "not heavy"`) leaves them out.
HEAVY = (
    "test_cli.py::test_demo_default_run_offline",  # the full default `cbir demo`, as the README's quick start runs it
    "test_notebooks.py::test_notebook_runs[12_train.ipynb]",
    "test_notebooks.py::test_notebook_runs[reference/viz.ipynb]",
    "test_notebooks.py::test_notebook_runs[reference/train.ipynb]",
    "test_notebooks.py::test_notebook_runs[reference/embed.ipynb]",
    "test_notebooks.py::test_notebook_runs[reference/interactions.ipynb]",
    "test_milvus_server.py",  # starts a Milvus server (one xdist group: a single worker runs the module)
    "test_notebooks.py::test_notebook_runs[09_spatial.ipynb]",
    "test_notebooks.py::test_notebook_runs[reference/cli.ipynb]",
    "test_notebooks.py::test_notebook_runs[13_crossmodal.ipynb]",
    "test_notebooks.py::test_notebook_runs[tutorials/",
    "test_cli.py",
    "test_notebooks.py::test_notebook_runs[reference/distributed.ipynb]",
    "test_docs_site.py",  # builds the site and drives chromium
    "test_notebooks.py::test_notebook_runs[index.ipynb]",
    "test_embed_compile.py",  # torch.compile
)


def _heavy_rank(nodeid: str) -> int:
    return next((i for i, pattern in enumerate(HEAVY) if pattern in nodeid), len(HEAVY))


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: trains a network, runs a whole pipeline or starts a service (left out of the fast lane)")


# Tests that start one service of a kind that cannot run twice at once on a machine: each group runs on one worker
# (pytest-xdist's --dist loadgroup, in pyproject.toml's addopts), one test after the other.
SERVICE_GROUPS = {"ray": ("bench_distributed.py", "test_notebook_runs[reference/distributed.ipynb]"),
                  "milvus_server": ("test_milvus_server.py",)}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _heavy_rank(item.nodeid) < len(HEAVY): item.add_marker(pytest.mark.heavy)
        for group, patterns in SERVICE_GROUPS.items():
            if any(p in item.nodeid for p in patterns): item.add_marker(pytest.mark.xdist_group(group))
    items[:] = sorted(items, key=lambda item: _heavy_rank(item.nodeid))  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config):
    "`-n auto`: one worker per core, at most 4 (each worker holds torch and a notebook kernel's state)."
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@dataclass
class MessyFolder:
    """A class-per-sub-folder image tree with known-good and known-bad files (use it like a path: `os.fspath`)."""
    root: Path  # the folder; one sub-folder per class
    readable: dict = field(default_factory=dict)  # relative posix path -> expected RGB size (w, h) after EXIF rotation
    unreadable: dict = field(default_factory=dict)  # relative posix path -> word the ImageReadError message must contain

    def __fspath__(self) -> str: return str(self.root)
    def __truediv__(self, other): return self.root / other
    def path(self, rel: str) -> Path: return self.root / rel
    @property
    def all_files(self) -> list[str]: return sorted([*self.readable, *self.unreadable])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_claiming(width: int, height: int) -> bytes:
    """Bytes of a (tiny) PNG whose header claims `width` x `height` RGB pixels: trips a decompression-bomb guard cheaply."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg_bytes() -> bytes:
    """A 40x20 JPEG stored left-half red / right-half blue, EXIF orientation 6: displayed it is 20x40, red on top."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture
def messy_image_folder(tmp_path) -> MessyFolder:
    """A folder `root/<class>/<file>` of the image files real collections contain, with what reading each should give.

    Classes (sub-folders): `good/` holds ordinary readable photos, `odd/` holds readable images in unusual modes plus
    files no reader can decode. `MessyFolder.readable` maps each readable file (relative posix path) to the RGB
    size `(w, h)` expected after EXIF rotation; `MessyFolder.unreadable` maps each unreadable file to a word its
    `ImageReadError` message must contain. Every file in the tree is in exactly one of the two dicts.

    readable:   good/rgb.jpg (48x32 RGB JPEG), good/exif_rotated.jpg (stored 40x20, EXIF orientation 6 -> 20x40,
                red top / blue bottom), good/tiny_1x1.png (1x1), good/gray_L.png (mode L),
                odd/rgba.png (left half opaque red, right half fully transparent -> white), odd/palette_P.png (mode P
                with a transparent index), odd/gray16.png (mode I;16, horizontal ramp 0..65535 -> 0..255),
                odd/cmyk.jpg (pure cyan CMYK -> about (0, 255, 255)).
    unreadable: odd/truncated.jpg (first half of a JPEG), odd/empty.jpg (0 bytes), odd/text.jpg (text named .jpg),
                odd/bomb.png (header claims 20000x20000 pixels: over PIL's and read_image's default guard).
    """
    root = tmp_path / "messy"
    (root / "good").mkdir(parents=True)
    (root / "odd").mkdir()
    rng = np.random.default_rng(0)
    out = MessyFolder(root=root)

    def save(rel, im, fmt, expected_size, **kw):
        im.save(root / rel, fmt, **kw)
        out.readable[rel] = expected_size

    save("good/rgb.jpg", Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)), "JPEG", (48, 32))
    (root / "good/exif_rotated.jpg").write_bytes(exif_rotated_jpeg_bytes())
    out.readable["good/exif_rotated.jpg"] = (20, 40)
    save("good/tiny_1x1.png", Image.new("RGB", (1, 1), (10, 200, 30)), "PNG", (1, 1))
    save("good/gray_L.png", Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)), "PNG", (40, 30))

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red; right half stays transparent black
    save("odd/rgba.png", Image.fromarray(rgba, "RGBA"), "PNG", (16, 16))
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)  # index 0 black (transparent), index 1 dark green
    pal.paste(1, (0, 0, 8, 16))
    save("odd/palette_P.png", pal, "PNG", (16, 16), transparency=0)
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
    gray16 = Image.fromarray(ramp)
    assert gray16.mode == "I;16"
    save("odd/gray16.png", gray16, "PNG", (64, 8))
    save("odd/cmyk.jpg", Image.new("CMYK", (24, 16), (255, 0, 0, 0)), "JPEG", (24, 16), quality=95)

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    (root / "odd/truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out.unreadable["odd/truncated.jpg"] = "truncated"
    (root / "odd/empty.jpg").write_bytes(b"")
    out.unreadable["odd/empty.jpg"] = "empty"
    (root / "odd/text.jpg").write_text("this is not a JPEG, just text with a .jpg name\n")
    out.unreadable["odd/text.jpg"] = "not an image"
    (root / "odd/bomb.png").write_bytes(png_header_claiming(20_000, 20_000))
    out.unreadable["odd/bomb.png"] = "too large"
    return out


FASHION_HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
FASHION_ROWS = [  # (id, gender, masterCategory, subCategory, articleType, baseColour, season, year, usage, name)
    ("1001", "Men", "Apparel", "Topwear", "Tshirts", "Navy Blue", "Fall", "2011", "Casual", "Blue Tee"),
    ("1002", "Women", "Apparel", "Topwear", "Tshirts", "Red", "Summer", "2012", "Casual", "Red Tee"),
    ("1003", "Men", "Apparel", "Topwear", "Tshirts", "White", "Summer", "2012", "Sports", "White Tee"),
    ("1004", "Men", "Accessories", "Watches", "Watches", "Black", "Winter", "2016", "Casual", "Steel Watch"),
    ("1005", "Women", "Accessories", "Watches", "Watches", "Red", "Winter", "2016", "Formal", "Red Watch"),
    ("1006", "Men", "Footwear", "Shoes", "Casual Shoes", "White", "Summer", "2012", "", "Canvas Shoes"),
    ("1007", "Women", "Footwear", "Shoes", "Casual Shoes", "Black", "Fall", "2011", "Casual", "Flats"),
    ("1008", "Unisex", "Accessories", "Bags", "Backpacks", "Black", "Fall", "2015", "Casual", "Backpack"),
]


@dataclass
class FashionCache:
    """A miniature Fashion Product Images dataset seeded into a kagglehub cache (KAGGLEHUB_CACHE points at `cache`)."""
    cache: Path  # the KAGGLEHUB_CACHE folder
    handle: str  # the versioned handle that resolves to `folder` with no network
    folder: Path  # what kagglehub.dataset_download(handle) returns
    good_ids: list  # ids of the rows load_fashion must keep, in file order
    malformed_lines: list  # styles.csv line numbers with the wrong number of fields
    missing_image_ids: list  # ids of well-formed rows whose image file does not exist


def seed_fashion_cache(cache: Path, handle: str = "paramaggarwal/fashion-product-images-small/versions/1",
                       nested: str = "") -> FashionCache:
    """Write a miniature Fashion Product Images dataset into kagglehub's cache layout for `handle`.

    `$cache/datasets/<owner>/<name>/versions/<N>/[nested/]styles.csv` + `images/<id>.jpg`, and the completion marker
    `$cache/datasets/<owner>/<name>/<N>.complete` that makes kagglehub return the cached folder without the network
    (checked against kagglehub's cache.py: DatasetHttpResolver returns the cached path when marker and folder exist).
    styles.csv has two malformed rows (an unquoted comma in the product name, a truncated row) and one row whose image
    file is missing; `nested` reproduces archives that put everything under e.g. `myntradataset/`.
    """
    owner, name, _, version = handle.split("/")
    folder = cache / "datasets" / owner / name / "versions" / version
    data = folder / nested
    (data / "images").mkdir(parents=True)
    lines = [FASHION_HEADER]
    for k, row in enumerate(FASHION_ROWS):
        lines.append(",".join(row))
        Image.new("RGB", (20 + k, 30), (30 * k, 100, 200 - 20 * k)).save(data / "images" / f"{row[0]}.jpg")
    lines.append("1009,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Shirt, Slim Fit")  # 11 fields
    lines.append("1010,Men,Apparel")  # 3 fields
    lines.append("1011,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Missing Shirt")  # no image file
    (data / "styles.csv").write_text("\n".join(lines) + "\n")
    (cache / "datasets" / owner / name / f"{version}.complete").touch()
    return FashionCache(cache, handle, folder, [r[0] for r in FASHION_ROWS], [len(FASHION_ROWS) + 2, len(FASHION_ROWS) + 3],
                        ["1011"])


@pytest.fixture
def fashion_kaggle_cache(tmp_path, monkeypatch) -> FashionCache:
    """KAGGLEHUB_CACHE set to a tmp folder holding a miniature Fashion Product Images (see `seed_fashion_cache`)."""
    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    return seed_fashion_cache(cache)
