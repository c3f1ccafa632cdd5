"""Chapter 03's static explorer: one head's attention pattern, dense and with top-k attention.

For each prompt, head and k (precomputed, :class:`lmscope.static_explorer.StaticExplorer`): the
head's pattern with dense attention and with top-k attention in every layer (read as in
:mod:`lmscope.topk.patterns`: the pre-softmax scores of every layer edited by
:func:`lmscope.topk.patterns.keep_topk_scores` through the ``attn_scores`` hooks), and the
change of the next-token distribution at the last position: total variation distance,
``KL(dense || top-k)`` and both top-5 lists.
"""

from __future__ import annotations

import torch

from lmscope.core.hooks import hook_name, hook_names
from lmscope.core.tokens import token_texts, vocab_texts
from lmscope.static_explorer import StaticExplorer, heatmap, token_list
from lmscope.topk.patterns import keep_topk_scores


@torch.no_grad()
def patterns_under_topk(view, tokenizer, prompt: str, heads: list[tuple[int, int]], ks: list[int]) -> dict:
    """Dense and top-k patterns of ``heads`` and next-token probabilities for each k.

    Returns {'tokens', 'dense': {(l, h): (T, T)}, 'p_dense' (V,), 'topk': {k: {(l, h): (T, T)}},
    'p_topk': {k: (V,)}}; one dense run and one run per k.
    """
    for layer, head in heads:
        view.layer(layer)
        if not 0 <= head < view.cfg.n_heads:
            raise IndexError(f"head {head} out of range: the model has {view.cfg.n_heads} heads (0..{view.cfg.n_heads - 1})")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive k, got {ks}")
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(view.device)
    names = sorted({hook_name(l, "attn_scores") for l, _ in heads})

    def run():
        with view.capture(names) as cache:
            p = torch.softmax(view.model(input_ids=ids, **view.last_logits_only()).logits[0, -1].float(), -1)
        return p.cpu(), {(l, h): torch.softmax(cache[hook_name(l, "attn_scores")][0, h].float(), -1).cpu()
                         for l, h in heads}

    p_dense, dense = run()
    out = {"tokens": token_texts(tokenizer, ids[0].tolist()), "dense": dense, "p_dense": p_dense,
           "topk": {}, "p_topk": {}}
    for k in ks:
        edits = {n: (lambda s, k=k: keep_topk_scores(s, k)) for n in hook_names("attn_scores", range(view.cfg.n_layers))}
        with view.overwrite(edits):
            out["p_topk"][k], out["topk"][k] = run()
    return out


def _pattern_table(pattern, other, tokens, label: str, other_label: str) -> str:
    T = len(tokens)
    tips = [[f"{tokens[q]!r} -> {tokens[j]!r}: {label} {pattern[q, j]:.3f}, {other_label} {other[q, j]:.3f}"
             for j in range(T)] for q in range(T)]
    cells = [[""] * T for _ in range(T)]
    return heatmap(pattern.numpy(), cells, tips, [f"{q}:{t[:6]}" for q, t in enumerate(tokens)],
                   [str(j) for j in range(T)], corner="query \\ key")


def topk_panel(result: dict, head: tuple[int, int], k: int, texts) -> str:
    """Side-by-side dense and top-k patterns of ``head``, and the next-token change."""
    tokens, dense, topk = result["tokens"], result["dense"][head], result["topk"][k][head]
    p, q = result["p_dense"], result["p_topk"][k]
    tv = 0.5 * float((p - q).abs().sum())
    kl = float((p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum())

    def top5(dist):
        top = dist.topk(5)
        return token_list([texts[i] for i in top.indices.tolist()], top.values.tolist())

    layer, h = head
    return (f"<p>layer {layer} head {h}, top-{k} attention in every layer. Next token: total variation "
            f"{tv:.3f}, KL(dense || top-k) {kl:.4f}.<br>dense: {top5(p)}<br>top-{k}: {top5(q)}</p>"
            f"<div style='display:flex;gap:16px;flex-wrap:wrap'><div><b>dense</b>"
            f"{_pattern_table(dense, topk, tokens, 'dense', f'top-{k}')}</div><div><b>top-{k}</b>"
            f"{_pattern_table(topk, dense, tokens, f'top-{k}', 'dense')}</div></div>")


def topk_static_explorer(view, tokenizer, prompts: list[str], heads: list[tuple[int, int]] | None = None,
                         ks: tuple[int, ...] = (1, 2, 4, 8)) -> StaticExplorer:
    """The chapter's static explorer over ``prompts`` x ``heads`` (default: head 0 of three layers) x ``ks``."""
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    L = view.cfg.n_layers
    heads = heads or sorted({(0, 0), (L // 2, 0), (L - 1, 0)})
    texts = vocab_texts(tokenizer, view.cfg.d_vocab)
    panels = {}
    for prompt in prompts:
        result = patterns_under_topk(view, tokenizer, prompt, heads, list(ks))
        for head in heads:
            for k in ks:
                panels[(prompt, f"L{head[0]}H{head[1]}", str(k))] = topk_panel(result, head, k, texts)
    return StaticExplorer(
        title=f"top-k attention on {view.name}: a head's pattern, dense and top-k (precomputed)",
        controls={"prompt": list(prompts), "head": [f"L{l}H{h}" for l, h in heads], "k": [str(k) for k in ks]},
        panels=panels, hint="hover a cell: the query and key tokens and both attention weights")
