"""Chapter 01's static explorer: the head direction is W_VO's top singular vector; panels cover every layer."""

import pytest
import torch

from lmscope.embedding.explorer import ALL, HEADS, VALUES, embedding_static_explorer, head_direction
from lmscope.embedding.projection import Projector


def test_head_direction_is_the_top_right_singular_vector_of_the_dense_W_VO(tiny):
    family, model, view = tiny
    for layer, head in [(0, 0), (view.cfg.n_layers - 1, view.cfg.n_heads - 1)]:
        A, B = view.layer(layer).W_VO(head)
        W = (A @ B.T).detach().double()
        _, S, Vh = torch.linalg.svd(W)
        direction, share = head_direction(view, layer, head)
        assert abs(float(direction.double() @ Vh[0])) == pytest.approx(1.0, abs=1e-6)
        assert share == pytest.approx(float(S[0] ** 2 / (S ** 2).sum()), rel=1e-6)


def test_explorer_panels_and_search_rows(tiny):
    family, model, view = tiny
    proj = Projector(view)
    explorer = embedding_static_explorer(proj, layers=[0, 2], n_values=3, k=4)
    assert set(explorer.panels) == {("0", VALUES), ("0", HEADS), ("2", VALUES), ("2", HEADS), (ALL, VALUES)}
    html = explorer.to_html()
    assert html.count("data-search='L0D") == 2 * 3 and html.count("data-search='L2H") == view.cfg.n_heads
    with pytest.raises(IndexError):
        embedding_static_explorer(proj, layers=[view.cfg.n_layers])


def test_explorer_from_the_projection_index_is_the_same_page(tiny):
    from lmscope.embedding.index import ProjectionIndex

    family, model, view = tiny
    proj = Projector(view)
    index = ProjectionIndex.compute(view, k=12)
    fast = embedding_static_explorer(proj, n_values=3, k=4, index=index)
    assert fast.panels == embedding_static_explorer(proj, n_values=3, k=4).panels


def test_value_rows_read_each_value_as_the_projector_does(tiny):
    from lmscope.embedding.explorer import value_rows

    family, model, view = tiny
    proj = Projector(view)
    for row in value_rows(proj, 1, n_values=3, k=4):
        unit = int(row["name"].split("D")[1])
        assert row["top"] == proj.read(1, "ff_values", unit, 4).tokens
        assert row["bottom"] == proj.read(1, "ff_values", unit, 3, negative=True).tokens
