"""The study's runs: ZS, ICL, GD and LCGD on a task's test examples (Dai et al. 2023; Deutch et al. 2024).

For a test example and the same ``k`` demonstrations, four runs:

* ``zs``   the original model, no demonstrations;
* ``icl``  the original model, demonstrations in the prompt;
* ``gd``   the model finetuned on the demonstrations (one SGD step each), no demonstrations;
* ``lcgd`` the same with layer-causal finetuning (:mod:`lmscope.icl.layer_causal`).

Each run records, per layer, the attention block's output at the last position
(``attn_out``, (n_layers, d_model)) and the pre-softmax scores of the last position over
the test input's tokens (``attn_scores``, (n_layers, n_heads, n_input)), plus the mean
label log-probability of every label option; :mod:`lmscope.icl.metrics` compares them.
Finetuned weights are restored exactly after every finetuned run.

>>> results = run_study(view, tokenizer, ["antonyms"], k=8, seeds=(0,), n_test=16)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lmscope.core.hooks import hook_name
from lmscope.core.view import ModelView
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.layer_causal import METHODS, NonFiniteLossError, finetuned, layer_losses, trainable_parameters
from lmscope.icl.metrics import SeedResult, TaskResult, random_sim_aou, sim_am, sim_am_delta, sim_aou
from lmscope.icl.prompts import Prompt, PromptBuilder, option_logprobs
from lmscope.icl.tasks import Example, Task

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


@torch.no_grad()
def record_run(view: ModelView, prompt: Prompt, hooks: bool = True) -> RunRecord:
    """Run the model on ``prompt`` (+ each option), recording per layer what the metrics need.

    All options share the prompt, so activations at the prompt's last position are read from
    row 0 of one batch (right padding never reaches them under causal attention). When every
    option is a single token, one row suffices. ``hooks=False``: option scores only.
    """
    P, options = len(prompt.ids), prompt.options
    single = all(len(o) == 1 for o in options)
    rows = [prompt.ids] if single else [prompt.ids + o for o in options]
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
            edits[hook_name(l, "attn_out")] = take_out(l)
            edits[hook_name(l, "attn_scores")] = take_scores(l)
    keep = width - P + 1  # logits of positions P-1 .. width-1
    with view.overwrite(edits):
        try:
            logits = view.model(input_ids=ids, logits_to_keep=keep).logits
        except TypeError:
            logits = view.model(input_ids=ids).logits[:, P - 1 :]
    logprobs = option_logprobs(logits, P, options)
    empty = torch.empty(0)
    return RunRecord(
        torch.stack(attn_out) if hooks else empty, torch.stack(scores) if hooks else empty, logprobs.cpu(),
        prompt.answer,
    )


def task_lr(task: str, lr: float | dict | None) -> float:
    """The learning rate of ``task``: a number, a per-task dict, or None for :data:`DEFAULT_LR`."""
    if isinstance(lr, dict):
        return float(lr.get(task, DEFAULT_LR.get(task, FALLBACK_LR)))
    return float(DEFAULT_LR.get(task, FALLBACK_LR) if lr is None else lr)


def _training_sequences(builder: PromptBuilder, demos: list[Example], loss_on: str):
    """(ids, loss positions) per demonstration: the label's positions, or None (every token)."""
    sequences = []
    for d in demos:
        ids, label_positions = builder.training_sequence(d)
        sequences.append((ids, label_positions if loss_on == "label" else None))
    return sequences


def _record_all(view, builder, examples, demos, hooks=True) -> list[RunRecord]:
    return [record_run(view, builder.prompt(e, demos), hooks) for e in examples]


def _correct_flags(records: list[RunRecord]) -> np.ndarray:
    return np.array([r.correct for r in records], dtype=bool)


def _compare_pairs(metric, xs: list[RunRecord], ys: list[RunRecord]) -> np.ndarray:
    """``metric(x, y)`` of each example's pair of records, stacked: (n_examples, n_layers)."""
    return torch.stack([metric(x, y) for x, y in zip(xs, ys)]).numpy()


def _compare_updates(metric, field: str, zs, icl, ft) -> np.ndarray:
    """``metric(zs, icl, ft)`` of one record field (``attn_out`` or ``scores``) per example: (n_examples, n_layers)."""
    return torch.stack([metric(getattr(z, field), getattr(i, field), getattr(f, field))
                        for z, i, f in zip(zs, icl, ft)]).numpy()


