"""make_glyphs: deterministic, balanced, class templates independent of n / n_classes, bad input, folder round trip."""
import numpy as np
import pytest
from PIL import Image

import cbir.data
from cbir.data import _backgrounds, _contrasting_colours, draw_glyph, glyph_template, load_image_folder, make_glyphs

LUMA = np.array([0.299, 0.587, 0.114])


def _pixels(ds):
    return np.stack([np.asarray(ds[i]) for i in range(len(ds))])


def _ink(ds):
    "Where a glyph drawn on the plain grey background (clutter=0) put its strokes: (N, H, W) bool."
    return (_pixels(ds) != 128).any(-1)


@pytest.fixture(scope="module")
def glyphs():
    return make_glyphs(4000, 200, 64, seed=0)


def test_fields_shapes_and_dtypes(glyphs):
    ds = glyphs
    assert len(ds) == 4000 and ds.name == "glyphs" and ds.attributes is None and ds.attribute_names == []
    assert ds.classes == [f"glyph-{c:03d}" for c in range(200)]
    assert ds.ids[0] == "glyphs-000000" and ds.ids[-1] == "glyphs-003999" and len(set(ds.ids.tolist())) == 4000
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (4000,)
    for i in range(0, 4000, 397):
        im = ds[i]
        assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
        assert np.asarray(im).dtype == np.uint8
    assert make_glyphs(40, 20, size=96)[0].size == (96, 96) and make_glyphs(40, 20, size=16)[0].size == (16, 16)
    assert make_glyphs(2400, 1200, size=16).classes[-1] == "glyph-1199"  # names stay unique past 1000 classes


def test_balanced_and_shuffled(glyphs):
    assert np.bincount(glyphs.labels, minlength=200).tolist() == [20] * 200
    odd = make_glyphs(437, 100, size=16)
    assert np.bincount(odd.labels, minlength=100).tolist() == [5] * 37 + [4] * 63  # remainder: the first classes
    # shuffled: neither sorted nor cycling through the classes in order
    assert (np.diff(glyphs.labels) < 0).any() and not np.array_equal(glyphs.labels, np.arange(4000) % 200)
    assert len(np.unique(glyphs.labels[:200])) < 200


def test_deterministic_by_seed():
    a, b, c = make_glyphs(120, 30, 32, seed=5), make_glyphs(120, 30, 32, seed=5), make_glyphs(120, 30, 32, seed=6)
    assert np.array_equal(_pixels(a), _pixels(b)) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert (_pixels(a) != _pixels(c)).any(axis=(1, 2, 3)).all()  # every image differs
    for clutter, jitter in [(0, 0), (0, 1), (1, 0.5)]:
        x, y = make_glyphs(60, 20, 32, 1, clutter, jitter), make_glyphs(60, 20, 32, 1, clutter, jitter)
        assert np.array_equal(_pixels(x), _pixels(y))


def test_template_is_a_function_of_class_and_seed():
    t = glyph_template(7, seed=3)
    assert 2 <= len(t) <= 4 and all(s.ndim == 2 and s.shape[1] == 2 and len(s) >= 2 for s in t)
    pts = np.concatenate(t)
    assert np.allclose((pts.max(0) + pts.min(0)) / 2, 0) and np.isclose((pts.max(0) - pts.min(0)).max(), 1)
    make_glyphs(100, 50, seed=3)  # drawing sets in between must not change it (no shared random state)
    assert all(np.array_equal(u, v) for u, v in zip(glyph_template(7, seed=3), t)) and len(glyph_template(7, 3)) == len(t)
    assert not np.array_equal(np.concatenate(glyph_template(7, seed=4)), pts)
    assert not np.array_equal(np.concatenate(glyph_template(8, seed=3)), pts)


def test_class_templates_stable_across_n_and_n_classes():
    # drawn without jitter or clutter, an image is its template: same ink for class c whatever n and n_classes
    sets = [make_glyphs(400, 200, seed=2, clutter=0, jitter=0), make_glyphs(100, 50, seed=2, clutter=0, jitter=0),
            make_glyphs(37, 8, seed=2, clutter=0, jitter=0)]
    for c in (0, 5, 7):
        inks = [_ink(ds.subset(ds.labels == c)) for ds in sets]
        assert all((ink == inks[0][0]).all() for ink in inks) and inks[0][0].sum() > 50
    # and that ink is what draw_glyph makes of glyph_template(c, seed) with the centred pose (independent rebuild)
    ds = sets[1]
    for i in range(0, 100, 9):
        c, img = int(ds.labels[i]), np.asarray(ds[i])
        colour = tuple(int(v) for v in img[(img != 128).any(-1)][0])
        rebuilt = draw_glyph(Image.new("RGB", (64, 64), (128, 128, 128)), glyph_template(c, 2), 0.68 * 64 * np.eye(2),
                             width=3, colour=colour)
        assert np.array_equal(np.asarray(rebuilt), img)


