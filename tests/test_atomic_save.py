"""Saved indexes and embeddings are all-or-nothing sets of files (`cbir.data.write_file_set`).

The kill test forks a child (from this process, which has already imported cbir: no fresh interpreter per kill)
that saves two versions of an index over each other in a loop, SIGKILLs it at a random moment, and checks that
what is on disk loads as exactly one of the two versions — never a mix, never an unexplained error — and that the
next save removes whatever the killed one left behind.
"""
import json
import os
import random
import signal
import time

import numpy as np
import pytest

from cbir.data import read_file_set, write_file_set
from cbir.embed import Embeddings
from cbir.index import Index

N, D = 20_000, 64  # 5 MB of vectors: a save takes long enough that kills land inside the writes


def _version(seed: int) -> Index:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    return Index.build(x, ids=[f"v{seed}-{i}" for i in range(N)], kind="flat", metric="l2")  # same count: only checksums tell them apart


def _which(index: Index, versions: dict) -> int | None:
    "The version `index` is exactly (vectors and ids), or None."
    vecs = index.vectors()
    for seed, v in versions.items():
        if list(index.ids) == list(v.ids) and np.array_equal(vecs, v.vectors()): return seed
    return None


def _leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name != f"{name}.json")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_at_random_moments_leaves_old_or_new(tmp_path):
    versions = {1: _version(1), 2: _version(2)}
    path = versions[1].save(tmp_path / "g.faiss")
    t0 = time.perf_counter(); versions[2].save(path); versions[1].save(path)
    save_s = (time.perf_counter() - t0) / 2
    rng, outcomes, inside = random.Random(0), [], 0
    for trial in range(30):
        pid = os.fork()
        if pid == 0:  # the child: save version 2, then 1, then 2, ... until killed
            try:
                while True:
                    for seed in (2, 1): versions[seed].save(path)
            finally: os._exit(0)
        time.sleep(rng.uniform(0.05, 0.05 + 2 * save_s))
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
        left = _leftovers(tmp_path, "g.faiss")
        inside += len(left) > 2  # a killed save left a generation or a temp file next to the committed one
        seen = _which(Index.load(path), versions)
        assert seen in (1, 2), f"trial {trial}: the saved index is neither version (files: {left})"
        outcomes.append(seen)
    versions[1].save(path)  # the next save cleans up after the killed ones
    assert len(_leftovers(tmp_path, "g.faiss")) == 2, _leftovers(tmp_path, "g.faiss")
    assert _which(Index.load(path), versions) == 1
    assert inside >= 2, f"only {inside} of 30 kills landed inside a save; the test did not exercise what it should"
    print(f"30 kills: version 1 loaded {outcomes.count(1)}x, version 2 {outcomes.count(2)}x; {inside} kills left stale files")


def _two_saves(tmp_path):
    a = Index.build(np.eye(4, dtype=np.float32), ids=list("abcd"), kind="flat", metric="l2")
    b = Index.build(np.eye(4, dtype=np.float32)[::-1].copy(), ids=list("wxyz"), kind="flat", metric="l2")
    return a.save(tmp_path / "a.faiss"), b.save(tmp_path / "b.faiss")


def test_mixed_truncated_or_missing_member_is_refused(tmp_path):
    pa, pb = _two_saves(tmp_path)
    files_a = json.loads((tmp_path / "a.faiss.json").read_text())["files"]
    files_b = json.loads((tmp_path / "b.faiss.json").read_text())["files"]
    ids_a = tmp_path / files_a["ids.npz"]["name"]
    good = ids_a.read_bytes()
    ids_a.write_bytes((tmp_path / files_b["ids.npz"]["name"]).read_bytes())  # b's ids copied in by hand: counts agree
    with pytest.raises(ValueError, match=f"{ids_a.name} does not match a.faiss.json"):
        Index.load(pa)
    ids_a.write_bytes(good[:-10])  # truncated
    with pytest.raises(ValueError, match="does not match"):
        Index.load(pa)
    ids_a.unlink()
    with pytest.raises(ValueError, match="missing"):
        Index.load(pa)
    os.replace(tmp_path / "b.faiss.json", tmp_path / "a.faiss.json")  # another set's sidecar under this name
    with pytest.raises(ValueError, match="belongs to another saved set"):
        Index.load(pa)


def test_indexes_in_one_folder_do_not_clash(tmp_path):
    pa, pb = _two_saves(tmp_path)
    before_b = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b."))
    Index.load(pa).save(pa); Index.load(pa).save(pa)  # re-saving a never touches b's files
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.")) == before_b
    assert list(Index.load(pb).ids) == list("wxyz")


def test_older_three_file_layout_still_loads_and_is_rewritten(tmp_path):
    import faiss, io
    index = Index.build(np.eye(4, dtype=np.float32), ids=list("abcd"), kind="flat", metric="cosine")
    path = tmp_path / "old.faiss"  # what cbir wrote before file sets: path, path.ids.npz, path.json (no "files")
    path.write_bytes(faiss.serialize_index(index.index).tobytes())
    buf = io.BytesIO(); np.savez(buf, ids=index._ids, keys=index._keys); (tmp_path / "old.faiss.ids.npz").write_bytes(buf.getvalue())
    side = dict(format="cbir.index", version="0.1.0", kind="flat", factory="Flat", metric="cosine", dim=4, ntotal=4,
                id_dtype="U", embedder=None, params={}, reason="")
    (tmp_path / "old.faiss.json").write_text(json.dumps(side))
    loaded = Index.load(path)
    assert list(loaded.ids) == list("abcd")
    loaded.save(path)  # saved again: the new layout, and the old files are gone
    assert not path.exists() and not (tmp_path / "old.faiss.ids.npz").exists()
    assert list(Index.load(path).ids) == list("abcd")


def test_embeddings_are_a_set_too(tmp_path):
    e1 = Embeddings(np.eye(3, 4), ["a", "b", "c"], dict(backbone="x"))
    e2 = Embeddings(np.eye(3, 4)[::-1].copy(), ["c", "b", "a"], dict(backbone="x"))
    p = e1.save(tmp_path / "e.npz"); e2.save(p)
    assert list(Embeddings.load(p).ids) == ["c", "b", "a"] and len(list(tmp_path.iterdir())) == 2
    meta, files = read_file_set(p)
    (tmp_path / meta["files"]["npz"]["name"]).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="does not match"):
        Embeddings.load(p)


def test_write_file_set_keeps_old_version_when_a_member_cannot_be_written(tmp_path):
    write_file_set(tmp_path / "s", {"a": b"1", "b": b"2"}, {"v": 1})
    with pytest.raises(TypeError):
        write_file_set(tmp_path / "s", {"a": b"new", "b": "not bytes"}, {"v": 2})
    meta, data = read_file_set(tmp_path / "s")
    assert meta["v"] == 1 and data == {"a": b"1", "b": b"2"}
    write_file_set(tmp_path / "s", {"a": b"3", "b": b"4"}, {"v": 3})  # cleans the orphaned member of the failed save
    assert len(list(tmp_path.iterdir())) == 3
