"""Steering by switching on FF values found by search, measured against controls.

The experiment of the LM-Debugger chapter (after Geva et al. 2022, who switched on
~10 hand-picked "safe" values to reduce toxicity):

1. search the projection index for a concept (e.g. positive sentiment words) and
   take the ``n_values`` best values;
2. over a set of neutral prompts, switch them "on" (each layer's max
   ``|m_j| * ||v_j||`` of the un-intervened run, at every position) and measure
   (a) the next-token probability mass of the concept's tokens and (b) a lexicon
   score of greedy continuations (concept words minus opposite words);
3. compare with the unchanged model and with ``n_values`` random values switched on
   the same way in the same layers (several draws), using paired differences with
   bootstrap confidence intervals and a Wilcoxon signed-rank test. Continuations are
   generated for the first random draw only (generation is the slow part).

:func:`dose_response` repeats the mass measurement for several scales of the "on"
coefficient: the original's full "on" is a very strong push for a small model, and
:func:`plot_steering` draws both (matplotlib is imported inside it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention, random_values

SUBJECTS = ["the movie", "my new job", "the weather", "our trip", "the restaurant", "this phone", "the meeting",
            "her speech", "the city", "the book", "the game", "my neighbor"]
FRAMES = ["I think {s} is", "Honestly, {s} was", "Everyone says {s} is", "In my opinion {s} is",
          "Yesterday {s} seemed"]

POSITIVE = ["good", "great", "happy", "wonderful", "excellent", "amazing", "love", "beautiful", "perfect",
            "fantastic", "nice", "joy", "delightful", "pleasant", "awesome", "best", "enjoy", "brilliant",
            "glad", "lovely", "fun", "exciting", "superb", "cheerful", "positive", "incredible", "loved",
            "enjoyed", "fine", "better"]
NEGATIVE = ["bad", "terrible", "awful", "horrible", "sad", "poor", "worst", "hate", "boring", "ugly", "angry",
            "disappointing", "annoying", "negative", "worse", "unpleasant", "dreadful", "miserable", "painful",
            "stupid", "broken", "wrong", "difficult", "hated", "disappointed", "tired", "dull", "nasty", "failed",
            "mediocre"]


def neutral_prompts(n: int | None = None) -> list[str]:
    """Neutral sentence openings (subjects x frames, 60 in all), the first ``n`` in a fixed mixed order."""
    prompts = [f.format(s=s) for s in SUBJECTS for f in FRAMES]
    prompts = [p[0].upper() + p[1:] for p in prompts]
    order = np.random.default_rng(0).permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    if n is not None and not 1 <= n <= len(prompts):
        raise ValueError(f"n={n} must be between 1 and {len(prompts)} prompts.")
    return prompts[:n]


def lexicon_score(text: str, positive=POSITIVE, negative=NEGATIVE) -> int:
    """Count of ``positive`` words minus ``negative`` words in ``text`` (whole words, any case)."""
    words = re.findall(r"[a-z]+", text.lower())
    pos, neg = set(positive), set(negative)
    return sum(w in pos for w in words) - sum(w in neg for w in words)


def paired_effect(treated: np.ndarray, control: np.ndarray, n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean paired difference, its 95% bootstrap CI, Cohen's d_z and the Wilcoxon p-value."""
    from scipy.stats import wilcoxon

    d = np.asarray(treated, float) - np.asarray(control, float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"mean_diff": float(d.mean()), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5)), "cohen_dz": float(d.mean() / sd) if sd > 0 else 0.0,
            "p_wilcoxon": p, "n": int(len(d))}


@dataclass
class SteeringResult:
    """Per-prompt measurements for every condition (``clean``, ``searched``, ``random0``, ...)."""

    prompts: list[str]
    values: list[Intervention]
    random_sets: list[list[Intervention]]
    mass: dict[str, np.ndarray]  # condition -> (n_prompts,) concept probability mass at the next token
    opposite_mass: dict[str, np.ndarray]  # the same for the opposite words
    score: dict[str, np.ndarray] = field(default_factory=dict)  # condition -> (n_prompts,) lexicon score
    continuations: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    scale: float | None = None  # the fraction of the original "on" (None: the full "on")
    n_tokens: int = 0  # tokens per greedy continuation (0: none generated)

    @property
    def conditions(self) -> list[str]:
        """``['clean', 'searched', 'random0', ...]``: every condition whose concept mass was measured."""
        return list(self.mass)

    def random_mean(self, table: dict[str, np.ndarray]) -> np.ndarray:
        """Per prompt, the mean over the random draws that were measured."""
        return np.mean([table[f"random{i}"] for i in range(len(self.random_sets)) if f"random{i}" in table], axis=0)

    def effects(self) -> dict[str, dict]:
        """Paired effects: searched vs clean, searched vs random (mean of draws), random vs clean."""
        out = {}
        for measure, table in (("mass", self.mass), ("score", self.score)):
            if not table:
                continue
            rnd = self.random_mean(table)
            out[f"{measure}: searched - clean"] = paired_effect(table["searched"], table["clean"])
            out[f"{measure}: searched - random"] = paired_effect(table["searched"], rnd)
            out[f"{measure}: random - clean"] = paired_effect(rnd, table["clean"])
        return out


def concept_ids(search, words) -> list[int]:
    """Every token id that reads as one of ``words`` (all spellings; see ValueSearch.token_ids)."""
    return sorted({i for w in words for i in search.token_ids(w)})