def test_make_glyphs_uses_each_class_template(monkeypatch):
    calls = []
    def spy(c, seed=0):
        calls.append((c, seed)); return glyph_template(c, seed)
    monkeypatch.setattr(cbir.data, "glyph_template", spy)
    make_glyphs(20, 10, 16, seed=4)
    assert sorted(calls) == [(c, 4) for c in range(10)]


def test_templates_are_distinct():
    # the plain renders of 200 classes differ pairwise in many pixels, not just a few
    ds = make_glyphs(400, 200, 64, clutter=0, jitter=0)
    first = [int(np.flatnonzero(ds.labels == c)[0]) for c in range(200)]
    ink = _ink(ds.subset(first)).reshape(200, -1)
    diff = (ink[:, None] != ink[None]).sum(-1) + np.eye(200, dtype=int) * 10**6
    assert diff.min() > 60, diff.min()


def test_glyph_stays_inside_the_frame_and_is_always_drawn():
    for size in (16, 32, 64, 96):
        ink = _ink(make_glyphs(1000, 10, size, seed=1, clutter=0))
        k = max(1, int(0.06 * size))  # draw_glyph's default margin
        assert ink.any(axis=(1, 2)).all()
        assert not (ink[:, :k].any() or ink[:, -k:].any() or ink[:, :, :k].any() or ink[:, :, -k:].any()), size


def test_jitter_varies_the_pose():
    def same_ink_within_class(ds):
        ink = _ink(ds)
        return all((ink[ds.labels == c] == ink[ds.labels == c][0]).all() for c in (0, 1))
    assert same_ink_within_class(make_glyphs(60, 2, 64, clutter=0, jitter=0))
    assert not same_ink_within_class(make_glyphs(60, 2, 64, clutter=0, jitter=1))


def test_stroke_colour_contrasts_with_background():
    rng = np.random.default_rng(0)
    for clutter in (0.2, 1.0):
        bg = _backgrounds(2000, 32, rng, clutter)
        colour = _contrasting_colours(bg, rng)
        assert colour.dtype == np.uint8 and colour.shape == (2000, 3)
        gap = np.abs(colour @ LUMA - bg.reshape(2000, -1, 3).mean(1) @ LUMA)
        assert gap.min() > 80, gap.min()
    plain = _contrasting_colours(np.full((500, 8, 8, 3), 128, np.uint8), rng)
    assert (plain @ LUMA).max() < 128 - 80  # on plain grey, strokes are dark


def test_clutter_adds_busy_backgrounds():
    roughness = lambda ds: np.abs(np.diff(_pixels(ds).astype(float), axis=2)).mean()
    assert roughness(make_glyphs(40, 20, 32, clutter=1)) > roughness(make_glyphs(40, 20, 32, clutter=0.2)) \
        > roughness(make_glyphs(40, 20, 32, clutter=0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=10, n_classes=1), "n_classes >= 2"),
    (dict(n=100, n_classes=0), "n_classes >= 2"),
    (dict(n=119, n_classes=60), "use n >= 120"),
    (dict(n=0, n_classes=2), "use n >= 4"),
    (dict(size=15), "size must be >= 16"),
    (dict(size=0), "size must be >= 16"),
    (dict(clutter=-0.1), "clutter and jitter must lie in \\[0, 1\\]"),
    (dict(jitter=1.5), "clutter and jitter must lie in \\[0, 1\\]"),
    (dict(seed=-1), "seed must be a non-negative int"),
    (dict(seed=1.5), "seed must be a non-negative int"),
    (dict(seed=None), "seed must be a non-negative int"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_glyphs(**{"n": 400, "n_classes": 20, **kwargs})


def test_to_folder_round_trip(tmp_path):
    small = make_glyphs(40, 10, 32, seed=9)
    root = small.to_folder(tmp_path / "glyphs40")
    back = load_image_folder(root)
    assert back.classes == small.classes and len(back) == 40
    by_stem = {i.rsplit("/", 1)[-1].removesuffix(".png"): k for k, i in enumerate(back.ids)}
    assert sorted(by_stem) == sorted(small.ids.tolist())
    for i in range(40):
        k = by_stem[small.ids[i]]
        assert back.classes[back.labels[k]] == small.classes[small.labels[i]]
        assert np.array_equal(np.asarray(back[k]), np.asarray(small[i]))  # PNG is lossless


def test_hard_for_raw_pixels_but_templates_distinct():
    "Leave-one-out raw-pixel nearest neighbour (brute force): near chance on the default set, near perfect when plain."
    def p_at_1(ds):
        x = _pixels(ds).reshape(len(ds), -1).astype(np.float32)
        x -= x.mean(1, keepdims=True); x /= np.linalg.norm(x, axis=1, keepdims=True)
        sims = x @ x.T; np.fill_diagonal(sims, -np.inf)
        return float((ds.labels[sims.argmax(1)] == ds.labels).mean())
    hard, plain = p_at_1(make_glyphs(600, 60, 32, seed=0)), p_at_1(make_glyphs(600, 60, 32, seed=0, clutter=0, jitter=0))
    assert hard < 0.2 and plain > 0.95, (hard, plain)  # chance is 9/599 = 0.015
