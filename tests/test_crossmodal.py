"Attribute search (cbir.crossmodal): queries, tables, negatives, training, checkpoints, search, the CLI, and the CelebA route offline."
import contextlib, io, itertools, json, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbir.cli import main
from cbir.crossmodal import (CrossModal, CrossModalTrainer, attribute_groups, attribute_queries, attribute_query,
                             batch_references, classifier_vectors, load_attribute_csv, load_attributes, perturb_attributes,
                             satisfies, show_attribute_results, write_attribute_csv)
from cbir.data import make_shapes
from cbir.embed import Embedder
from cbir.search import Searcher
from cbir.train import Trainer

NAMES = make_shapes(n=1, size=16).attribute_names
CELEBA_NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
                "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
                "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
                "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
                "Wearing_Necktie Young").split()


# ---- queries ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["red striped large", "RED, Striped, size=large", ["color=red", "fill=striped", "large"],
                                   np.array([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]), [True] + [False] * 6 + [True, False, False, True]])
def test_query_forms_agree(query):
    v = attribute_query(query, NAMES)
    assert v.dtype == np.float32 and [NAMES[j] for j in np.flatnonzero(v)] == ["color=red", "fill=striped", "size=large"]


@pytest.mark.parametrize("query, message", [
    ("red stripy", "unknown attribute name(s) ['stripy']; known: color=red"),
    ("   ", "asks for no attribute"), ([], "asks for no attribute"), (np.zeros(11), "asks for no attribute"),
    (np.ones(3), "one 0/1 value per attribute (11"), (np.full(11, 0.5), "only 0 and 1"), ([-1] + [0] * 10, "only 0 and 1"),
    ("red blue", "one-hot group 'color'"), ("solid outline large", "one-hot group 'fill'")])
def test_bad_queries_say_why(query, message):
    with pytest.raises(ValueError, match=None) as e: attribute_query(query, NAMES)
    assert message in str(e.value), str(e.value)


def test_query_for_attribute_no_training_image_had():
    counts = np.ones(11); counts[NAMES.index("color=cyan")] = 0
    with pytest.raises(ValueError, match=r"no training image had \['color=cyan'\]"): attribute_query("cyan solid", NAMES, counts)
    attribute_query("red solid", NAMES, counts)  # the others still work


def test_celeba_names_match_loosely():
    v = attribute_query("blond hair, male, SMILING", CELEBA_NAMES)
    assert sorted(CELEBA_NAMES[j] for j in np.flatnonzero(v)) == ["Blond_Hair", "Male", "Smiling"]
    assert attribute_groups(CELEBA_NAMES) == {}  # independent attributes: no group rule applies
    attribute_query("black hair, blond hair", CELEBA_NAMES)  # not one-hot in CelebA: allowed


def test_ambiguous_bare_value_is_not_guessed():
    names = ["top=red", "bottom=red", "top=blue", "bottom=blue"]
    with pytest.raises(ValueError, match="unknown attribute"): attribute_query("red", names)
    assert attribute_query("top=red", names).tolist() == [1, 0, 0, 0]


# ---- relevance, negatives, classifier scores --------------------------------------------------------------------
def test_satisfies_matches_a_loop():
    rng = np.random.default_rng(0)
    imgs, qs = rng.random((30, 7)) < 0.5, rng.random((12, 7)) < 0.3
    loop = np.array([[all(i[j] for j in range(7) if q[j]) for q in qs] for i in imgs])
    assert (satisfies(imgs, qs) == loop).all()


@pytest.mark.parametrize("seed", range(5))
def test_perturbed_vectors_stay_valid_and_differ(seed):
    rng = np.random.default_rng(seed)
    ds = make_shapes(n=64, size=16, seed=seed)
    groups = attribute_groups(ds.attribute_names)
    p = perturb_attributes(ds.attributes, groups, rng, max_changes=3)
    for g in groups.values(): assert (p[:, g].sum(1) == 1).all()
    changed_groups = np.stack([(p[:, g] != ds.attributes[:, g]).any(1) for g in groups.values()], 1).sum(1)
    assert changed_groups.min() >= 1 and changed_groups.max() <= 3
    # independent attributes: 1..3 bits flipped
    a = rng.random((50, 10)) < 0.5
    flips = (perturb_attributes(a, {}, rng) != a).sum(1)
    assert flips.min() >= 1 and flips.max() <= 3


