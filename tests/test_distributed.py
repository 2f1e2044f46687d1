"""Distributed embedding on Ray's local mode (2 workers) against the single-process `Embedder.embed`."""
import logging
import warnings

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from cbir.data import make_shapes
from cbir.distributed import embed_distributed, plan_shards, shard_path
from cbir.embed import Embedder


@pytest.fixture(scope="module")
def session():
    # Ray's head node gives up when it does not start within its timeouts, which a machine busy with the other test
    # workers can exceed: one more try after a clean shutdown (the tests themselves are not retried)
    for attempt in range(2):
        try: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR); break
        except Exception:
            ray.shutdown()
            if attempt: raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    folder = make_shapes(n=70, size=32, seed=1).to_folder(root / "images")
    (folder / "star" / "broken.jpg").write_bytes(b"\xff\xd8 half a jpeg")
    paths = sorted(str(p) for p in folder.rglob("*.*")) + [str(root / "missing.png")]  # a path that does not exist
    torch.manual_seed(0)
    emb = Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8, precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = emb.embed(paths, batch_size=8, progress=False)
    return root, paths, emb, single


def test_two_workers_give_the_single_process_result(session, setup):
    root, paths, emb, single = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spread = embed_distributed(emb, paths, root / "job", workers=2, shard_size=20, batch_size=8)  # rounded up to 24
    assert np.array_equal(spread.vectors, single.vectors)  # identical, not close: the same batches
    assert spread.ids.tolist() == single.ids.tolist() and spread.failed == single.failed
    assert {i for i, _ in spread.failed} == {paths[-1], next(p for p in paths if p.endswith("broken.jpg"))}
    assert len(list((root / "job").glob("shard-*.npz.json"))) == len(plan_shards(len(paths), 24)) == 3


def test_resume_embeds_only_missing_shards_and_refuses_another_job(session, setup):
    root, paths, emb, single = setup
    out = root / "resume"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed_distributed(emb, paths, out, workers=2, shard_size=16, batch_size=8)
        kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if not p.name.startswith("shard-00002")}
        for p in out.glob("shard-00002*"): p.unlink()  # as if killed before shard 2 was written
        again = embed_distributed(emb, paths, out, workers=2, shard_size=16, batch_size=8)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if not p.name.startswith("shard-00002")} == kept
    assert shard_path(out, 2).with_name("shard-00002.npz.json").exists()
    assert np.array_equal(again.vectors, single.vectors) and again.failed == single.failed
    other = Embedder.from_name("smallcnn", weights=None, image_size=32, projection=4, precision="fp32")
    with pytest.raises(ValueError, match="another job"):
        embed_distributed(other, paths, out, workers=2, shard_size=16, batch_size=8)
    with pytest.raises(ValueError, match="another job"):
        embed_distributed(emb, paths[:-5], out, workers=2, shard_size=16, batch_size=8)  # a different input list


def test_a_shard_with_no_readable_image_and_bad_input(session, setup):
    root, paths, emb, single = setup
    bad = [str(root / f"nothing{i}.png") for i in range(8)] + paths[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = embed_distributed(emb, bad, root / "bad", workers=2, shard_size=8, batch_size=8)
    assert len(got.failed) == 8 and len(got) == 8
    with pytest.raises(ValueError, match="at least 1"):
        embed_distributed(emb, paths, root / "w0", workers=0)
    with pytest.raises(ValueError, match="nothing to embed"):
        embed_distributed(emb, [], root / "empty")
