"""Every saved artefact is a file set whose sidecar carries a versioned format tag (`cbir.<kind>/<version>`), read and
written in one place (cbir.core: save_set / load_set / read_sidecar); files written by older versions still load."""
import io
import json

import numpy as np
import pytest

from cbir.core import FORMATS, CbirError, format_of
from cbir.embed import Embeddings, PixelEmbedder
from cbir.index import Index, make_clustered_vectors
from cbir.scale import PCAWhitening, open_index


@pytest.fixture
def vectors():
    return make_clustered_vectors(300, 8, seed=0)[0]


def saved_sidecars(tmp_path, vectors):
    "Save one artefact of each kind that lives in a file (checkpoints: tests/test_checkpoint.py) and return their sidecars."
    Index.build(vectors, kind="flat", metric="l2").save(tmp_path / "ix.faiss")
    Embeddings(vectors, np.arange(len(vectors)), PixelEmbedder(image_size=8).config).save(tmp_path / "emb.npz")
    PCAWhitening.fit(vectors, dim=4).save(tmp_path / "white.npz")
    return {k: json.loads((tmp_path / f"{name}.json").read_text()) for k, name in
            (("index", "ix.faiss"), ("embeddings", "emb.npz"), ("pca_whitening", "white.npz"))}


def test_every_sidecar_is_tagged_with_its_kind_and_current_version(tmp_path, vectors):
    for kind, side in saved_sidecars(tmp_path, vectors).items():
        assert side["format"] == f"cbir.{kind}/{FORMATS[kind]}" and format_of(side) == (kind, FORMATS[kind])
        assert "files" in side and all("sha256" in f for f in side["files"].values())


def test_newer_and_foreign_sidecars_are_refused_with_the_reason(tmp_path, vectors):
    saved_sidecars(tmp_path, vectors)
    with pytest.raises(CbirError, match="describes a cbir embeddings"): Index.load(tmp_path / "emb.npz")
    side = json.loads((tmp_path / "ix.faiss.json").read_text())
    (tmp_path / "ix.faiss.json").write_text(json.dumps({**side, "format": "cbir.index/7"}))
    with pytest.raises(ValueError, match="newer cbir"): Index.load(tmp_path / "ix.faiss")


def test_older_layouts_still_load(tmp_path, vectors):
    # an index sidecar from before versioned tags ("cbir.index")
    ix = Index.build(vectors, kind="flat", metric="l2"); ix.save(tmp_path / "ix.faiss")
    side = json.loads((tmp_path / "ix.faiss.json").read_text())
    (tmp_path / "ix.faiss.json").write_text(json.dumps({**side, "format": "cbir.index"}))
    np.testing.assert_array_equal(open_index(tmp_path).search(vectors[:5], k=3).ids, ix.search(vectors[:5], k=3).ids)
    # a PCA-whitening from before file sets: the arrays at `path` itself, an untagged-version sidecar
    white = PCAWhitening.fit(vectors, dim=4)
    buf = io.BytesIO(); np.savez(buf, mean=white.mean, components=white.components, variances=white.variances)
    (tmp_path / "old_white.npz").write_bytes(buf.getvalue())
    (tmp_path / "old_white.npz.json").write_text(json.dumps(dict(format="cbir.pca_whitening", version="0.1.0", in_dim=8, dim=4,
                                                                 normalize=white.normalize, eps=white.eps)))
    np.testing.assert_allclose(PCAWhitening.load(tmp_path / "old_white.npz").transform(vectors), white.transform(vectors), rtol=1e-6)
    # embeddings from before file sets: the .npz at `path`, no "files" in the sidecar
    cfg = PixelEmbedder(image_size=8).config
    buf = io.BytesIO(); np.savez(buf, vectors=vectors, ids=np.arange(len(vectors)))
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    (tmp_path / "old.npz.json").write_text(json.dumps(dict(config=cfg, n=len(vectors), failed=[], format="cbir.embeddings/1")))
    np.testing.assert_array_equal(Embeddings.load(tmp_path / "old.npz").vectors, vectors)
    # saving again replaces the older layout by a file set and removes the old file
    PCAWhitening.load(tmp_path / "old_white.npz").save(tmp_path / "old_white.npz")
    assert not (tmp_path / "old_white.npz").exists() and PCAWhitening.load(tmp_path / "old_white.npz").dim == 4
