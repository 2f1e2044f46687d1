"""cbir.train: the Trainer's contract — selection on validation only, checkpoints, resume, budgets, bad input.

That training beats random weights on unseen classes is asserted where it is shown: nbs/12_train.ipynb (the lesson; the library's
source and its notebook tests are nbs/reference/train.ipynb), the
`cbir demo` test in tests/test_cli.py and tests/bench_train.py."""
import json
import warnings

import numpy as np
import pytest
import torch

from cbir.data import class_disjoint_split, make_glyphs
from cbir.checkpoints import load_checkpoint
from cbir.embed import Embedder
from cbir.train import COLLAPSE_EPOCHS, Trainer, cache_images, class_retrieval, embed_tensor, embedding_spread


@pytest.fixture(scope="module")
def glyph_split():
    data = make_glyphs(n=480, n_classes=40, size=32, seed=3)
    return class_disjoint_split(data, fractions=(0.5, 0.25, 0.25), seed=0)


def small_embedder(seed: int = 0, size: int = 32) -> Embedder:
    torch.manual_seed(seed)
    return Embedder.from_name("smallcnn", weights=None, image_size=size, projection=16)


def trainer(split, **kw) -> Trainer:
    train, val, _ = split
    kw = dict(loss="triplet", miner="semi_hard", p=8, k=4, seed=0) | kw
    return Trainer(small_embedder(), train, val, **kw)


def test_best_epoch_is_chosen_on_validation_only(glyph_split):
    t = trainer(glyph_split, report={"test": glyph_split[2]})
    history = t.fit(epochs=4, steps_per_epoch=3, verbose=False)
    best = max(history, key=lambda r: r["val MAP@R"])
    assert t.best["epoch"] == best["epoch"]
    assert all("test MAP@R" in r for r in history)  # reported every epoch ...
    v = embed_tensor(t.embedder, t.val[0])  # ... and the weights left in the trainer are the best validation epoch's
    assert class_retrieval(v, t.val[1].numpy())["MAP@R"] == pytest.approx(best["val MAP@R"], abs=1e-6)


def test_checkpoints_best_and_last_and_resume_is_exact(glyph_split, tmp_path):
    full = trainer(glyph_split, out=tmp_path / "full")
    full.fit(epochs=2, steps_per_epoch=2, verbose=False)
    half = trainer(glyph_split, out=tmp_path / "half")
    select = half._select
    def interrupted(row):  # Ctrl-C right after the first epoch: fit still writes last.pt on its way out
        select(row)
        raise KeyboardInterrupt
    half._select = interrupted
    with pytest.raises(KeyboardInterrupt): half.fit(epochs=2, steps_per_epoch=2, verbose=False)
    state, meta = load_checkpoint(tmp_path / "half" / "last.pt")
    assert {"model", "optimizer", "loss", "rng"} <= set(state) and meta["epoch"] == 1 and meta["train"]["loss"] == "triplet"
    resumed = Trainer.resume(tmp_path / "half" / "last.pt", *glyph_split[:2], out=tmp_path / "half")
    assert resumed.epoch == 1 and len(resumed.history) == 1
    resumed.fit(epochs=2, verbose=False)
    # same batches, augmentations and optimizer state: the last weights agree with an uninterrupted run
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")[0]["model"]
    last_resumed = load_checkpoint(tmp_path / "half" / "last.pt")[0]["model"]
    for k in last_full: torch.testing.assert_close(last_full[k], last_resumed[k], rtol=1e-4, atol=1e-5)
    best_meta = json.loads((tmp_path / "full" / "best.pt.json").read_text())
    assert best_meta["metrics"]["val MAP@R"] == max(r["val MAP@R"] for r in full.history)
    emb = Embedder.from_checkpoint(tmp_path / "full" / "best.pt")
    assert emb.config["weights"].startswith("checkpoint:")


def test_resume_refuses_weights_only_checkpoint_and_other_classes(glyph_split, tmp_path):
    t = trainer(glyph_split, out=tmp_path)
    t.fit(epochs=1, steps_per_epoch=1, verbose=False)
    with pytest.raises(ValueError, match="weights only"):
        Trainer.resume(tmp_path / "best.pt", *glyph_split[:2])
    with pytest.raises(ValueError, match="other classes"):
        Trainer.resume(tmp_path / "last.pt", glyph_split[2], glyph_split[1])
    from cbir.crossmodal import CrossModalTrainer
    with pytest.raises(ValueError, match="written by cbir.train.Trainer: resume it with cbir.train.Trainer.resume"):
        CrossModalTrainer.resume(tmp_path / "last.pt", *glyph_split[:2])