def run_task(
    view: ModelView,
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
    if not view.cfg.causal:
        raise ValueError("ICL vs GD needs a causal language model; BERT is a masked LM.")
    if loss_on not in ("all", "label"):
        raise ValueError(f"loss_on must be 'all' or 'label', got {loss_on!r}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"Unknown methods {bad}: use {METHODS}.")
    task = get_task(task)
    builder = PromptBuilder(task, tokenizer, view.cfg.n_ctx)
    tests = task.test_set if n_test is None else task.test_set[: int(n_test)]
    if not tests:
        raise ValueError("n_test must be at least 1.")
    rate = task_lr(task.name, lr)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    zs = _record_all(view, builder, tests, [])
    t_zs = time.perf_counter() - t0
    out = []
    for seed in seeds:
        demos = task.demonstrations(k, seed)
        times = {"zs": t_zs}
        t0 = time.perf_counter()
        icl = _record_all(view, builder, tests, demos)
        times["icl"] = time.perf_counter() - t0
        res = SeedResult(task.name, seed, k, rate, {"zs": _correct_flags(zs), "icl": _correct_flags(icl)})
        g = torch.Generator().manual_seed(seed)
        res.random_sim_aou = _compare_pairs(lambda z, i: random_sim_aou(z.attn_out, i.attn_out, g), zs, icl)
        res.sim_am["zs"] = _compare_pairs(lambda z, i: sim_am(i.scores, z.scores), zs, icl)
        sequences = _training_sequences(builder, demos, loss_on)
        for method in methods:
            t0 = time.perf_counter()
            try:
                with finetuned(view, sequences, method, rate, trainable) as losses:
                    ft = _record_all(view, builder, tests, [])
            except NonFiniteLossError as err:
                res.skipped[method] = str(err)
                say(f"{task.name} seed {seed}: {method.upper()} skipped: {err}")
                continue
            times[method] = time.perf_counter() - t0
            res.losses[method] = losses
            res.correct[method] = _correct_flags(ft)
            res.sim_aou[method] = _compare_updates(sim_aou, "attn_out", zs, icl, ft)
            res.sim_am_delta[method] = _compare_updates(sim_am_delta, "scores", zs, icl, ft)
            res.sim_am[method] = _compare_pairs(lambda i, f: sim_am(i.scores, f.scores), icl, ft)
        res.seconds = times
        say(f"{task.name} seed {seed}: " + ", ".join(f"{r} {res.accuracy(r):.2f}" for r in res.correct))
        out.append(res)
    return TaskResult(task.name, k, out, len(tests))


def run_study(
    view: ModelView, tokenizer, tasks: Sequence[str | Task], progress=None, **kwargs
) -> dict[str, TaskResult]:
    """:func:`run_task` for every task, keyed by task name; ``kwargs`` as there."""
    return {get_task(t).name if not isinstance(t, Task) else t.name:
            run_task(view, tokenizer, t, progress=progress, **kwargs) for t in tasks}


def sweep_lr(
    view: ModelView,
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
    builder = PromptBuilder(task, tokenizer, view.cfg.n_ctx)
    demos = task.demonstrations(k, seed)
    evals = task.validation(k, seed)[:n_eval]
    if not evals:
        raise ValueError(f"Task '{task.name}' has no validation examples left after k={k} demonstrations.")
    sequences = _training_sequences(builder, demos, loss_on)
    zs_accuracy = float(_correct_flags(_record_all(view, builder, evals, [], False)).mean())
    rows = [{"lr": 0.0, "method": "zs", "accuracy": zs_accuracy, "final_loss": float("nan"), "skipped": ""}]
    for lr in lrs:
        for method in methods:
            try:
                with finetuned(view, sequences, method, lr, trainable) as losses:
                    acc = float(_correct_flags(_record_all(view, builder, evals, [], False)).mean())
                rows.append({"lr": lr, "method": method, "accuracy": acc, "final_loss": losses[-1], "skipped": ""})
            except NonFiniteLossError as err:
                rows.append({"lr": lr, "method": method, "accuracy": float("nan"), "final_loss": float("nan"),
                             "skipped": str(err)})
    return rows


def step_seconds(
    view: ModelView,
    tokenizer,
    task: str | Task,
    k: int = 8,
    loss_on: str = "label",
    repeats: int = 1,
    trainable: Sequence[str] = ("W_K", "W_V"),
) -> dict[str, list[float]]:
    """Seconds of one SGD step's forward + backward (no update), GD and LCGD interleaved to share the noise.

    One step per training sequence of the ``k`` demonstrations of seed 0, ``repeats`` times:
    ``{"gd": [...], "lcgd": [...]}``, ``k * repeats`` timings each.
    """
    if loss_on not in ("all", "label"):
        raise ValueError(f"loss_on must be 'all' or 'label', got {loss_on!r}.")
    task = get_task(task)
    sequences = _training_sequences(PromptBuilder(task, tokenizer), task.demonstrations(k, 0), loss_on)
    params = trainable_parameters(view, trainable)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for _ in range(repeats):
        for ids, positions in sequences:
            for method in METHODS:
                t0 = time.perf_counter()
                layer_losses(view, torch.tensor(ids), positions, method, params)
                times[method].append(time.perf_counter() - t0)
    return times


def untrained_model(view: ModelView, seed: int = 0, std: float | None = None) -> ModelView:
    """A view of a copy of the model with random attention and FF weights; embeddings, norms, unembedding kept.

    Every linear projection of the blocks (``view.block_linears``) gets N(0, std) weights (std: the
    config's ``initializer_range``, else 0.02), drawn block by block in module order from one
    generator seeded by ``seed``, and zero biases. The original model is not touched.
    """
    clone = ModelView(copy.deepcopy(view.model))
    std = std or getattr(clone.model.config, "initializer_range", 0.02)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in range(clone.cfg.n_layers):
            for module in clone.block_linears(layer):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g, dtype=module.weight.dtype) * std)
                if module.bias is not None:
                    module.bias.zero_()
    return clone
