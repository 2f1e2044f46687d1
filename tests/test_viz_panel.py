"""`cbir.viz.SearchPanel`: drive its widgets as a user would and check what it searched and drew."""
import numpy as np
import pytest
import torch

from cbir.crossmodal import CrossModal
from cbir.data import make_shapes, query_gallery_split
from cbir.embed import ColorHistogramEmbedder, Embedder, PixelEmbedder
from cbir.search import Searcher
from cbir.viz import HIT_MARK, MISS_MARK, SearchPanel


@pytest.fixture(scope="module")
def setup():
    ds = make_shapes(n=96, size=32, seed=0)
    q_idx, g_idx = query_gallery_split(ds, n_queries_per_class=1, seed=0)
    queries, gallery = ds.subset(q_idx), ds.subset(g_idx)
    torch.manual_seed(0)
    xm = CrossModal(Embedder.from_name("smallcnn", weights=None, image_size=32, projection=16), ds.attribute_names)
    searchers = {"pixels": Searcher.build(PixelEmbedder(image_size=16), gallery),
                 "histogram": Searcher.build(ColorHistogramEmbedder(), gallery),
                 "cross-modal": Searcher.build(xm, gallery)}
    return queries, gallery, searchers


def _ids(res): return [str(i) for i in np.asarray(res.ids)[0]]


def test_initial_results_match_direct_search(setup):
    queries, gallery, searchers = setup
    panel = SearchPanel(searchers, queries, k=5)
    assert panel.message is None and panel.figure is not None
    assert _ids(panel.results) == _ids(searchers["pixels"].search(queries[0], k=5))
    assert panel.query is queries[0] or np.array_equal(np.asarray(panel.query), np.asarray(queries[0]))


def test_widgets_drive_the_search(setup):
    queries, gallery, searchers = setup
    panel = SearchPanel(searchers, queries, k=5)
    first = _ids(panel.results)
    panel.query_picker.value = 4
    assert _ids(panel.results) == _ids(searchers["pixels"].search(queries[4], k=5)) != first
    panel.k.value = 3
    assert np.asarray(panel.results.ids).shape == (1, 3)
    panel.embedding.value = "histogram"
    assert _ids(panel.results) == _ids(searchers["histogram"].search(queries[4], k=3))
    assert len(panel.out.outputs) == 1 and "image/png" in panel.out.outputs[0]["data"]  # the grid is in the Output area


def test_grid_marks_hits_and_names_classes(setup):
    queries, gallery, searchers = setup
    panel = SearchPanel(searchers, queries, k=6)
    panel.query_picker.value = 2
    want_class = queries.classes[queries.labels[2]]
    row = {str(i): r for r, i in enumerate(gallery.ids)}
    got = [gallery.classes[gallery.labels[row[i]]] for i in _ids(panel.results)]
    axes = panel.figure.axes
    assert axes[0].get_xlabel() == want_class
    for ax, cls in zip(axes[1:], got):
        assert ax.get_xlabel() == cls
        assert ax.get_title().startswith(HIT_MARK if cls == want_class else MISS_MARK)


def test_attribute_text_only_for_cross_modal_models(setup):
    queries, gallery, searchers = setup
    panel = SearchPanel(searchers, queries, k=4)
    assert panel.text.disabled and panel.button.disabled  # pixels cannot embed text
    panel.embedding.value = "cross-modal"
    assert not panel.text.disabled
    panel.text.value = "red striped"
    panel.button.click()
    assert panel.message is None and panel.query == "red striped"
    assert _ids(panel.results) == _ids(searchers["cross-modal"].search_attributes("red striped", k=4))
    # hits for a text query: the result has every asked attribute
    red, striped = gallery.attribute_names.index("color=red"), gallery.attribute_names.index("fill=striped")
    row = {str(i): r for r, i in enumerate(gallery.ids)}
    for ax, i in zip(panel.figure.axes[1:], _ids(panel.results)):
        has = bool(gallery.attributes[row[i], red] and gallery.attributes[row[i], striped])
        assert ax.get_title().startswith(HIT_MARK if has else MISS_MARK)
    panel.k.value = 2  # changing K keeps the attribute query
    assert panel.query == "red striped" and _ids(panel.results) == _ids(searchers["cross-modal"].search_attributes("red striped", k=2))


def test_bad_attribute_text_shows_the_error_instead_of_raising(setup):
    queries, gallery, searchers = setup
    panel = SearchPanel(searchers, queries, k=4)
    panel.embedding.value = "cross-modal"
    before = _ids(panel.results)
    panel.text.value = "purple wobbly"
    panel.button.click()  # must not raise
    assert "unknown attribute name" in panel.message
    assert panel.out.outputs[0]["output_type"] == "stream" and "unknown attribute name" in panel.out.outputs[0]["text"]
    assert _ids(panel.results) == before  # the last good results are kept
    panel.text.value = "red green"  # two values of one one-hot group
    panel.button.click()
    assert "one-hot group" in panel.message
    panel.embedding.value = "pixels"  # back to an image model: the image query runs again
    assert panel.message is None and panel.text.disabled


def test_embedder_index_pairs_and_bad_input(setup):
    queries, gallery, searchers = setup
    s = searchers["pixels"]
    panel = SearchPanel({"pair": (s.embedder, s.index, gallery)}, queries, k=3)
    assert _ids(panel.results) == _ids(s.search(queries[0], k=3)) and panel.figure is not None
    no_images = SearchPanel({"pair": (s.embedder, s.index)}, queries, k=3)  # nothing to draw: said, not raised
    assert no_images.figure is None and "without `images`" in no_images.message
    with pytest.raises(ValueError, match="at least one searcher"): SearchPanel({}, queries)
    with pytest.raises(ValueError, match="at least one query"): SearchPanel(searchers, [])
