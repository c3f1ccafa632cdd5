"""The logit lens: read the residual stream after every layer as a next-token prediction.

The residual after layer ``l`` goes through the model's final norm and unembedding
(:meth:`lmscope.core.view.ModelView.logit_lens`); the last layer's read-out is the model's
own output. :func:`logit_lens` returns the top-k tokens and probabilities for every
layer and position; :mod:`lmscope.display` draws them and wraps them in an explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.core.hooks import hook_names
from lmscope.core.tokens import token_text


@dataclass
class LensTable:
    """Logit-lens read-out of one prompt: ``n_layers`` rows, ``n_pos`` columns, ``k`` ranks."""

    input_tokens: list[str]  # (n_pos,) the prompt's tokens as text
    top_tokens: list[list[list[str]]]  # [layer][pos][rank] text of the top-k predicted tokens
    top_ids: np.ndarray  # (n_layers, n_pos, k) their token ids
    probs: np.ndarray  # (n_layers, n_pos, k) their probabilities

    @property
    def n_layers(self) -> int:
        return self.probs.shape[0]


@torch.no_grad()
def lens_topk(view, input_ids: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k next-token probabilities and ids read from every layer's ``resid_post``.

    ``input_ids`` is (pos,) or (1, pos); returns ``(probs, ids)``, each (n_layers, pos, k).
    """
    input_ids = input_ids.reshape(1, -1)
    names = hook_names("resid_post", range(view.cfg.n_layers))
    _, cache = view.run_with_cache(input_ids, names)
    resid = torch.stack([cache[name][0] for name in names])  # (n_layers, pos, d_model)
    probs = view.logit_lens(resid).float().softmax(dim=-1)  # (n_layers, pos, d_vocab)
    return probs.topk(k, dim=-1)


def logit_lens(view, tokenizer, prompt: str, k: int = 5) -> LensTable:
    """Logit lens of ``prompt``: top-k tokens and probabilities per layer and position."""
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids[0]  # (pos,)
    probs, ids = lens_topk(view, input_ids, k)
    return LensTable(
        input_tokens=[token_text(tokenizer, t) for t in input_ids],
        top_tokens=[[[token_text(tokenizer, t) for t in pos] for pos in layer] for layer in ids.tolist()],
        top_ids=ids.numpy(),
        probs=probs.numpy(),
    )
