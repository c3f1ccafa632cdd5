"""The embedding-space explorer and its HTML tables."""

import pytest

from lmscope import ModelView
from lmscope.display import esc
from lmscope.embedding.projection import Projector
from lmscope.embedding.widgets import embedding_explorer, pairs_html, reading_html

from conftest import make_tiny_model


@pytest.fixture
def view():
    return ModelView(make_tiny_model("llama"))


def test_explorer_widget_updates(view):
    proj = Projector(view)
    box = embedding_explorer(proj, k=4)
    layer, group, index = box.children[0].children
    out = box.children[1]
    assert "top token" in out.value
    group.value = "W_QK"
    assert index.max == view.cfg.n_heads - 1 and "row token" in out.value
    group.value = "W_O"
    index.value = 5
    assert out.value == reading_html(proj, layer.value, "W_O", 5, 4)


def test_tables_show_every_token_escaped(view):
    proj = Projector(view)
    pairs = proj.head_pairs(0, 1, "vo", k=3)
    html = pairs_html(pairs)
    assert html.count("<tr>") == 4 and all(esc(t) in html for t in pairs.row_tokens + pairs.col_tokens)
    assert reading_html(proj, 0, "W_VO", 1, 3) == pairs_html(proj.head_pairs(0, 1, "vo", k=3, drop_identical=True))
    top = proj.read(2, "ff_values", 3, k=5)
    html = reading_html(proj, 2, "ff_values", 3, 5)
    assert html.count("<tr>") == 6 and "<td style='padding:1px 8px'><" not in html  # token text is escaped
    assert all(esc(t) in html for t in top.tokens)
