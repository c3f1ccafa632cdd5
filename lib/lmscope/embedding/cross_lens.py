"""The same text through two models with different vocabularies: logit-lens readings compared over shared strings.

For each text, the residual after every layer at the last position is read as the logit lens
does (final norm, unembedding, final soft cap: :meth:`lmscope.core.view.ModelView.unembed`), but
only the logits of the shared strings are kept, in the common order of
:class:`lmscope.embedding.cross_vocab.SharedStrings` (``ids_a`` for model a, ``ids_b`` for b). Layer i of model a and layer j of model b
are compared by the Pearson correlation of those n logits, averaged over texts: an (L_a, L_b)
matrix, the functional counterpart of the parameter alignment in
:mod:`lmscope.embedding.cross_vocab`. The control pairs model b's logits in a shuffled string order.
"""

from __future__ import annotations

import numpy as np
import torch

from lmscope.core.hooks import hook_names
from lmscope.core.view import ModelView
Tensor = torch.Tensor


def text_snippets(text: str, n: int, words: int = 24) -> list[str]:
    """``n`` consecutive snippets of ``words`` words of ``text``, newlines as spaces, each ending after a word."""
    tokens = text.split()
    if len(tokens) < n * words:
        raise ValueError(f"The text has {len(tokens)} words; {n} snippets of {words} words need {n * words}.")
    return [" ".join(tokens[i * words:(i + 1) * words]) for i in range(n)]


@torch.no_grad()
def shared_lens(view: ModelView, tokenizer, texts: list[str], ids: Tensor) -> Tensor:
    """Logit-lens logits of the last position of every text at every layer, over ``ids`` only.

    Returns (n_texts, n_layers, len(ids)) float32, each row centred and scaled to unit norm (so a
    dot product is a Pearson correlation over the shared strings).
    """
    names = hook_names(["resid_post"], range(view.cfg.n_layers))
    U = view.W_U.detach()[:, ids].float()  # (d_model, n)
    b = view.b_U
    out = []
    for text in texts:
        input_ids = tokenizer(text, return_tensors="pt").input_ids
        _, cache = view.run_with_cache(input_ids, names, **view.last_logits_only())
        resid = torch.stack([cache[name][0, -1] for name in names])  # (n_layers, d_model)
        logits = view.final_norm(resid).float() @ U  # (n_layers, n)
        if b is not None:
            logits = logits + b.detach()[ids].float()
        logits = view.softcap_logits(logits)
        logits = logits - logits.mean(1, keepdim=True)
        out.append(logits / logits.norm(dim=1, keepdim=True).clamp_min(1e-30))
    return torch.stack(out)


def lens_similarity(lens_a: Tensor, lens_b: Tensor, order: Tensor | None = None) -> np.ndarray:
    """(L_a, L_b): mean over texts of the correlation of layer i's shared-string logits with layer j's.

    ``lens_a`` (texts, L_a, n), ``lens_b`` (texts, L_b, n) from :func:`shared_lens` with the same
    shared strings; ``order`` (n,): read model b's strings in this order (a permutation: the control).
    """
    if lens_a.shape[0] != lens_b.shape[0] or lens_a.shape[2] != lens_b.shape[2]:
        raise ValueError(f"lens_a {tuple(lens_a.shape)} and lens_b {tuple(lens_b.shape)} need the same texts and "
                         "shared strings: build both with shared_lens on the same texts and SharedStrings.")
    if order is not None:
        lens_b = lens_b[:, :, order]
    return torch.einsum("tin,tjn->ij", lens_a, lens_b).div(lens_a.shape[0]).numpy()


def top1_agreement(lens_a: Tensor, lens_b: Tensor) -> float:
    """Share of texts where both models' last layers predict the same shared string first."""
    return float((lens_a[:, -1].argmax(-1) == lens_b[:, -1].argmax(-1)).float().mean())
