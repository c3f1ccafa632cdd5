"""The logit lens: shapes, probabilities, the last layer equals the model's own prediction."""

import warnings
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

from lmscope.core.lens import LensTable, lens_topk, logit_lens
from lmscope.core.tokens import token_text
from lmscope.display import figure_text, plot_logit_lens

matplotlib.use("Agg")


class CharTokenizer:
    """Token id = character code % 97; enough to test the text plumbing without a download."""

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) % 97 for c in text]]))

    def decode(self, ids):
        return "".join(" " if i == 32 else chr(65 + i % 26) for i in ids)


def test_lens_topk_last_layer_is_the_models_prediction(tiny):
    family, model, view = tiny
    input_ids = torch.tensor([5, 17, 3, 42, 8, 60])
    probs, ids = lens_topk(view, input_ids, k=3)
    assert probs.shape == ids.shape == (view.cfg.n_layers, 6, 3)
    assert torch.all(probs[..., :-1] >= probs[..., 1:]), "ranks must be sorted"
    assert torch.all((probs >= 0) & (probs <= 1))
    with torch.no_grad():
        logits = model(input_ids=input_ids[None]).logits[0]  # (pos, d_vocab)
    expected = logits.float().softmax(-1).topk(3, dim=-1)
    torch.testing.assert_close(probs[-1], expected.values)
    assert torch.equal(ids[-1], expected.indices)


def test_logit_lens_table_and_plot(tiny):
    _, _, view = tiny
    table = logit_lens(view, CharTokenizer(), "a b c", k=4)
    assert table.input_tokens == [token_text(CharTokenizer(), ord(c) % 97) for c in "a b c"]
    assert "\u2423" in table.input_tokens[1], "spaces are made visible"
    assert table.probs.shape == table.top_ids.shape == (view.cfg.n_layers, 5, 4)
    assert len(table.top_tokens) == view.cfg.n_layers and len(table.top_tokens[0][0]) == 4

    fig = plot_logit_lens(table)
    assert len(fig.axes) == 2  # heatmap and colour bar
    fig = plot_logit_lens(table, position=2)
    assert len(fig.axes) == 3  # plus the top-k panel of position 2


def test_plot_labels_every_cell():
    table = LensTable(
        input_tokens=["x", "y"],
        top_tokens=[[["p", "q"], ["r", "s"]]],
        top_ids=np.zeros((1, 2, 2), dtype=int),
        probs=np.array([[[0.9, 0.1], [0.5, 0.2]]]),
    )
    fig = plot_logit_lens(table)
    assert [t.get_text() for t in fig.axes[0].texts] == ["p", "r"]


def test_figure_text_writes_characters_the_font_lacks_as_code_points():
    # DejaVu Sans (matplotlib's default) has Latin, Greek, Cyrillic and the shown-space sign, no CJK
    assert figure_text("\u2423caf\u00e9 \u03b1\u0436") == "\u2423caf\u00e9 \u03b1\u0436"
    assert figure_text("x\u4e2d\u0995") == "xU+4E2DU+0995"
    assert figure_text("x\u4e2d\u0995", max_chars=8) == "xU+4E2D\u2026"  # whole codes only
    assert figure_text("abc", max_chars=3) == "abc" and figure_text("abcd", max_chars=3) == "abc\u2026"
    table = LensTable(input_tokens=["\u4e2d"], top_tokens=[[["\u0995\u09be", "b"]]],
                      top_ids=np.zeros((1, 1, 2), dtype=int), probs=np.array([[[0.9, 0.1]]]))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph")  # "Glyph ... missing from font(s) ..." when drawn
        fig = plot_logit_lens(table, position=0)
        fig.canvas.draw()
    assert [t.get_text() for t in fig.axes[0].texts] == ["U+0995\u2026"]  # a cell shows up to 8 characters
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["U+4E2D"]


@pytest.mark.slow
def test_logit_lens_on_the_embedded_model(smollm):
    from lmscope import ModelView

    model, tokenizer = smollm
    table = logit_lens(ModelView(model), tokenizer, "The capital of France is", k=5)
    assert table.top_tokens[-1][-1][0] == "\u2423Paris"