@pytest.mark.parametrize("synthetic", [0.0, 1 / 3, 1.0])
def test_batch_references_positives_and_negatives(synthetic):
    rng = np.random.default_rng(1)
    for attrs, groups in [(make_shapes(n=96, size=16, seed=2).attributes, attribute_groups(NAMES)), (rng.random((96, 40)) < 0.3, {})]:
        refs, rel, own, neg = batch_references(attrs, groups, rng, synthetic)
        assert (refs[own] == attrs).all() and rel[np.arange(96), own].all()
        has = neg >= 0
        assert has.mean() > 0.9 and not rel[np.flatnonzero(has), neg[has]].any()  # a negative is never satisfied by its image
        assert (rel == satisfies(attrs, refs)).all() and len(np.unique(refs, axis=0)) == len(refs)


def test_classifier_vectors_score_is_log_product_of_probabilities():
    rng = np.random.default_rng(0)
    logits, q = rng.normal(0, 3, (20, 6)).astype(np.float32), (rng.random((5, 6)) < 0.5).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expect = np.array([[np.log(np.prod([p[i, j] for j in range(6) if q[k, j]])) for i in range(20)] for k in range(5)])
    np.testing.assert_allclose(q @ classifier_vectors(logits).T, expect, rtol=1e-4, atol=1e-5)


def test_attribute_queries_kinds():
    ds = make_shapes(n=300, size=16, seed=0)
    g = attribute_groups(ds.attribute_names)
    combos = attribute_queries(ds.attributes, g, "auto")
    assert len(combos) == len(np.unique(ds.attributes, axis=0)) == 36
    assert attribute_queries(ds.attributes, g, "single").shape == (11, 11)
    assert attribute_queries(np.random.default_rng(0).random((300, 40)) < 0.5, {}, "auto").shape == (40, 40)
    with pytest.raises(ValueError, match="queries must be"): attribute_queries(ds.attributes, g, "pairs")


# ---- tables ------------------------------------------------------------------------------------------------------
def test_csv_roundtrip_and_bad_rows(tmp_path):
    ds = make_shapes(n=10, size=16, seed=1)
    table = write_attribute_csv(ds, tmp_path / "imgs")
    back = load_attributes(table, tmp_path / "imgs")
    assert (back.attributes == ds.attributes).all() and back.attribute_names == ds.attribute_names and len(back) == 10
    rows = table.read_text().splitlines()
    pm1 = [rows[0]] + [r.split(",")[0] + "," + ",".join("1" if v == "1" else "-1" for v in r.split(",")[1:]) for r in rows[1:]]
    table.write_text("\n".join(pm1 + ["nope.png," + ",".join(["1"] * 11), rows[1], rows[2].rsplit(",", 1)[0], rows[3][:-1] + "7"]) + "\n")
    with pytest.warns(UserWarning, match="skipped") as w:
        back = load_attribute_csv(table, tmp_path / "imgs")
    assert (back.attributes == ds.attributes).all()  # +-1 read as 0/1
    assert back.skipped == {"rows whose image file is missing": 1, "rows with a repeated path": 1,
                            "rows malformed (wrong column count or a value other than 0/1/-1)": 2}, back.skipped
    assert "first at line 12" in str(w[0].message)


def test_csv_errors(tmp_path):
    (tmp_path / "a.csv").write_text("path\n")
    with pytest.raises(ValueError, match="header"): load_attribute_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,red,\nx.png,1,0\n")
    with pytest.raises(ValueError, match="have no name"): load_attribute_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,red\nx.png,1\n")
    with pytest.raises(ValueError, match="no usable rows"), warnings.catch_warnings():
        warnings.simplefilter("ignore"); load_attribute_csv(tmp_path / "c.csv")


# ---- model, training, checkpoints ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A tiny cross-modal model trained for 3 short epochs, with its checkpoints."
    out = tmp_path_factory.mktemp("xm")
    train, val = make_shapes(n=240, size=32, seed=1), make_shapes(n=80, size=32, seed=2)
    torch.manual_seed(0)
    model = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16), train.attribute_names, hidden=32)
    t = CrossModalTrainer(model, train, val, batch_size=32, out=out)
    with contextlib.redirect_stdout(io.StringIO()): t.fit(epochs=3, steps_per_epoch=4)
    return model, t, train, val, out


