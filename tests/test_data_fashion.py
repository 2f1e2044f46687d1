"""load_fashion runs its real kagglehub path offline, against a miniature dataset seeded in KAGGLEHUB_CACHE."""
import warnings

import kagglehub
import numpy as np
import pytest

from cbir.data import query_gallery_split
from cbir.datasets import FASHION_SMALL, load_fashion
from conftest import FASHION_ROWS, seed_fashion_cache


def _load(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_fashion(**kw)
    return ds, [str(w.message) for w in caught if "load_fashion" in str(w.message)]


def test_kagglehub_resolves_the_seeded_cache(fashion_kaggle_cache):
    assert fashion_kaggle_cache.handle == FASHION_SMALL  # the default handle is versioned, so the cache is used
    assert kagglehub.dataset_download(FASHION_SMALL) == str(fashion_kaggle_cache.folder)


def test_default_load_skips_counts_and_warns(fashion_kaggle_cache):
    ds, messages = _load()
    assert ds.ids.tolist() == fashion_kaggle_cache.good_ids
    assert len(messages) == 1
    assert "2 malformed row(s)" in messages[0] and "lines 10, 11" in messages[0]
    assert fashion_kaggle_cache.malformed_lines == [10, 11]  # header is line 1, 8 good rows are lines 2-9
    assert "1 row(s) whose image file is missing (e.g. 1011.jpg)" in messages[0]
    assert ds.skipped == {"malformed rows": 2, "rows whose image file is missing": 1}
    assert ds.classes == sorted({r[4] for r in FASHION_ROWS})
    assert [ds.classes[l] for l in ds.labels] == [r[4] for r in FASHION_ROWS]


def test_items_are_the_real_image_files(fashion_kaggle_cache):
    ds, _ = _load()
    for i, row in enumerate(FASHION_ROWS):
        assert ds.items[i].endswith(f"images/{row[0]}.jpg")
        assert ds[i].size == (20 + i, 30) and ds[i].mode == "RGB"


def test_other_columns_become_attributes(fashion_kaggle_cache):
    ds, _ = _load()
    names = ds.attribute_names
    assert not any(n.startswith(("articleType=", "id=", "productDisplayName=")) for n in names)
    for col, j in [("gender", 1), ("masterCategory", 2), ("subCategory", 3), ("baseColour", 5), ("season", 6),
                   ("year", 7), ("usage", 8)]:
        for i, row in enumerate(FASHION_ROWS):
            if row[j]:
                assert ds.attributes[i, names.index(f"{col}={row[j]}")], (i, col)
    # one attribute per non-empty value: row 1006 has no usage
    assert ds.attributes.sum(1).tolist() == [7 - (r[8] == "") for r in FASHION_ROWS]


def test_label_column_is_selectable(fashion_kaggle_cache):
    ds, _ = _load(label="baseColour")
    assert ds.classes == sorted({r[5] for r in FASHION_ROWS})
    assert "articleType=Watches" in ds.attribute_names
    assert not any(n.startswith("baseColour=") for n in ds.attribute_names)
    ds2, _ = _load(attribute_columns=["gender"])
    assert ds2.attribute_names == ["gender=Men", "gender=Unisex", "gender=Women"]


def test_unknown_columns_are_clear_errors(fashion_kaggle_cache):
    with pytest.raises(ValueError, match="needs columns 'id' and 'colour'"):
        load_fashion(label="colour")
    with pytest.raises(ValueError, match="no columns"):
        load_fashion(attribute_columns=["nope"])


def test_nested_archive_layout(tmp_path, monkeypatch):
    cache = tmp_path / "kh"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    seeded = seed_fashion_cache(cache, nested="myntradataset")
    ds, messages = _load()
    assert ds.ids.tolist() == seeded.good_ids and messages
    assert "myntradataset/images/" in ds.items[0]


def test_other_versioned_handle(tmp_path, monkeypatch):
    cache = tmp_path / "kh"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    seeded = seed_fashion_cache(cache, handle="someone/fashion-copy/versions/3")
    ds, _ = _load(handle="someone/fashion-copy/versions/3")
    assert len(ds) == len(seeded.good_ids)


def test_local_path_without_kagglehub(fashion_kaggle_cache):
    ds, _ = _load(path=fashion_kaggle_cache.folder)
    assert ds.ids.tolist() == fashion_kaggle_cache.good_ids


def test_missing_styles_csv_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no styles.csv"):
        load_fashion(path=tmp_path)


def test_clean_file_gives_no_warning(tmp_path):
    (tmp_path / "images").mkdir()
    from PIL import Image
    lines = ["id,articleType,baseColour"]
    for k in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{k}.jpg")
        lines.append(f"{k},Tshirts,Red")
    (tmp_path / "styles.csv").write_text("\n".join(lines) + "\n")
    ds, messages = _load(path=tmp_path)
    assert len(ds) == 3 and messages == [] and ds.skipped == {"malformed rows": 0}


def test_fashion_feeds_query_gallery_split(fashion_kaggle_cache):
    ds, _ = _load()
    with pytest.raises(ValueError, match="Backpacks \\(1 image\\)"):
        query_gallery_split(ds)
    from cbir.data import drop_rare_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = drop_rare_classes(ds, 2)
    q, g = query_gallery_split(kept)
    assert len(q) == len(kept.classes) == 3 and len(g) == len(kept) - 3


def test_quoted_commas_bom_and_crlf_are_fine(tmp_path):
    from PIL import Image
    (tmp_path / "images").mkdir()
    for k in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{k}.jpg")
    text = ('\ufeffid,articleType,baseColour,productDisplayName\r\n'
            '0,Tshirts,Red,"Tee, slim fit"\r\n1,Tshirts,Blue,Plain Tee\r\n2,Shirts,Blue,"Shirt, ""classic"""\r\n')
    (tmp_path / "styles.csv").write_bytes(text.encode("utf-8"))
    ds, messages = _load(path=tmp_path)
    assert messages == [] and ds.ids.tolist() == ["0", "1", "2"]  # quoted commas are valid CSV, not malformed
    assert ds.classes == ["Shirts", "Tshirts"] and ds.attribute_names == ["baseColour=Blue", "baseColour=Red"]
