"""Chapter 00's static lens explorer: the grid agrees with the model, the panels cover every choice."""

from types import SimpleNamespace

import pytest
import torch

from lmscope.core.lens_explorer import lens_explorer, lens_grid
from lmscope.core.tuned_lens import LogitLens


class CharTokenizer:
    """Letters as tokens (id = position in the alphabet + 3), enough for a tiny model's prompts."""

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[3 + (ord(c) - 97) % 26 for c in text.lower() if c.isalpha()]]))

    def decode(self, ids):
        return "".join(chr(97 + (int(i) - 3) % 26) if int(i) >= 3 else f"<{int(i)}>" for i in ids)


def test_last_layer_of_the_logit_lens_is_the_model_output(tiny):
    family, model, view = tiny
    if not view.cfg.causal:
        pytest.skip("the lens reads next-token predictions of a causal model")
    tok = CharTokenizer()
    grid, = lens_grid(view, tok, "abcde", k=4)
    with torch.no_grad():
        logits = model(tok("abcde").input_ids).logits[0]
    probs, ids = logits.float().softmax(-1).topk(4, dim=-1)
    assert (grid.ids[-1] == ids.numpy()).all()
    assert grid.probs[-1] == pytest.approx(probs.numpy(), abs=1e-6)
    assert grid.probs.shape == (view.cfg.n_layers, 5, 4)


def test_explorer_has_a_panel_per_prompt_and_lens_with_hover_tips(tiny):
    family, model, view = tiny
    if not view.cfg.causal:
        pytest.skip("causal models only")
    tok = CharTokenizer()
    explorer = lens_explorer(view, tok, ["abc", "hello"], lenses={"logit lens": LogitLens(view), "again": LogitLens(view)})
    assert set(explorer.panels) == {(p, l) for p in ("abc", "hello") for l in ("logit lens", "again")}
    html = explorer.to_html()
    assert html.count("data-tip=") == 2 * view.cfg.n_layers * (3 + 5)
    assert "first leads after layer" in explorer.panels[("hello", "again")]


def test_bad_prompts_are_named():
    with pytest.raises(ValueError, match="prompts is empty"):
        lens_explorer(None, None, [])