@torch.no_grad()
def steering_experiment(dbg: LMDebugger, search, prompts: list[str], query: str, concept_words=POSITIVE,
                        opposite_words=NEGATIVE, n_values: int = 10, n_random: int = 3, n_tokens: int = 10,
                        seed: int = 0, scale: float | None = None, batch_size: int = 20,
                        progress=None) -> SteeringResult:
    """Run the experiment (see the module docstring); ``n_tokens=0`` skips the continuations.

    ``scale`` multiplies the "on" coefficient (None: the original tool's full "on").
    """
    start = time.perf_counter()
    hits = search.search(query, limit=n_values)
    if len(hits) < n_values:
        raise ValueError(f"The search {query!r} found only {len(hits)} values; {n_values} are needed.")
    values = [Intervention(h.layer, h.unit, "on", scale) for h in hits]
    layers = [iv.layer for iv in values]
    random_sets = [random_values(dbg.view, layers, seed + i, exclude=values, scale=scale) for i in range(n_random)]
    conditions = {"clean": [], "searched": values, **{f"random{i}": r for i, r in enumerate(random_sets)}}
    pos_ids = torch.tensor(concept_ids(search, concept_words))
    neg_ids = torch.tensor(concept_ids(search, opposite_words))
    mass = {c: np.zeros(len(prompts)) for c in conditions}
    opp = {c: np.zeros(len(prompts)) for c in conditions}
    generated = [c for c in conditions if c in ("clean", "searched", "random0")]  # continuations: one random draw
    score = {c: np.zeros(len(prompts)) for c in generated} if n_tokens else {}
    texts: dict[str, list[str]] = {c: [] for c in generated} if n_tokens else {}
    chunks = [prompts[a : a + batch_size] for a in range(0, len(prompts), batch_size)]
    total, done = len(chunks) * len(conditions), 0
    for name, ivs in conditions.items():
        rows = 0
        for chunk in chunks:
            probs = dbg.last_logits_batch(chunk, ivs).float().softmax(-1)  # (batch, d_vocab)
            mass[name][rows : rows + len(chunk)] = probs[:, pos_ids].sum(-1).numpy()
            opp[name][rows : rows + len(chunk)] = probs[:, neg_ids].sum(-1).numpy()
            if n_tokens and name in score:
                for i, new in enumerate(dbg.generate_batch(chunk, n_tokens, ivs)):
                    text = dbg.tokenizer.decode(new) if dbg.tokenizer is not None else " ".join(dbg.token_texts(new))
                    texts[name].append(text)
                    score[name][rows + i] = lexicon_score(text, concept_words, opposite_words)
            rows += len(chunk)
            done += 1
            if progress is not None:
                progress(done, total)
    return SteeringResult(prompts, values, random_sets, mass, opp, score, texts, time.perf_counter() - start,
                          scale, n_tokens)


@torch.no_grad()
def dose_response(dbg: LMDebugger, search, prompts: list[str], query: str, scales, concept_words=POSITIVE,
                  n_values: int = 10, seed: int = 0, batch_size: int = 20) -> dict[str, np.ndarray]:
    """Mean concept mass over ``prompts`` for each scale of "on": ``{'scale', 'searched', 'random', 'clean'}``."""
    hits = search.search(query, limit=n_values)
    ids = torch.tensor(concept_ids(search, concept_words))
    base = [Intervention(h.layer, h.unit, "on") for h in hits]
    rnd = random_values(dbg.view, [iv.layer for iv in base], seed, exclude=base)
    def mean_mass(ivs):
        chunks = [prompts[a : a + batch_size] for a in range(0, len(prompts), batch_size)]
        masses = [dbg.last_logits_batch(c, ivs).float().softmax(-1)[:, ids].sum(-1) for c in chunks]
        return float(torch.cat(masses).mean())

    out = {"scale": np.asarray(scales, float), "searched": [], "random": [], "clean": np.full(len(scales), mean_mass([]))}
    for s in scales:
        for name, ivs in (("searched", base), ("random", rnd)):
            out[name].append(mean_mass([Intervention(iv.layer, iv.unit, "on", float(s)) for iv in ivs]))
    return {k: np.asarray(v) for k, v in out.items()}


def plot_steering(result: SteeringResult, dose: dict[str, np.ndarray] | None = None, concept: str = "positive",
                  opposite: str = "negative"):
    """Figure: concept mass per condition, the lexicon score of the continuations (mean and standard
    error over prompts) and, given the output of :func:`dose_response`, the mass against the scale."""
    import matplotlib.pyplot as plt

    n_panels = 2 + (dose is not None)
    fig, axes = plt.subplots(1, n_panels, figsize=(14 if dose is not None else 9.5, 4), layout="constrained")
    ax, bx = axes[0], axes[1]
    conds = result.conditions
    ax.bar(conds, [result.mass[c].mean() for c in conds], color=["grey", "C2"] + ["C0"] * (len(conds) - 2))
    on = "on" if result.scale is None else f"on x {result.scale:g}"
    ax.set(ylabel=f"P({concept} word next)", title=f"concept mass, {on}")
    generated = list(result.score)
    n = len(result.prompts)
    bx.bar(generated, [result.score[c].mean() for c in generated], color=["grey", "C2", "C0"][: len(generated)],
           yerr=[result.score[c].std(ddof=1) / np.sqrt(n) if n > 1 else 0.0 for c in generated])
    bx.set(ylabel=f"{concept} - {opposite} words", title=f"greedy continuations ({result.n_tokens} tokens)")
    if dose is not None:
        cx = axes[2]
        n_values = len(result.values)
        cx.plot(dose["scale"], dose["searched"], marker="o", color="C2", label=f"{n_values} searched values")
        cx.plot(dose["scale"], dose["random"], marker="o", color="C0", label=f"{n_values} random values")
        cx.plot(dose["scale"], dose["clean"], color="grey", ls="--", label="unchanged")
        cx.set(xscale="log", xlabel="fraction of the original 'on' coefficient", ylabel=f"P({concept} word next)",
               title="dose-response")
        cx.legend()
    return fig