def test_time_budget_stops_cleanly(glyph_split):
    t = trainer(glyph_split)
    t.fit(minutes=0.05, verbose=False)  # 3 seconds
    assert 1 <= t.epoch and t.history[-1]["seconds"] < 3 + 10  # the last epoch finishes its measurement
    assert t.best is not None


@pytest.mark.parametrize("loss,miner,memory", [("normalized_softmax", "semi_hard", 0), ("arcface", None, 0),
                                               ("contrastive", "all", 0), ("margin", "distance_weighted", 0),
                                               ("ntxent", None, 0), ("triplet", "batch_hard", 64)])
def test_every_loss_trains(glyph_split, loss, miner, memory):
    t = trainer(glyph_split, loss=loss, miner=miner, memory=memory)
    h = t.fit(epochs=1, steps_per_epoch=2, verbose=False)
    assert np.isfinite(h[-1]["loss"]) and 0 <= h[-1]["val MAP@R"] <= 1
    if loss in ("normalized_softmax", "arcface"): assert t.miner is None  # classification losses need no mining


def test_nan_stops_with_the_step_named(glyph_split):
    t = trainer(glyph_split)
    with torch.no_grad(): t.embedder.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1.*lower the learning rate"):
        t.fit(epochs=1, verbose=False)


def test_collapse_is_detected(glyph_split):
    t = trainer(glyph_split, lr=0.0)
    with torch.no_grad(): t.embedder.head.weight.zero_()  # every image maps to the zero vector
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(epochs=COLLAPSE_EPOCHS - 1, steps_per_epoch=1, verbose=False)
    assert not any("collapsed" in str(w.message) for w in caught)  # a short dip is not reported ...
    with pytest.warns(UserWarning, match="collapsed"):  # ... a spread that stays low is
        t.fit(epochs=2 * COLLAPSE_EPOCHS, steps_per_epoch=1, verbose=False)


def test_bad_training_sets(glyph_split):
    train, val, _ = glyph_split
    one = train.subset(np.flatnonzero(train.labels == 0), drop_unused_classes=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Trainer(small_embedder(), one, val)
    singles = train.subset([np.flatnonzero(train.labels == c)[0] for c in range(len(train.classes))])
    with pytest.raises(ValueError, match="single image"):
        Trainer(small_embedder(), singles, val)
    with pytest.raises(ValueError, match="must not be training classes"):
        Trainer(small_embedder(), train, train)
    with pytest.raises(ValueError, match="epochs, minutes"):
        trainer(glyph_split).fit()
    few = train.subset(np.concatenate([np.flatnonzero(train.labels == c)[:2] for c in range(len(train.classes))]))
    with pytest.warns(UserWarning, match="fewer than k=4"):  # K larger than every class: drawn with replacement, said once
        Trainer(small_embedder(), few, val, p=8, k=4)


def test_unreadable_images_are_skipped_and_reported(glyph_split, tmp_path):
    from cbir.data import load_image_folder
    folder = glyph_split[0].to_folder(tmp_path / "imgs")
    bad = next(folder.iterdir()) / "broken.png"
    bad.write_bytes(b"not a png")
    ds = load_image_folder(folder)
    with pytest.warns(UserWarning, match="skipped 1 of"):
        x, y, failed = cache_images(ds, small_embedder().transform)
    assert len(x) == len(ds) - 1 and failed[0][0].endswith("broken.png")


def test_spread_matches_a_loop():
    v = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    loop = np.mean([np.linalg.norm(a - b) for i, a in enumerate(v) for j, b in enumerate(v) if i != j])
    assert embedding_spread(v) == pytest.approx(loop, rel=1e-5)


def test_a_torchvision_backbone_trains_and_checkpoints(glyph_split, tmp_path):
    train, val, _ = glyph_split
    torch.manual_seed(0)
    emb = Embedder.from_name("resnet18", weights=None, image_size=32, projection=16)
    t = Trainer(emb, train, val, loss="ntxent", miner=None, p=8, k=4, out=tmp_path)
    t.fit(epochs=1, steps_per_epoch=1, verbose=False)
    back = Embedder.from_checkpoint(tmp_path / "best.pt")
    assert back.config["backbone"] == "resnet18" and back.dim == 16
    x = t.val[0][:4]
    np.testing.assert_allclose(embed_tensor(back, x), embed_tensor(t.embedder, x), atol=1e-5)
