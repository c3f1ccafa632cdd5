"""Chapter 03's static explorer: top-k with k >= length is dense attention; k = 1 is one key per query."""

from types import SimpleNamespace

import pytest
import torch

from conftest import make_tiny_model
from lmscope import ModelView
from lmscope.topk.explorer import patterns_under_topk, topk_static_explorer


class CharTokenizer:
    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[3 + (ord(c) - 97) % 26 for c in text.lower() if c.isalpha()]]))

    def __len__(self):
        return 29

    def decode(self, ids):
        return "".join(chr(97 + (int(i) - 3) % 26) if int(i) >= 3 else f"<{int(i)}>" for i in ids)

    def batch_decode(self, batch):
        return [self.decode(ids) for ids in batch]


@pytest.fixture(scope="module")
def view():
    return ModelView(make_tiny_model("llama"))


def test_k_at_least_the_length_is_dense_and_k_one_keeps_one_key(view):
    prompt = "abcdefg"  # 7 tokens
    heads = [(0, 1), (2, 3)]
    result = patterns_under_topk(view, CharTokenizer(), prompt, heads, [1, 7])
    for head in heads:
        assert torch.allclose(result["topk"][7][head], result["dense"][head], atol=1e-12)
        one = result["topk"][1][head]
        assert torch.allclose(one.max(-1).values, torch.ones(7, dtype=one.dtype), atol=1e-9)
    assert torch.allclose(result["p_topk"][7], result["p_dense"], atol=1e-12)


def test_explorer_panels_and_bad_heads(view):
    explorer = topk_static_explorer(view, CharTokenizer(), ["abcde"], heads=[(1, 0)], ks=(1, 8))
    assert set(explorer.panels) == {("abcde", "L1H0", "1"), ("abcde", "L1H0", "8")}
    assert "total variation 0.000" in explorer.panels[("abcde", "L1H0", "8")]
    with pytest.raises(IndexError, match="head 9 out of range"):
        patterns_under_topk(view, CharTokenizer(), "abc", [(0, 9)], [1])