def test_training_writes_checkpoints_that_reload(trained):
    model, t, train, val, out = trained
    assert (out / "best.pt.json").is_file() and (out / "last.pt.json").is_file() and len(t.history) == 3
    assert {"val mAP", "val clf mAP", "val spread"} <= set(t.history[0])
    side = json.loads((out / "best.pt.json").read_text())
    assert side["crossmodal"]["attributes"] == list(NAMES) and side["crossmodal"]["counts"] == train.attributes.sum(0).tolist()
    again = CrossModal.from_checkpoint(out / "best.pt")
    best_epoch = t.best["epoch"]
    q = ["red", "blue striped", np.eye(11)[3]]
    t.embedder.load_state_dict(t.best_state)
    np.testing.assert_allclose(again.encode_attributes(q), model.encode_attributes(q), atol=1e-5)
    imgs = [val[i] for i in range(4)]
    np.testing.assert_allclose(np.stack([again.embed_one(i) for i in imgs]), np.stack([model.embed_one(i) for i in imgs]), atol=1e-4)
    # the image side is an ordinary embedder checkpoint
    plain = Embedder.from_checkpoint(out / "best.pt")
    np.testing.assert_allclose(plain.embed_one(imgs[0]), model.embed_one(imgs[0]), atol=1e-4)
    assert best_epoch >= 1


def test_checkpoint_kinds_are_not_mixed_up(trained, tmp_path):
    _, t, train, val, out = trained
    emb = Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16)
    from cbir.checkpoints import save_checkpoint
    save_checkpoint(emb, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain image-embedder checkpoint: it has no attribute encoder"):
        CrossModal.from_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="written by cbir.crossmodal.CrossModalTrainer: resume it with cbir.crossmodal.CrossModalTrainer.resume"):
        Trainer.resume(out / "last.pt", train, val)


def test_resume_continues_the_run(trained, tmp_path):
    _, t, train, val, out = trained
    r = CrossModalTrainer.resume(out / "last.pt", train, val, out=tmp_path)
    assert (r.epoch, r.step) == (t.epoch, t.step) and r.best["epoch"] == t.best["epoch"] and r.best_state is not None
    with contextlib.redirect_stdout(io.StringIO()): r.fit(epochs=4, steps_per_epoch=4)
    assert r.epoch == 4 and len(r.history) == 4


def test_training_refuses_bad_sets():
    model = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), NAMES, hidden=8)
    ds = make_shapes(n=20, size=32)
    with pytest.raises(ValueError, match="unknown cross-modal loss"): CrossModalTrainer(model, ds, loss="arcface")
    no_attr = ds.subset(range(20)); no_attr.attributes, no_attr.attribute_names = None, []
    with pytest.raises(ValueError, match="has no attributes"): CrossModalTrainer(model, no_attr)
    other = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), NAMES[::-1], hidden=8)
    with pytest.raises(ValueError, match="same names in the same order"): CrossModalTrainer(other, ds)


def test_attribute_never_seen_in_training_is_reported():
    ds = make_shapes(n=200, size=32, seed=0)
    keep = ~ds.attributes[:, NAMES.index("color=cyan")]
    model = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=8), NAMES, hidden=8)
    with pytest.warns(UserWarning, match=r"no training image has \['color=cyan'\]"):
        CrossModalTrainer(model, ds.subset(keep), batch_size=16)
    with pytest.raises(ValueError, match="no training image had"): model.encode_attributes("cyan")


def test_searcher_attribute_queries(trained):
    model, *_ , val, out = trained
    s = Searcher.build(model, val)
    res = s.search_attributes(["red", "blue, large"], k=5)
    assert res.ids.shape == (2, 5) and set(res.ids.ravel()) <= set(val.ids)
    direct = s.search_embeddings(model.encode_attributes(["red", "blue, large"]), k=5)
    assert (direct.ids == res.ids).all()
    plain = Searcher.build(Embedder.from_checkpoint(out / "best.pt"), val)
    with pytest.raises(ValueError, match="plain image embedder: attribute queries need a cross-modal model"):
        plain.search_attributes("red")
    model.loss = "bce"
    try:
        with pytest.raises(ValueError, match="per-attribute classifiers"): s.search_attributes("red")
    finally: model.loss = "ntxent"


def test_modify_query(trained):
    model, *_, val, out = trained
    i = int(np.flatnonzero(~val.attributes[:, NAMES.index("color=blue")])[0])
    q, changed = model.modify_query(val[i], add=["blue"], attributes=val.attributes[i])
    expect = val.attributes[i].copy(); expect[:6] = False; expect[NAMES.index("color=blue")] = True
    assert (changed == expect).all() and q.shape == (model.dim,) and abs(np.linalg.norm(q) - 1) < 1e-5
    _, predicted = model.modify_query(val[i], add=["large"])  # attributes predicted by the (trained) head
    assert predicted[NAMES.index("size=large")] and predicted[:6].sum() == 1
    with pytest.raises(ValueError, match="cannot be removed, only replaced"): model.modify_query(val[i], remove=["red"], attributes=val.attributes[i])
    with pytest.raises(ValueError, match="must have 11 entries"): model.modify_query(val[i], add=["red"], attributes=[1, 0])


