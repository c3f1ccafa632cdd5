"""lmscope.topk.widgets: the pattern explorer and its figure."""

import matplotlib
import pytest
from conftest import make_tiny_model
from topk_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.topk.patterns import head_patterns
from lmscope.topk import widgets
from lmscope.topk.widgets import plot_head_patterns

matplotlib.use("Agg")
PROMPT = "The capital of France is Paris. The capital of Japan is"


def test_plot_head_patterns_panels():
    view, tok = ModelView(make_tiny_model("llama")), WordTokenizer()
    r = head_patterns(view, tok, PROMPT, layer=1, head=0, k=2)
    fig = plot_head_patterns(r, tok, layer=1, head=0, k=2)
    dense, topk, bars = fig.axes[:3]
    assert dense.get_title() == "layer 1 head 0: dense" and topk.get_title() == "layer 1 head 0: top-2"
    assert [t.get_text() for t in dense.get_xticklabels()] == r["tokens"]
    assert len(bars.patches) == 16 and bars.get_title().startswith("next token; total variation ")


def test_widget_redraws_on_every_control(monkeypatch):
    pytest.importorskip("ipywidgets")
    view, tok = ModelView(make_tiny_model("gpt2")), WordTokenizer()
    calls = []

    def recorded(view, tokenizer, prompt, layer, head, k):
        calls.append((prompt, layer, head, k))
        return head_patterns(view, tokenizer, prompt, layer, head, k)

    monkeypatch.setattr(widgets, "head_patterns", recorded)
    box = widgets.topk_widget(view, tok, prompt=PROMPT)
    text, (k, layer, head) = box.children[0], box.children[1].children
    assert layer.max == view.cfg.n_layers - 1 and head.max == view.cfg.n_heads - 1
    k.value, layer.value, head.value = 3, 2, 1
    text.value = "The opposite of hot is"
    assert calls == [(PROMPT, 1, 0, 4), (PROMPT, 1, 0, 3), (PROMPT, 2, 0, 3), (PROMPT, 2, 1, 3),
                     ("The opposite of hot is", 2, 1, 3)]
