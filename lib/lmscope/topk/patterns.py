"""One head's attention pattern with dense and with top-k attention, read through the score hooks.

The top-k kernel (:func:`lmscope.topk.attention.topk_attention`) never forms the attention
pattern, so the pattern is read another way: every layer's pre-softmax scores are edited with
:func:`keep_topk_scores` through the ``attn_scores`` overwrite hook, which gives the same model
(ties aside); :func:`head_patterns` runs the kernel too, as a cross-check.
"""

from __future__ import annotations

import torch

from lmscope.core.hooks import hook_name, hook_names
from lmscope.core.tokens import token_texts
from lmscope.core.view import ModelView
from lmscope.topk.dropin import use_topk_attention

Tensor = torch.Tensor


def keep_topk_scores(scores: Tensor, k: int) -> Tensor:
    """Pre-softmax scores (..., Tk) with all but the k largest per row set to the dtype's minimum.

    Entries tied with the k-th largest are kept; ``k >= Tk`` returns ``scores`` unchanged.

    >>> keep_topk_scores(torch.tensor([1.0, 3.0, 2.0]), 2).tolist() == [torch.finfo(torch.float32).min, 3.0, 2.0]
    True
    """
    if k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (..., 1)
    return scores.masked_fill(scores < kth, torch.finfo(scores.dtype).min)


@torch.no_grad()
def head_patterns(view: ModelView, tokenizer, prompt: str, layer: int, head: int, k: int) -> dict:
    """Attention pattern of one head, dense and with top-k attention everywhere, and next-token probabilities.

    Returns {'tokens' (T readable token texts), 'dense' (T, T), 'topk' (T, T), 'p_dense' (V,),
    'p_topk' (V,), 'p_topk_kernel' (V,)}: the top-k run edits the scores of every layer through
    the ``attn_scores`` hook (so the pattern can be read); ``p_topk_kernel`` is the same model
    run with the top-k kernel, as a cross-check.
    """
    model = view.model
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(view.device)  # (1, T)
    name = hook_name(layer, "attn_scores")
    with view.capture([name]) as cache:
        p_dense = torch.softmax(model(input_ids=ids, **view.last_logits_only()).logits[0, -1].float(), -1)
    dense = torch.softmax(cache[name][0, head].float(), -1)  # (T, T)
    edits = {n: (lambda s: keep_topk_scores(s, k)) for n in hook_names("attn_scores", range(view.cfg.n_layers))}
    with view.overwrite(edits), view.capture([name]) as cache:
        p_topk = torch.softmax(model(input_ids=ids, **view.last_logits_only()).logits[0, -1].float(), -1)
    topk = torch.softmax(cache[name][0, head].float(), -1)
    with use_topk_attention(view, k):
        p_kernel = torch.softmax(model(input_ids=ids, **view.last_logits_only()).logits[0, -1].float(), -1)
    return {"tokens": token_texts(tokenizer, ids[0].tolist()), "dense": dense.cpu(), "topk": topk.cpu(),
            "p_dense": p_dense.cpu(), "p_topk": p_topk.cpu(), "p_topk_kernel": p_kernel.cpu()}
