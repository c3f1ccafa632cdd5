"""Chapter 02's static explorer: switching values off is the model run with those coefficients zero."""

from types import SimpleNamespace

import pytest
import torch

from conftest import make_tiny_model
from lmscope import ModelView, hook_name
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.explorer import OFF, TRACE, debugger_static_explorer, switch_off


class CharTokenizer:
    """Letters as tokens (a -> 3, b -> 4, ...), with the decode methods the debugger reads."""

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[3 + (ord(c) - 97) % 26 for c in text.lower() if c.isalpha()]]))

    def __len__(self):
        return 29

    def decode(self, ids):
        return "".join(chr(97 + (int(i) - 3) % 26) if int(i) >= 3 else f"<{int(i)}>" for i in ids)

    def batch_decode(self, batch):
        return [self.decode(ids) for ids in batch]


@pytest.fixture(scope="module")
def debugger():
    view = ModelView(make_tiny_model("llama"))
    return LMDebugger(view, CharTokenizer(), k=5, n_updates=4)


def test_switch_off_equals_zeroing_those_coefficients(debugger):
    view, prompt = debugger.view, "abcabc"
    result = switch_off(debugger, prompt, n_off=3)
    off = {}
    for name in result.values:
        layer, unit = (int(x) for x in name[1:].split("D"))
        off.setdefault(layer, []).append(unit)

    def zero(units):
        def edit(m):
            m = m.clone()
            m[..., units] = 0
            return m
        return edit

    ids = CharTokenizer()(prompt).input_ids
    with torch.no_grad():
        p = view.model(ids).logits[0, -1].float().softmax(-1)
        with view.overwrite({hook_name(l, "ff_coeffs"): zero(u) for l, u in off.items()}):
            q = view.model(ids).logits[0, -1].float().softmax(-1)
    top = int(p.argmax())
    assert CharTokenizer().decode([top]) == result.token
    assert result.p_before == pytest.approx(float(p[top]), abs=1e-6)
    assert result.p_after == pytest.approx(float(q[top]), abs=1e-6)
    assert len(result.values) == 3


def test_explorer_has_trace_and_switch_off_per_prompt(debugger):
    explorer = debugger_static_explorer(debugger, ["abc", "hello"], n_off=2)
    assert set(explorer.panels) == {(p, v) for p in ("abc", "hello") for v in (TRACE, OFF)}
    assert explorer.panels[("abc", TRACE)].count("<tr>") == debugger.view.cfg.n_layers + 1
    with pytest.raises(ValueError, match="n_off must be at least 1"):
        switch_off(debugger, "abc", n_off=0)