def test_result_figure(trained):
    model, *_, val, out = trained
    rows = [dict(query="red striped", results=[val[0], val[1]], attributes=val.attributes[:2], asked=model.query_vectors("red striped")[0]),
            dict(query=val[2], results=[val[3]], attributes=val.attributes[3:4], asked=val.attributes[2])]
    fig = show_attribute_results(rows, NAMES)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any(t.startswith(("✓", "✗")) for t in titles)
    import matplotlib.pyplot as plt; plt.close(fig)


# ---- the CelebA route, offline, on a miniature copy -----------------------------------------------------------------
def _mini_celeba(root: Path, n: int = 60, seed: int = 0) -> Path:
    "A miniature CelebA: n small JPEGs and list_attr_celeba.txt (count line, 40 names, +-1 rows), as the real files are laid out."
    rng = np.random.default_rng(seed)
    img_dir = root / "img_align_celeba"; img_dir.mkdir(parents=True)
    attrs = rng.random((n, 40)) < 0.35
    lines = [str(n), " ".join(CELEBA_NAMES)]
    for i in range(n):
        a = np.full((40, 40, 3), 40, np.uint8)
        a[..., 0] += np.uint8(150 * attrs[i, CELEBA_NAMES.index("Male")]); a[..., 1] += np.uint8(150 * attrs[i, CELEBA_NAMES.index("Smiling")])
        Image.fromarray(a).save(img_dir / f"{i + 1:06d}.jpg", quality=90)
        lines.append(f"{i + 1:06d}.jpg  " + " ".join(" 1" if v else "-1" for v in attrs[i]))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_route_trains_indexes_and_searches_offline(tmp_path):
    root = _mini_celeba(tmp_path / "celeba")
    ds = load_attributes(root / "list_attr_celeba.txt", root / "img_align_celeba")  # the existing CelebA loader, via the dispatcher
    assert ds.attribute_names == CELEBA_NAMES and len(ds) == 60
    model = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16), ds.attribute_names, hidden=32)
    t = CrossModalTrainer(model, ds.subset(range(48)), ds.subset(range(48, 60)), synthetic=1 / 3, batch_size=16)
    assert t.val[1].shape == (12, 40)
    with contextlib.redirect_stdout(io.StringIO()): t.fit(epochs=1, steps_per_epoch=3)
    assert "val mAP" in t.history[0]  # single-attribute queries ("auto": 40 independent attributes)
    # the same files through the command line: train, index (a flat folder, listed by the table), search by attributes
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", str(root / "img_align_celeba"), "--attributes", str(root / "list_attr_celeba.txt"), "--out",
                     str(tmp_path / "m"), "--epochs", "1", "--image-size", "32", "--dim", "16"]) == 0
        assert main(["index", str(root / "img_align_celeba"), "--attributes", str(root / "list_attr_celeba.txt"),
                     "--out", str(tmp_path / "idx"), "--checkpoint", str(tmp_path / "m" / "best.pt")]) == 0
        assert main(["search", str(tmp_path / "idx"), "--attributes", "male, smiling", "-k", "4"]) == 0
    lines = out.getvalue().splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("male, smiling"))
    hits = [l.split()[-1] for l in lines[at + 1:at + 5]]
    assert len(hits) == 4 and all(h.endswith(".jpg") and (root / "img_align_celeba" / h).is_file() for h in hits)
    from cbir.cli import search_folder_index  # the Python call of before (queries as attributes, attributes=True) still works
    with contextlib.redirect_stdout(io.StringIO()):
        with pytest.warns(DeprecationWarning, match="attributes=True is deprecated"):
            old = search_folder_index(str(tmp_path / "idx"), ["male, smiling"], k=4, attributes=True)
        assert old == search_folder_index(str(tmp_path / "idx"), attributes=["male, smiling"], k=4)
        assert [i for i, _ in old[0]] == hits


def test_cli_refuses_bce_and_glyphs_with_attributes(tmp_path):
    table = write_attribute_csv(make_shapes(n=20, size=32), tmp_path / "s")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", str(tmp_path / "s"), "--attributes", str(table), "--out", str(tmp_path / "m"), "--loss", "arcface"]) == 2
    assert "--loss ntxent (default) or triplet" in err.getvalue()
    with contextlib.redirect_stderr(err):
        assert main(["train", "--glyphs", "--attributes", str(table), "--out", str(tmp_path / "m")]) == 2
    assert "needs the image FOLDER" in err.getvalue()
