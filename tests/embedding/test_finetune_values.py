"""Fine-tuning the last layer's FF values on cached activations: exact at delta = 0, and it learns."""

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.finetune import finetune_last_values
from lmscope.embedding.sentiment_data import LabelledTexts
from lmscope.embedding.translate import sentence_features

from conftest import make_tiny_model
from test_translate import WordTokenizer, _toy_data


def test_finetune_on_cached_activations_matches_the_model():
    """At delta = 0 the cached computation gives exactly the model's features; training lowers the loss."""
    view = ModelView(make_tiny_model("llama"))
    tok, data = WordTokenizer(), _toy_data()
    ft0 = finetune_last_values(view, tok, data, steps=1, lr=0.0)
    assert ft0.delta.abs().max() == 0 and ft0.losses[0] == pytest.approx(0.6931, abs=1e-3)
    ft = finetune_last_values(view, tok, data, steps=60, lr=1e-2)
    assert ft.losses[-1] < ft.losses[0]
    assert ft.delta.shape == (view.cfg.d_ff, view.cfg.d_model) and ft.mean_update().shape == (view.cfg.d_model,)
    # apply the delta to the model: features then match the fine-tuned head's training view
    with torch.no_grad():
        view.layers[-1].ff_values.add_(ft.delta.double())
    X = sentence_features(view, tok, data.texts)
    assert ft.probe.accuracy(X, data.labels) == 1.0
    assert all(p.grad is None for p in view.model.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        finetune_last_values(ModelView(make_tiny_model("llama")), WordTokenizer(), LabelledTexts([], []))
