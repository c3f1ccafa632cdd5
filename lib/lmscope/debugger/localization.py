"""Case study 4: which heads and values write an answer, whether they matter, and where the
information moves from the subject to the last position.

For a clean prompt (``"The capital of France is"``) and a corrupted one of the same length that
changes only the subject (``"The capital of Italy is"``):

1. exact direct logit attribution (:mod:`lmscope.debugger.dla`) of the logit difference
   ``answer - foil`` at the last position: the top heads and FF values;
2. a knock-out: the answer's probability with the top ``n_top`` heads by direct effect zeroed (at
   every position) against as many random heads of the same layers (the matched control);
3. activation patching of the residual stream, attention and FF outputs at every (layer, position)
   (:mod:`lmscope.debugger.patching`), and attribution patching's error against it. The layer where
   restoring the subject position stops helping and restoring the last position starts to is where
   the subject's information has moved.

>>> case = localize_answer(dbg, "The capital of France is", "The capital of Italy is", " Paris", " Rome")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.core.hooks import hook_name
from lmscope.debugger.dla import Attribution, direct_logit_attribution
from lmscope.debugger.patching import PatchGrid, activation_patching, attribution_error, attribution_patching

Tensor = torch.Tensor


def knock_out_heads(view, input_ids: Tensor, heads: list[tuple[int, int]]) -> Tensor:
    """Next-token probabilities (d_vocab,) at the last position with ``heads`` [(layer, head)] zeroed everywhere."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def zero(hs):
        def edit(t: Tensor) -> Tensor:  # (B, T, H, d_model)
            t = t.clone()
            t[:, :, hs] = 0
            return t
        return edit

    with torch.no_grad(), view.overwrite({hook_name(l, "attn_heads"): zero(hs) for l, hs in by_layer.items()}):
        logits = view.model(input_ids=input_ids.reshape(1, -1).to(view.device), **view.last_logits_only()).logits[0, -1]
    return logits.float().softmax(-1)


def random_heads(view, layers: list[int], seed: int, exclude=()) -> list[tuple[int, int]]:
    """One random head in each of ``layers`` (repeats allowed), none in ``exclude``; the same seed, the same heads."""
    g = torch.Generator().manual_seed(seed)
    taken, out = set(exclude), []
    for layer in layers:
        free = [h for h in range(view.cfg.n_heads) if (layer, h) not in taken]
        if not free:
            raise ValueError(f"Layer {layer} has no head left for the random control: pick fewer heads.")
        head = free[int(torch.randint(len(free), (1,), generator=g))]
        taken.add((layer, head))
        out.append((layer, head))
    return out


@dataclass
class LocalizationCase:
    """The readings of :func:`localize_answer`."""

    tokens: list[str]
    subject_positions: list[int]  # where the clean and corrupted prompts differ
    attribution: Attribution  # of logit(answer) - logit(foil), at every position
    top_heads: list[tuple[int, int]]  # by direct effect at the last position, largest first
    random_heads: list[tuple[int, int]]
    p_clean: float
    p_heads_off: float
    p_random_heads_off: float
    grids: dict[str, PatchGrid]  # activation patching, metric logit_diff
    approx: dict[str, PatchGrid]  # attribution patching of the same grids
    approx_error: dict[str, dict[str, float]]

    def handover_layer(self, threshold: float = 0.5) -> int | None:
        """The first layer where restoring the last position's residual recovers more than restoring
        the subject's (None if that never happens)."""
        rec = self.grids["resid_pre"].recovered()  # (L, T)
        subject = rec[:, self.subject_positions].max(dim=1).values
        last = rec[:, -1]
        over = ((last > subject) & (last > threshold)).nonzero()
        return int(over[0]) if len(over) else None

    def numbers(self) -> dict:
        """Headline numbers (for the closing note and the two-model chapter)."""
        return {"dla_logit_diff": float(self.attribution.logit[-1]),
                "dla_sum_error": float((self.attribution.total() - self.attribution.logit).abs().max()),
                "p_answer": self.p_clean, "p_top_heads_off": self.p_heads_off,
                "p_random_heads_off": self.p_random_heads_off, "handover_layer": self.handover_layer(),
                **{f"attribution_patching_r_{c}": e["correlation"] for c, e in self.approx_error.items()}}


def localize_answer(dbg, clean_prompt, corrupted_prompt, answer: str | int, foil: str | int, n_top: int = 5,
                    seed: int = 0) -> LocalizationCase:
    """Run the three readings of the module docstring; prompts are text or ids, answers single tokens."""
    view = dbg.view
    clean, corrupted = dbg.encode(clean_prompt)[0], dbg.encode(corrupted_prompt)[0]
    if clean.shape != corrupted.shape:
        raise ValueError(f"corrupted_prompt has {corrupted.shape[0]} tokens and clean_prompt {clean.shape[0]}: "
                         "reword it so both have the same length (e.g. swap a one-token subject for another).")
    a = dbg.token_id(answer) if isinstance(answer, str) else int(answer)
    f = dbg.token_id(foil) if isinstance(foil, str) else int(foil)
    subject = (clean != corrupted).nonzero().flatten().tolist()
    if not subject:
        raise ValueError("The clean and corrupted prompts are the same: change the subject in corrupted_prompt.")
    tokens = dbg.token_texts(clean.tolist())
    attr = direct_logit_attribution(view, clean, target=a, foil=f, tokens=tokens)
    flat = attr.heads[..., -1].flatten()
    top = [divmod(int(i), view.cfg.n_heads) for i in flat.topk(min(n_top, flat.numel())).indices]
    control = random_heads(view, [l for l, _ in top], seed, exclude=top)
    with torch.no_grad():
        p_clean = float(view.model(input_ids=clean[None], **view.last_logits_only()).logits[0, -1].float().softmax(-1)[a])
    p_off = float(knock_out_heads(view, clean, top)[a])
    p_rand = float(knock_out_heads(view, clean, control)[a])
    kw = dict(target=a, foil=f, metric="logit_diff", components=("resid_pre", "attn_out", "mlp_out"), tokens=tokens)
    grids = activation_patching(view, clean, corrupted, **kw)
    approx = attribution_patching(view, clean, corrupted, **kw)
    return LocalizationCase(tokens, subject, attr, top, control, p_clean, p_off, p_rand, grids, approx,
                            attribution_error(grids, approx))
