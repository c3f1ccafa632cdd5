"""In-context learning vs gradient descent (Dai et al. 2023; Deutch et al. 2024).

For a test example and the same ``k`` demonstrations, four runs:

* ``zs``   the original model, no demonstrations;
* ``icl``  the original model, demonstrations in the prompt;
* ``gd``   the model finetuned on the demonstrations (one SGD step each), no demonstrations;
* ``lcgd`` the same with layer-causal finetuning (:mod:`lmscope.icl.layer_causal`).

Each run records, per layer, the attention block's output at the last position
(``attn_out``, (n_layers, d_model)) and the pre-softmax scores of the last position over
the test input's tokens (``attn_scores``, (n_layers, n_heads, n_input)), plus the mean
label log-probability of every label option. Metrics compare the ICL update
(ICL - ZS) with each finetuning update (FT - ZS):

* SimAOU: cosine of the updates of the L2-normalised attention outputs; baseline: cosine
  of the ICL update with a uniform [0, 1) random vector;
* SimAM_delta: cosine of the updates of the attention scores, mean over heads;
* SimAM (Dai et al.): cos(ICL scores, FT scores), to compare with cos(ICL scores, ZS scores);
* Rec2FTP: |(C_ICL & C_FT) - C_ZS| / |C_FT - C_ZS| over the sets C of examples right.

Finetuned weights are restored exactly after every finetuned run.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lmscope.icl.tasks import BUILTIN_TASKS, Example, Prompt, PromptBuilder, Task, get_task, model_context, option_logprobs
from lmscope.icl.layer_causal import METHODS, NonFiniteLossError, finetuned

Tensor = torch.Tensor
RUNS = ("zs", "icl", *METHODS)

# Learning rates per built-in task for SmolLM2-135M-Instruct, K and V trained, loss on the labels,
# k=8, one rate for GD and LCGD as in the paper: the rate of the grid 3e-4 .. 0.3 with the best mean
# of GD and LCGD accuracy on 32 validation examples (pool minus demonstrations; ties: the larger).
# Reproduce with `python benchmarks/icl_vs_gd.py --sweep`; the table is in notebooks/04_icl_vs_gd.ipynb.
DEFAULT_LR = {"antonyms": 1e-3, "country_capital": 1e-3, "sentiment": 1e-3, "word_category": 1e-3}
FALLBACK_LR = 1e-3


@dataclass
class RunRecord:
    """What one run records for one test example."""

    attn_out: Tensor  # (n_layers, d_model) attention block output at the last position
    scores: Tensor  # (n_layers, n_heads, n_input) pre-softmax scores, last position over the test input
    logprobs: Tensor  # (n_options,) mean label log-probability per option
    answer: int  # index of the right option

    @property
    def prediction(self) -> int:
        return int(self.logprobs.argmax())

    @property
    def correct(self) -> bool:
        return self.prediction == self.answer


# -- one run ---------------------------------------------------------------------------------


@torch.no_grad()
def record_run(view, prompt: Prompt, hooks: bool = True) -> RunRecord:
    """Run the model on ``prompt`` (+ each option), recording per layer what the metrics need.

    All options share the prompt, so activations at the prompt's last position are read from
    row 0 of one batch (right padding never reaches them under causal attention). When every
    option is a single token, one row suffices.
    """
    P, opts = len(prompt.ids), prompt.options
    single = all(len(o) == 1 for o in opts)
    rows = [prompt.ids] if single else [prompt.ids + o for o in opts]
    width = max(len(r) for r in rows)
    pad = rows[0][0]
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=view.device)
    n, last = view.cfg.n_layers, prompt.last
    s, e = prompt.input_span
    attn_out: list[Tensor | None] = [None] * n
    scores: list[Tensor | None] = [None] * n

    def take_out(l):
        def f(t):  # (B, T, d_model)
            attn_out[l] = t[0, last].detach().float().clone()

        return f

    def take_scores(l):
        def f(t):  # (B, H, T, T_k)
            scores[l] = t[0, :, last, s:e].detach().float().clone()

        return f

    edits = {}
    if hooks:
        for l in range(n):
            edits[f"blocks.{l}.attn_out"] = take_out(l)
            edits[f"blocks.{l}.attn_scores"] = take_scores(l)
    keep = width - P + 1  # logits of positions P-1 .. width-1
    with view.overwrite(edits):
        try:
            logits = view.model(input_ids=ids, logits_to_keep=keep).logits
        except TypeError:
            logits = view.model(input_ids=ids).logits[:, P - 1 :]
    lp = option_logprobs(logits, P, opts)
    empty = torch.empty(0)
    return RunRecord(
        torch.stack(attn_out) if hooks else empty, torch.stack(scores) if hooks else empty, lp.cpu(), prompt.answer
    )


# -- metrics on hand-built vectors ---------------------------------------------------------------


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)


def sim_aou(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """SimAOU: cos(ICL - ZS, FT - ZS) of L2-normalised attention outputs (..., d_model) -> (...)."""
    zs, icl, ft = (F.normalize(x.double(), dim=-1) for x in (zs, icl, ft))
    return _cos(icl - zs, ft - zs)


def random_sim_aou(zs: Tensor, icl: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Baseline: cos(ICL - ZS, uniform [0, 1) random vector), (..., d_model) -> (...)."""
    upd = F.normalize(icl.double(), dim=-1) - F.normalize(zs.double(), dim=-1)
    rand = torch.rand(upd.shape, generator=generator, dtype=torch.float64)
    return _cos(upd, rand)


