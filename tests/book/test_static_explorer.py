"""The static-page explorer renderer: one panel per choice, self-contained HTML, clear errors."""

import re

import numpy as np
import pytest

from lmscope.static_explorer import SEP, StaticExplorer, bar_rows, heatmap


def small_explorer(**kw):
    panels = {(a, b): f"<p>{a}-{b}</p>" for a in ("x", "y") for b in ("1", "2")}
    return StaticExplorer("demo", {"letter": ["x", "y"], "digit": ["1", "2"]}, panels, **kw)


def test_every_panel_is_in_the_page_keyed_by_its_choice():
    html = small_explorer().to_html()
    keys = re.findall(r"data-key='([^']*)'", html)
    assert sorted(keys) == sorted(f"{a}{SEP}{b}" for a in "xy" for b in "12")
    assert html.count("<select") == 2 and "<script>" in html
    assert not re.search(r"(src|href)=['\"]?https?:", html), "nothing may be loaded from elsewhere"


def test_search_box_only_when_asked():
    assert "<input data-lmx-search" not in small_explorer().to_html()
    assert "<input data-lmx-search" in small_explorer(search="a token").to_html()


def test_wrong_keys_and_empty_controls_are_named():
    with pytest.raises(ValueError, match="panel key .* 2 controls"):
        StaticExplorer("t", {"a": ["1"], "b": ["2"]}, {("1",): ""})
    with pytest.raises(ValueError, match="control 'a' has no values"):
        StaticExplorer("t", {"a": []}, {})
    with pytest.raises(ValueError, match="at least one control"):
        StaticExplorer("t", {}, {})


def test_heatmap_cells_carry_text_colour_and_escaped_tips():
    html = heatmap(np.array([[0.0, 1.0]]), [["<a>", "b"]], [["tip 'one'", "two"]], ["r"], ["c1", "c2"])
    assert html.count("<td") == 2 and "&lt;a&gt;" in html and "tip &#x27;one&#x27;" in html
    assert "rgba(31,119,180,1.00)" in html and "rgba(31,119,180,0.00)" in html
    with pytest.raises(ValueError, match="expected"):
        heatmap(np.zeros((2, 2)), [], [], ["r"], ["c"])


def test_bar_rows_signs_and_search_text():
    html = bar_rows(["name"], [["up"], ["down"]], [2.0, -1.0], search=["up tokens", "down tokens"])
    assert "width:80px" in html and "width:40px" in html and "rgba(214,39,40" in html
    assert "data-search='down tokens'" in html


def test_plain_text_fallback_is_short():
    assert repr(small_explorer()) == "StaticExplorer('demo': 4 precomputed views; open as HTML)"
