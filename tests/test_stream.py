"""Streaming training (cbir.train.StreamedImages): the same results as the cache, bad files skipped and reported, and
the memory budget that chooses between them. Throughput and peak memory are measured in tests/bench_stream.py."""
import warnings

import numpy as np
import pytest
import torch

from cbir.data import class_disjoint_split, load_image_folder, make_glyphs
from cbir.embed import Embedder
from cbir.mining import PKSampler
from cbir.train import Trainer, cache_bytes, cache_images, split_transform


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    data = make_glyphs(n=320, n_classes=20, size=32, seed=5)
    train, val = class_disjoint_split(data, fractions=(0.75, 0.25), seed=0)
    root = tmp_path_factory.mktemp("stream")
    return train.to_folder(root / "train"), val.to_folder(root / "val")


def embedder(seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    return Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16)


def run(train, val, epochs=2, **kw):
    t = Trainer(embedder(), train, val, loss="triplet", miner="semi_hard", p=6, k=4, seed=0, **kw)
    return t, t.fit(epochs=epochs, steps_per_epoch=4, verbose=False)


def test_split_transform_gives_the_cached_numbers(folders):
    ds = load_image_folder(folders[0])
    e = embedder()
    per_image, per_batch = split_transform(e.transform)
    imgs = [ds[i] for i in range(8)]
    assert per_image(imgs[0]).dtype == torch.uint8  # the worker's part stops before the float conversion
    cached = cache_images(ds.subset(range(8)), e.transform)[0]
    assert torch.equal(per_batch(torch.stack([per_image(im) for im in imgs])), cached)


def test_streaming_trains_exactly_like_the_cache(folders):
    train, val = map(load_image_folder, folders)
    t_cached, h_cached = run(train, val, cache=True)
    t_stream, h_stream = run(train, val, cache=False)
    assert t_cached.cached and not t_stream.cached and t_stream.train_x is None
    assert "streamed" in repr(t_stream) and "cached" in repr(t_cached)
    for a, b in zip(h_cached, h_stream):  # same batches, same augmentation, same inputs (float16): the same numbers
        assert a["loss"] == b["loss"] and a["val MAP@R"] == b["val MAP@R"] and a["val spread"] == b["val spread"]
    for p, q in zip(t_cached.embedder.parameters(), t_stream.embedder.parameters()): assert torch.equal(p, q)


def test_the_memory_budget_chooses(folders):
    train, val = map(load_image_folder, folders)
    need = cache_bytes(len(train) + len(val), 32)
    assert need == (len(train) + len(val)) * 3 * 32 * 32 * 2
    small = Trainer(embedder(), train, val, p=6, k=4, cache_gb=need / 1e9 * 0.99)
    big = Trainer(embedder(), train, val, p=6, k=4, cache_gb=need / 1e9 * 1.01)
    assert (small.cached, big.cached, small.cache_need) == (False, True, need)


def test_streaming_with_a_worker_process(folders):
    train, val = map(load_image_folder, folders)
    _, h0 = run(train, val, epochs=1, cache=False, num_workers=0)
    t1, h1 = run(train, val, epochs=1, cache=False, num_workers=1)
    assert t1.stream.num_workers == 1 and h0[0]["loss"] == h1[0]["loss"]


def test_unreadable_files_are_skipped_reported_and_not_drawn_again(folders, tmp_path):
    import shutil
    root = tmp_path / "train"
    for c in sorted(folders[0].iterdir()):  # 3 readable images per class, so that k=4 draws every file of a class
        (root / c.name).mkdir(parents=True)
        for f in sorted(c.glob("*.png"))[:3]: shutil.copy(f, root / c.name / f.name)
    classes = sorted(root.iterdir())
    broken = [classes[0] / "truncated.png", classes[1] / "garbage.png"]
    good = next(classes[0].glob("*.png")).read_bytes()
    broken[0].write_bytes(good[:len(good) // 3]); broken[1].write_bytes(b"not an image")
    train, val = load_image_folder(root), load_image_folder(folders[1])
    with pytest.warns(UserWarning, match="fewer than k=4"):  # 4 files per class, drawn with replacement: every file in the first batch
        t = Trainer(embedder(), train, val, p=len(classes), k=4, seed=0, cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = t.fit(epochs=3, steps_per_epoch=4, verbose=False)
    said = [str(w.message) for w in caught if "while streaming" in str(w.message)]
    assert len(h) == 3 and sorted(i for i, _ in t.failed) == sorted(str(b.relative_to(root)) for b in broken)
    assert len(said) == 1 and "skipped 2 unreadable images" in said[0]  # once, in the epoch that met them
    rows = {str(i): r for r, i in enumerate(train.ids)}
    bad_rows = [rows[str(b.relative_to(root))] for b in broken]
    assert not any(np.isin(bad_rows, b).any() for b in t.sampler)  # never drawn again


def test_nothing_readable_is_a_clear_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for j in range(4): (tmp_path / c / f"{j}.png").write_bytes(b"junk")
    t = Trainer(embedder(), load_image_folder(tmp_path), None, p=2, k=2, cache=False)
    with pytest.raises(ValueError, match="every item was dropped"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(epochs=1, verbose=False)


def test_resume_keeps_streaming(folders, tmp_path):
    train, val = map(load_image_folder, folders)
    t, _ = run(train, val, epochs=1, cache=False, out=tmp_path)
    r = Trainer.resume(tmp_path / "last.pt", train, val, cache=False)
    assert not r.cached and r.epoch == 1
    assert len(r.fit(epochs=2, steps_per_epoch=4, verbose=False)) == 2