def sim_am_delta(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """SimAM_delta: cos(ICL - ZS, FT - ZS) of scores (..., n_heads, n_input), mean over heads -> (...)."""
    return _cos(icl - zs, ft - zs).mean(-1)


def sim_am(a: Tensor, b: Tensor) -> Tensor:
    """Dai et al.'s SimAM: cos of two score maps (..., n_heads, n_input), mean over heads -> (...)."""
    return _cos(a, b).mean(-1)


def rec2ftp(correct_zs: Sequence[bool], correct_icl: Sequence[bool], correct_ft: Sequence[bool]) -> float:
    """|(C_ICL & C_FT) - C_ZS| / |C_FT - C_ZS|; nan when finetuning fixes nothing."""
    zs, icl, ft = (np.asarray(x, dtype=bool) for x in (correct_zs, correct_icl, correct_ft))
    denom = (ft & ~zs).sum()
    return float((icl & ft & ~zs).sum() / denom) if denom else float("nan")


# -- a whole study ------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """One task, one seed (one draw of demonstrations). Arrays are (n_examples, n_layers)."""

    task: str
    seed: int
    k: int
    lr: float
    correct: dict[str, np.ndarray]  # run -> (n_examples,) bool
    sim_aou: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (n_ex, n_layers)
    sim_am_delta: dict[str, np.ndarray] = field(default_factory=dict)
    sim_am: dict[str, np.ndarray] = field(default_factory=dict)  # 'gd', 'lcgd', and 'zs' = cos(ICL, ZS)
    random_sim_aou: np.ndarray | None = None  # (n_ex, n_layers)
    losses: dict[str, list[float]] = field(default_factory=dict)  # method -> loss per SGD step
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why
    seconds: dict[str, float] = field(default_factory=dict)

    def accuracy(self, run: str) -> float:
        c = self.correct.get(run)
        return float("nan") if c is None else float(c.mean())

    def rec2ftp(self, method: str) -> float:
        if method not in self.correct:
            return float("nan")
        return rec2ftp(self.correct["zs"], self.correct["icl"], self.correct[method])


@dataclass
class TaskResult:
    task: str
    k: int
    seeds: list[SeedResult]
    n_examples: int

    def layer_curve(self, metric: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over seeds of the per-layer metric (each seed: mean over examples)."""
        per_seed = [_metric(s, metric, method).mean(0) for s in self.seeds if _has(s, metric, method)]
        if not per_seed:
            return np.full(0, np.nan), np.full(0, np.nan)
        a = np.stack(per_seed)
        return a.mean(0), a.std(0)

    def summary(self, metric: str, method: str) -> tuple[float, float]:
        """Mean and std over seeds of the metric averaged over examples and layers."""
        vals = [float(_metric(s, metric, method).mean()) for s in self.seeds if _has(s, metric, method)]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))

    def accuracy(self, run: str) -> tuple[float, float]:
        vals = [s.accuracy(run) for s in self.seeds if run in s.correct]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))

    def rec2ftp(self, method: str) -> tuple[float, float]:
        vals = [s.rec2ftp(method) for s in self.seeds]
        vals = [v for v in vals if not math.isnan(v)]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))

    @property
    def skipped(self) -> list[str]:
        return [f"seed {s.seed} {m.upper()}: {why}" for s in self.seeds for m, why in s.skipped.items()]


def _has(s: SeedResult, metric: str, method: str) -> bool:
    return metric == "random_sim_aou" and s.random_sim_aou is not None or method in getattr(s, metric, {})


def _metric(s: SeedResult, metric: str, method: str) -> np.ndarray:
    return s.random_sim_aou if metric == "random_sim_aou" else getattr(s, metric)[method]


def task_lr(task: str, lr: float | dict | None) -> float:
    """The learning rate of ``task``: a number, a per-task dict, or None for :data:`DEFAULT_LR`."""
    if isinstance(lr, dict):
        return float(lr.get(task, DEFAULT_LR.get(task, FALLBACK_LR)))
    return float(DEFAULT_LR.get(task, FALLBACK_LR) if lr is None else lr)


def _training_sequences(builder: PromptBuilder, demos: list[Example], loss_on: str):
    seqs = []
    for d in demos:
        ids, label_pos = builder.training_sequence(d)
        seqs.append((ids, label_pos if loss_on == "label" else None))
    return seqs


def _records(view, builder, examples, demos, hooks=True) -> list[RunRecord]:
    return [record_run(view, builder.prompt(e, demos), hooks) for e in examples]


def run_task(
    view,
    tokenizer,
    task: str | Task,
    k: int = 8,
    seeds: Sequence[int] = (0, 1, 2),
    lr: float | dict | None = None,
    n_test: int | None = None,
    trainable: Sequence[str] = ("W_K", "W_V"),
    loss_on: str = "label",
    methods: Sequence[str] = METHODS,
    progress: Callable[[str], None] | None = None,
) -> TaskResult:
    """The four runs on ``n_test`` test examples of ``task`` for every seed, and their metrics.

    ``loss_on``: ``"label"`` (the default: the label tokens only, where an LCGD step costs well under
    2x a GD step) or ``"all"`` (every token of BOS + template + label, as in the paper's code; there
    the 30 read-outs over the whole sequence make an LCGD step about 2.5x a GD step on SmolLM2).
    A finetuning method whose loss turns non-finite is skipped and reported in ``TaskResult.skipped``.
    """
    if view.cfg.family == "bert":
        raise ValueError("ICL vs GD needs a causal language model; BERT is a masked LM.")
    if loss_on not in ("all", "label"):
        raise ValueError(f"loss_on must be 'all' or 'label', got {loss_on!r}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"Unknown methods {bad}: use {METHODS}.")
    task = get_task(task)
    builder = PromptBuilder(task, tokenizer, model_context(view.model))
    tests = task.test_set if n_test is None else task.test_set[: int(n_test)]
    if not tests:
        raise ValueError("n_test must be at least 1.")
    rate = task_lr(task.name, lr)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    zs = _records(view, builder, tests, [])
    t_zs = time.perf_counter() - t0
    out = []
    for seed in seeds:
        demos = task.demonstrations(k, seed)
        times = {"zs": t_zs}
        t0 = time.perf_counter()
        icl = _records(view, builder, tests, demos)
        times["icl"] = time.perf_counter() - t0
        res = SeedResult(task.name, seed, k, rate, {"zs": _correct(zs), "icl": _correct(icl)})
        g = torch.Generator().manual_seed(seed)
        res.random_sim_aou = _stack(lambda z, i: random_sim_aou(z.attn_out, i.attn_out, g), zs, icl)
        res.sim_am["zs"] = _stack(lambda z, i: sim_am(i.scores, z.scores), zs, icl)
        seqs = _training_sequences(builder, demos, loss_on)
        for method in methods:
            t0 = time.perf_counter()
            try:
                with finetuned(view, seqs, method, rate, trainable) as losses:
                    ft = _records(view, builder, tests, [])
            except NonFiniteLossError as err:
                res.skipped[method] = str(err)
                say(f"{task.name} seed {seed}: {method.upper()} skipped: {err}")
                continue
            times[method] = time.perf_counter() - t0
            res.losses[method] = losses
            res.correct[method] = _correct(ft)
            res.sim_aou[method] = _stack3(sim_aou, "attn_out", zs, icl, ft)
            res.sim_am_delta[method] = _stack3(sim_am_delta, "scores", zs, icl, ft)
            res.sim_am[method] = _stack(lambda i, f: sim_am(i.scores, f.scores), icl, ft)
        res.seconds = times
        say(f"{task.name} seed {seed}: " + ", ".join(f"{r} {res.accuracy(r):.2f}" for r in res.correct))
        out.append(res)
    return TaskResult(task.name, k, out, len(tests))


def _correct(records: list[RunRecord]) -> np.ndarray:
    return np.array([r.correct for r in records], dtype=bool)


def _stack(fn, xs, ys) -> np.ndarray:
    return torch.stack([fn(x, y) for x, y in zip(xs, ys)]).numpy()


def _stack3(fn, attr, zs, icl, ft) -> np.ndarray:
    return torch.stack([fn(getattr(z, attr), getattr(i, attr), getattr(f, attr)) for z, i, f in zip(zs, icl, ft)]).numpy()


def run_study(view, tokenizer, tasks: Sequence[str | Task], progress=None, **kwargs) -> dict[str, TaskResult]:
    """:func:`run_task` for every task; ``kwargs`` as there."""
    return {get_task(t).name if not isinstance(t, Task) else t.name: run_task(view, tokenizer, t, progress=progress, **kwargs)
            for t in tasks}


def sweep_lr(
    view,
    tokenizer,
    task: str | Task,
    lrs: Sequence[float],
    k: int = 8,
    seed: int = 0,
    n_eval: int = 32,
    methods: Sequence[str] = METHODS,
    trainable: Sequence[str] = ("W_K", "W_V"),
    loss_on: str = "label",
) -> list[dict]:
    """Accuracy after finetuning with each learning rate, on validation examples (pool minus demos).

    Returns rows {lr, method, accuracy, final_loss, skipped}; the zero-shot accuracy is the row
    with ``lr`` 0 and method ``"zs"``.
    """
    task = get_task(task)
    builder = PromptBuilder(task, tokenizer, model_context(view.model))
    demos = task.demonstrations(k, seed)
    evals = task.validation(k, seed)[:n_eval]
    if not evals:
        raise ValueError(f"Task '{task.name}' has no validation examples left after k={k} demonstrations.")
    seqs = _training_sequences(builder, demos, loss_on)
    rows = [{"lr": 0.0, "method": "zs", "accuracy": float(_correct(_records(view, builder, evals, [], False)).mean()),
             "final_loss": float("nan"), "skipped": ""}]
    for lr in lrs:
        for method in methods:
            try:
                with finetuned(view, seqs, method, lr, trainable) as losses:
                    acc = float(_correct(_records(view, builder, evals, [], False)).mean())
                rows.append({"lr": lr, "method": method, "accuracy": acc, "final_loss": losses[-1], "skipped": ""})
            except NonFiniteLossError as err:
                rows.append({"lr": lr, "method": method, "accuracy": float("nan"), "final_loss": float("nan"),
                             "skipped": str(err)})
    return rows


# -- untrained control ------------------------------------------------------------------------


def untrained_model(model, seed: int = 0, std: float | None = None):
    """A copy of ``model`` with random attention and FF weights; embeddings, norms, unembedding kept.

    Every linear layer inside the blocks gets N(0, std) weights (std: the config's
    ``initializer_range``, else 0.02) and zero biases.
    """
    clone = copy.deepcopy(model)
    from lmscope.core.view import ModelView

    view = ModelView(clone)
    std = std or getattr(clone.config, "initializer_range", 0.02)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in view.blocks:
            for mod in block.modules():
                if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g, dtype=mod.weight.dtype) * std)
                    if mod.bias is not None:
                        mod.bias.zero_()
    return clone


# -- tables and figures ------------------------------------------------------------------------

# Deutch et al. (2024), committed results: mean (std) over 3 runs, averaged over layers
PAPER_TABLE = {
    "SST-2": {"sim_aou": ((0.111, 0.002), (0.223, 0.010)), "sim_am_delta": ((0.150, 0.021), (0.299, 0.018))},
    "SST-5": {"sim_aou": ((0.092, 0.013), (0.107, 0.005)), "sim_am_delta": ((0.308, 0.018), (0.326, 0.006))},
    "MR": {"sim_aou": ((0.216, 0.009), (0.328, 0.007)), "sim_am_delta": ((0.139, 0.053), (0.263, 0.005))},
    "Subj": {"sim_aou": ((0.177, 0.018), (0.345, 0.007)), "sim_am_delta": ((0.254, 0.066), (0.322, 0.006))},
    "AGNews": {"sim_aou": ((0.308, 0.039), (0.327, 0.007)), "sim_am_delta": ((0.505, 0.052), (0.432, 0.015))},
    "CB": {"sim_aou": ((0.205, 0.008), (0.344, 0.003)), "sim_am_delta": ((0.246, 0.010), (0.382, 0.010))},
}


def _ms(m: tuple[float, float]) -> str:
    return "n/a" if math.isnan(m[0]) else f"{m[0]:.3f} ({m[1]:.3f})"


def accuracy_table(results: dict[str, TaskResult]) -> str:
    """Markdown: accuracy mean (std over seeds) of ZS, ICL, GD, LCGD and Rec2FTP per task."""
    lines = ["| task | ZS | ICL | GD | LCGD | Rec2FTP GD | Rec2FTP LCGD |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [_ms(r.accuracy(run)) for run in RUNS] + [_ms(r.rec2ftp(m)) for m in METHODS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def similarity_table(results: dict[str, TaskResult], with_paper: bool = True) -> str:
    """Markdown: SimAOU and SimAM_delta of GD vs LCGD per task (ours), then the paper's rows."""
    head = "| task | SimAOU GD | SimAOU LCGD | SimAM_Δ GD | SimAM_Δ LCGD | random SimAOU |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [_ms(r.summary(m, meth)) for m in ("sim_aou", "sim_am_delta") for meth in METHODS]
        lines.append(f"| {name} (ours) | " + " | ".join(cells) + f" | {_ms(r.summary('random_sim_aou', ''))} |")
    if with_paper:
        for name, row in PAPER_TABLE.items():
            cells = [f"{v[0]:.3f} ({v[1]:.3f})" for m in ("sim_aou", "sim_am_delta") for v in row[m]]
            lines.append(f"| {name} (paper) | " + " | ".join(cells) + " | 0.001-0.004 |")
    return "\n".join(lines)


def lcgd_wins(results: dict[str, TaskResult]) -> tuple[int, int]:
    """How many (task, metric) cells have LCGD >= GD, out of how many comparable cells."""
    wins = total = 0
    for r in results.values():
        for m in ("sim_aou", "sim_am_delta"):
            gd, lc = r.summary(m, "gd")[0], r.summary(m, "lcgd")[0]
            if not (math.isnan(gd) or math.isnan(lc)):
                total += 1
                wins += lc >= gd
    return wins, total


def plot_layer_curves(results: dict[str, TaskResult], metrics=("sim_aou", "sim_am_delta"), axes=None):
    """Per-layer curves (mean +- std over seeds) of GD and LCGD, one column per task."""
    import matplotlib.pyplot as plt

    names = list(results)
    if axes is None:
        fig, axes = plt.subplots(len(metrics), len(names), figsize=(3.6 * len(names), 2.8 * len(metrics)),
                                 squeeze=False, sharex=True)
    else:
        fig = axes[0][0].figure
    labels = {"sim_aou": "SimAOU", "sim_am_delta": "SimAM_Δ"}
    for j, name in enumerate(names):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for method, color in (("gd", "tab:blue"), ("lcgd", "tab:orange")):
                mean, std = results[name].layer_curve(metric, method)
                if mean.size:
                    x = np.arange(mean.size)
                    ax.plot(x, mean, color=color, label=method.upper())
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
            if metric == "sim_aou":
                mean, _ = results[name].layer_curve("random_sim_aou", "")
                if mean.size:
                    ax.plot(np.arange(mean.size), mean, color="gray", ls=":", label="random")
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(f"{name}: {labels.get(metric, metric)}", fontsize=9)
            if i == len(metrics) - 1:
                ax.set_xlabel("layer")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracies(results: dict[str, TaskResult], ax=None):
    """Grouped bars: accuracy of ZS, ICL, GD, LCGD per task (error bars: std over seeds)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.6 * len(results), 3))
    width = 0.2
    for i, run in enumerate(RUNS):
        stats = [r.accuracy(run) for r in results.values()]
        x = np.arange(len(results)) + (i - 1.5) * width
        ax.bar(x, [s[0] for s in stats], width, yerr=[s[1] for s in stats], label=run.upper())
    ax.set_xticks(np.arange(len(results)), list(results))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=4, loc="lower right")
    ax.figure.tight_layout()
    return ax.figure


# Notebook / benchmark profiles: tasks, k, seeds, test examples per task, and the untrained control
PROFILES = {
    "quick": {"tasks": ("antonyms",), "k": 8, "seeds": (0,), "n_test": 16, "control_tasks": ("antonyms",),
              "control_n_test": 8},
    "full": {"tasks": BUILTIN_TASKS, "k": 8, "seeds": (0, 1, 2), "n_test": 50, "control_tasks": BUILTIN_TASKS,
             "control_n_test": 20},
}
