"""MilvusIndex against a real Milvus server: the embedded standalone server of PyPI's `milvus` package (2.3.x), started on
the loopback address for this module and stopped after it. The same contract as Milvus Lite (tests/test_milvus.py):
same top-10 as FAISS Flat up to ties, add/remove, save/load/open_index, Searcher, evaluate, the CLI round trip; and
the server's limits and failures as clear errors."""
import fcntl
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
milvus = pytest.importorskip("milvus")

from cbir.evaluate import evaluate
from cbir.index import Index
from cbir.scale import SERVER_MAX_DIM, MilvusIndex, _supported_server, open_index
from cbir.search import Searcher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


TOKEN = "root:Milvus"  # the embedded server's built-in account, with authentication switched on


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one embedded server per machine at a time (its etcd and storage ports are fixed): with --dist loadgroup (the default
    # addopts) one worker runs this whole module; with another --dist, a worker waits here for the other's server to stop
    lock = open(Path(tempfile.gettempdir()) / "cbir-milvus-server.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    srv = milvus.default_server
    srv.set_base_dir(str(tmp_path_factory.mktemp("milvus_server")))
    srv.listen_port = free_port()
    srv.config.set("authorization_enabled", True)  # a server that checks tokens, like a real deployment
    try: srv.start()  # a server that cannot start here is the machine's problem, not cbir's: say so instead of erroring every test
    except (TimeoutError, RuntimeError, OSError) as e:
        lock.close(); pytest.skip(f"the embedded Milvus server did not start on this machine: {e}")
    before = os.environ.get("MILVUS_TOKEN")
    os.environ["MILVUS_TOKEN"] = TOKEN  # cbir reads a server's token from here when none is passed (the CLI too)
    try: yield f"http://127.0.0.1:{srv.listen_port}"
    finally:
        if before is None: os.environ.pop("MILVUS_TOKEN", None)
        else: os.environ["MILVUS_TOKEN"] = before
        srv.stop(); lock.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    labels = rng.integers(0, 20, 2000)
    x = centres[labels] + 0.4 * rng.standard_normal((2000, 16)).astype(np.float32)
    return x, x[:40] + 0.05, np.array([f"img/{i:05d}.jpg" for i in range(2000)]), labels


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_gives_faiss_flat_top10(server, data, metric):
    x, q, ids, _ = data
    mv = MilvusIndex.build(x, ids, kind="flat", metric=metric, uri=server, collection=f"flat_{metric}")
    ref = Index.build(x, ids, kind="flat", metric=metric).search(q, k=10)
    res = mv.search(q, k=10)
    assert (res.ids[:, 0] == ref.ids[:, 0]).all() and (res.ids == ref.ids).mean() > 0.99
    np.testing.assert_allclose(res.distances, ref.distances, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_server_side_index_types_build_and_search(server, data, kind):
    x, q, ids, _ = data
    mv = MilvusIndex.build(x, ids, kind=kind, metric="l2", uri=server, collection=f"ann_{kind}")
    assert mv.index_type == {"hnsw": "HNSW", "ivf": "IVF_FLAT"}[kind]
    info = mv.client.describe_index(mv.collection, mv.client.list_indexes(mv.collection)[0])
    assert info["indexed_rows"] == info["total_rows"] == len(x), info  # build waited for the server's index (wait_for_index)
    exact = Index.build(x, ids, kind="flat", metric="l2").search(q, k=10).ids
    knob = dict(ef_search=64) if kind == "hnsw" else dict(nprobe=16)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(mv.search(q, k=10, **knob).ids, exact)])
    assert recall >= 0.9, recall


def test_add_remove_save_load_searcher_evaluate(server, data, tmp_path):
    x, q, ids, labels = data
    mv = MilvusIndex.build(x[:1500], ids[:1500], kind="flat", metric="l2", uri=server, collection="crud")
    mv.add(x[1500:], ids[1500:])
    assert mv.ntotal == 2000 and mv.remove(ids[:10]) == 10 and mv.ntotal == 1990
    assert not set(ids[:10]) & set(mv.search(x[:10], k=5).ids.ravel())
    path = mv.save(tmp_path / "idx.milvus")
    again = open_index(tmp_path)
    assert isinstance(again, MilvusIndex) and again.ntotal == 1990
    np.testing.assert_array_equal(again.search(q, k=5).ids, mv.search(q, k=5).ids)
    s = Searcher(None, again, gallery_vectors=x[10:])
    assert (s.search_embeddings(q, k=3).ids == again.search(q, k=3).ids).all()
    r = evaluate(q, searcher=s, query_labels=labels[:40], gallery_labels=labels[10:], ks=(5,))
    assert r.metrics["P@5"] > 0.9


def test_limits_and_failures_say_what_to_change(server, data):
    x, q, ids, _ = data
    with pytest.raises(ValueError, match=f"at most {SERVER_MAX_DIM:,} dimensions"):
        MilvusIndex.build(np.zeros((2, SERVER_MAX_DIM + 1), np.float32), ["a", "b"], uri=server, collection="too_wide")
    mv = MilvusIndex.build(x, ids, kind="flat", metric="l2", uri=server, collection="limits")
    many = MilvusIndex.build(np.random.default_rng(0).standard_normal((16_500, 4)).astype(np.float32), kind="flat",
                             metric="l2", uri=server, collection="many")
    with pytest.raises(ValueError, match="at most 16,384 neighbours"): many.search(np.zeros(4, np.float32), k=16_385)
    mv.client.drop_collection("limits")
    with pytest.raises(ValueError, match="no longer exists"): mv.search(q[:1], k=5)
    with pytest.raises(ConnectionError, match="cannot reach a Milvus server"):
        MilvusIndex.build(x[:10], ids[:10], uri=f"http://127.0.0.1:{free_port()}", collection="nobody")
    with pytest.raises(RuntimeError, match="refused the connection.*the token is wrong"):
        MilvusIndex.build(x[:10], ids[:10], uri=server, collection="intruder", token="root:wrong")
    with pytest.raises(RuntimeError, match="refused the connection.*it needs a token.*MILVUS_TOKEN"):
        MilvusIndex.build(x[:10], ids[:10], uri=server, collection="intruder", token="")
    assert MilvusIndex.build(x[:10], ids[:10], uri=server, collection="invited", token=TOKEN).ntotal == 10


def test_supported_server_versions():
    assert _supported_server("v2.3.5-lite") and _supported_server("2.5.1")
    assert not _supported_server("v2.2.9") and not _supported_server("v3.0.0") and not _supported_server("milvus_lite-3.2.2")


def test_cli_round_trip_against_the_server(server, tmp_path, capsys):
    from cbir.cli import main
    from cbir.data import make_shapes
    folder = make_shapes(n=30, size=32, seed=5).to_folder(tmp_path / "imgs")
    query = sorted((folder / "star").glob("*.png"))[0]
    assert main(["index", str(folder), "--out", str(tmp_path / "idx"), "--backbone", "pixels", "--image-size", "16",
                 "--backend", "milvus", "--uri", server]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), str(query), "-k", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()[2]
    assert first == query.relative_to(folder).as_posix()
