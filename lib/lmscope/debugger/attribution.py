"""Which values write an answer: where it appears, who pushes it, and whether they matter.

The first case study of the LM-Debugger chapter, for one prompt and one answer token:

1. the logit-lens probability of the answer before attention, after attention and after the
   FF block of every layer (:meth:`lmscope.debugger.engine.LMDebugger.lens_probability`);
2. the sub-updates with the largest direct contribution to the answer's logit,
   ``m_i * (v_i @ W_U[:, answer])`` (:meth:`~lmscope.debugger.engine.LMDebugger.value_contributions`);
3. a knock-out: the answer's next-token probability with those contributors switched off (at every
   position) against as many random values of the same layers switched off (the matched control
   of :func:`lmscope.debugger.interventions.random_values`).

>>> case = attribute_answer(dbg, "The capital of France is", " Paris")   # doctest: +SKIP
>>> case.p_clean, case.p_top_off, case.p_random_off                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention, random_values
from lmscope.debugger.records import SubUpdate
from lmscope.display import figure_text

READING_POINTS = ("before attention", "after attention", "after FF")


@dataclass
class AnswerAttribution:
    """The three readings of :func:`attribute_answer` for one prompt and answer."""

    prompt: object  # text or token ids
    answer_id: int
    answer: str  # the answer as given, or the token's display text for an id
    lens_probability: np.ndarray  # (3, n_layers): P(answer) at READING_POINTS of every layer
    contributors: list[SubUpdate]  # best first; score = signed direct contribution to the answer's logit
    top_off: list[Intervention]  # the contributors, switched off
    random_off: list[Intervention]  # the control: as many random values of the same layers, switched off
    p_clean: float  # P(answer) at the last position, unchanged model
    p_top_off: float  # ... with top_off
    p_random_off: float  # ... with random_off
    top_after_off: tuple[str, float]  # the top next token (text, probability) with top_off

    def first_layer(self, threshold: float = 0.1) -> int | None:
        """The first layer whose logit lens after the FF block gives the answer more than ``threshold``."""
        above = self.lens_probability[2] > threshold
        return int(np.argmax(above)) if above.any() else None


@torch.no_grad()
def attribute_answer(dbg: LMDebugger, prompt, answer: str | int, n_top: int = 10, seed: int = 0) -> AnswerAttribution:
    """Run the three readings (see the module docstring) at the prompt's last position.

    ``answer`` is a single-token text (``" Paris"``) or a token id; ``seed`` draws the random control.
    """
    answer_id = dbg.token_id(answer) if isinstance(answer, str) else int(answer)
    if not 0 <= answer_id < dbg.view.cfg.d_vocab:
        raise ValueError(f"Answer token {answer_id} is outside the vocabulary (0..{dbg.view.cfg.d_vocab - 1}).")
    lens = dbg.lens_probability(prompt, answer_id).numpy()  # (3, n_layers)
    contributors = dbg.value_contributions(prompt, answer_id, top=n_top)
    top_off = [Intervention(u.layer, u.unit, "off") for u in contributors]
    control = random_values(dbg.view, [u.layer for u in contributors], seed, exclude=top_off)
    random_off = [Intervention(iv.layer, iv.unit, "off") for iv in control]

    def answer_probability(interventions) -> tuple[float, torch.Tensor]:
        probs = dbg.logits(prompt, interventions)[-1].softmax(-1)  # (d_vocab,)
        return float(probs[answer_id]), probs

    p_clean, _ = answer_probability([])
    p_top_off, probs_off = answer_probability(top_off)
    p_random_off, _ = answer_probability(random_off)
    best = int(probs_off.argmax())
    text = answer if isinstance(answer, str) else dbg.token_texts([answer_id])[0]
    return AnswerAttribution(prompt, answer_id, text, lens, contributors, top_off,
                             random_off, p_clean, p_top_off, p_random_off,
                             (dbg.token_texts([best])[0], float(probs_off[best])))


def plot_attribution(case: AnswerAttribution):
    """Figure: the answer's logit-lens probability per layer (left) and the top contributors'
    direct contributions to its logit (right; green: m > 0, red: m < 0)."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    layers = np.arange(case.lens_probability.shape[1])
    for row, label in zip(case.lens_probability, READING_POINTS):
        ax.plot(layers, row, marker=".", label=label)
    title = f"logit lens of {case.prompt!r}" if isinstance(case.prompt, str) else "logit lens of the prompt"
    ax.set(xlabel="layer", ylabel=figure_text(f"P({case.answer!r})"), title=figure_text(title))
    ax.legend()
    contrib = case.contributors[::-1]
    names = [f"{u.name} ({' '.join(figure_text(t, max_chars=10) for t in u.tokens[:2])})" for u in contrib]
    bx.barh(names, [u.score for u in contrib], color=["C2" if u.coeff > 0 else "C3" for u in contrib])
    bx.set(xlabel=figure_text(f"direct contribution to the {case.answer!r} logit"),
           title="top sub-updates (green: m > 0, red: m < 0)")
    return fig
