"""The study's runs: ZS, ICL, GD and LCGD on a task's test examples (Dai et al. 2023; Deutch et al. 2024).

For a test example and the same ``k`` demonstrations, four runs:

* ``zs``   the original model, no demonstrations;
* ``icl``  the original model, demonstrations in the prompt;
* ``gd``   the model finetuned on the demonstrations (one SGD step each), no demonstrations;
* ``lcgd`` the same with layer-causal finetuning (:mod:`lmscope.icl.layer_causal`).

Each run records (:mod:`lmscope.icl.records`), per layer, the attention block's output and its
pre-softmax scores at the read position, plus the mean label log-probability of every label
option; :mod:`lmscope.icl.metrics` compares them. Finetuned weights are restored exactly after
every finetuned run.

Defaults are the paper's protocol (GiilDe/ft-vs-icl): records at the first label option's token
appended to the query (``read_at="label"``), SimAM_Δ over the query keys (``keys="query"``: template,
test input, label token), loss on every token of BOS + template + label (``loss_on="all"``), the
logit lens as every layer's read-out (``readout="logit_lens"``; ``"tuned_lens"`` or a lens object
instead). Beside the similarities, every seed logs per layer the norm of each method's weight
update (``SeedResult.update_norm``) and the size of each run's change to the attention output,
``|attn_out(run) - attn_out(ZS)|`` (``SeedResult.attn_change``, ICL included).

>>> results = run_study(view, tokenizer, ["antonyms"], k=8, seeds=(0,), n_test=16)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np
import torch

from lmscope.core.view import ModelView
from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.layer_causal import (
    METHODS,
    NonFiniteLossError,
    finetuned,
    layer_losses,
    trainable_parameters,
    update_norms,
)
from lmscope.icl.metrics import SeedResult, TaskResult, random_sim_aou, sim_am, sim_am_delta, sim_aou
from lmscope.icl.prompts import PromptBuilder
from lmscope.icl.records import RunRecord, check_reading, record_run, record_runs
from lmscope.icl.tasks import Example, Task

__all__ = ["RUNS", "RunRecord", "record_run", "run_task", "run_study", "sweep_lr", "step_seconds",
           "untrained_model", "resolve_readout", "task_lr"]

Tensor = torch.Tensor
RUNS = ("zs", "icl", *METHODS)

# Learning rates per built-in task for SmolLM2-135M-Instruct, K and V trained, one rate for GD and LCGD as
# in the paper, chosen for the earlier protocol (loss on the labels, k=8) on 32 validation examples; the
# fallback for every other task. Chapter 04 chooses its rate on validation examples from a grid instead
# (lmscope.icl.ablation.choose_lrs; `python benchmarks/icl_vs_gd.py --sweep` for the sentence tasks).
DEFAULT_LR = {"antonyms": 1e-3, "country_capital": 1e-3, "sentiment": 1e-3, "word_category": 1e-3}
FALLBACK_LR = 1e-3


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


def _record_all(view, builder, examples, demos, hooks=True, read_at="label", keys="query") -> list[RunRecord]:
    return record_runs(view, [builder.prompt(e, demos) for e in examples], hooks, read_at, keys)


def _correct_flags(records: list[RunRecord]) -> np.ndarray:
    return np.array([r.correct for r in records], dtype=bool)


def _compare_pairs(metric, xs: list[RunRecord], ys: list[RunRecord]) -> np.ndarray:
    """``metric(x, y)`` of each example's pair of records, stacked: (n_examples, n_layers)."""
    return torch.stack([metric(x, y) for x, y in zip(xs, ys)]).numpy()


def _compare_updates(metric, field: str, zs, icl, ft) -> np.ndarray:
    """``metric(zs, icl, ft)`` of one record field (``attn_out`` or ``scores``) per example: (n_examples, n_layers)."""
    return torch.stack([metric(getattr(z, field), getattr(i, field), getattr(f, field))
                        for z, i, f in zip(zs, icl, ft)]).numpy()


def _attn_change(zs: list[RunRecord], run: list[RunRecord]) -> np.ndarray:
    """|attn_out(run) - attn_out(ZS)| per example and layer, (n_examples, n_layers)."""
    return torch.stack([(r.attn_out.double() - z.attn_out.double()).norm(dim=-1) for z, r in zip(zs, run)]).numpy()


def _check_loss_on(loss_on: str) -> None:
    if loss_on not in ("all", "label"):
        raise ValueError(f"loss_on must be 'all' (the paper's: every token) or 'label', got {loss_on!r}.")


def resolve_readout(view: ModelView, tokenizer, readout):
    """The read-out of every layer in LCGD: None for ``"logit_lens"``, a trained tuned lens for ``"tuned_lens"``.

    A lens object (``lens(resid, layer) -> logits``) passes through. ``"tuned_lens"`` loads the cached
    lens of this model or trains it (:func:`lmscope.core.tuned_lens.load_or_train_tuned_lens`).
    """
    if readout is None or readout == "logit_lens":
        return None
    if readout == "tuned_lens":
        from lmscope.core.tuned_lens import load_or_train_tuned_lens

        return load_or_train_tuned_lens(view, tokenizer)
    if callable(readout):
        return readout
    raise ValueError(f"readout must be 'logit_lens' (the paper's), 'tuned_lens' or a lens object, got {readout!r}.")


def run_task(
    view: ModelView,
    tokenizer,
    task: str | Task,
    k: int = 32,
    seeds: Sequence[int] = (0, 1, 2),
    lr: float | dict | None = None,
    n_test: int | None = None,
    trainable: Sequence[str] = ("W_K", "W_V"),
    loss_on: str = "all",
    methods: Sequence[str] = METHODS,
    progress: Callable[[str], None] | None = None,
    read_at: str = "label",
    keys: str = "query",
    readout="logit_lens",
) -> TaskResult:
    """The four runs on ``n_test`` test examples of ``task`` for every seed, and their metrics.

    Defaults are the paper's protocol (module docstring). ``loss_on``: ``"all"`` (every token of
    BOS + template + label) or ``"label"`` (the label tokens only). ``read_at`` / ``keys``: see
    :mod:`lmscope.icl.records`. ``readout``: ``"logit_lens"``, ``"tuned_lens"`` or a lens object.
    A finetuning method whose loss turns non-finite is skipped and reported in ``TaskResult.skipped``.
    """
    if not view.cfg.causal:
        raise ValueError("ICL vs GD needs a causal language model; BERT is a masked LM.")
    _check_loss_on(loss_on)
    check_reading(read_at, keys)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"Unknown methods {bad}: use {METHODS}.")
    lens = resolve_readout(view, tokenizer, readout)
    task = get_task(task)
    builder = PromptBuilder(task, tokenizer, view.cfg.n_ctx)
    tests = task.test_set if n_test is None else task.test_set[: int(n_test)]
    if not tests:
        raise ValueError("n_test must be at least 1.")
    rate = task_lr(task.name, lr)
    say = progress or (lambda msg: None)
    record = lambda demos: _record_all(view, builder, tests, demos, True, read_at, keys)  # noqa: E731
    t0 = time.perf_counter()
    zs = record([])
    t_zs = time.perf_counter() - t0
    params = trainable_parameters(view, trainable)
    out = []
    for seed in seeds:
        demos = task.demonstrations(k, seed)
        times = {"zs": t_zs}
        t0 = time.perf_counter()
        icl = record(demos)
        times["icl"] = time.perf_counter() - t0
        res = SeedResult(task.name, seed, k, rate, {"zs": _correct_flags(zs), "icl": _correct_flags(icl)})
        g = torch.Generator().manual_seed(seed)
        res.random_sim_aou = _compare_pairs(lambda z, i: random_sim_aou(z.attn_out, i.attn_out, g), zs, icl)
        res.sim_am["zs"] = _compare_pairs(lambda z, i: sim_am(i.scores, z.scores), zs, icl)
        res.attn_change["icl"] = _attn_change(zs, icl)
        sequences = _training_sequences(builder, demos, loss_on)
        saved = [t.param.detach().clone() for t in params]
        for method in methods:
            t0 = time.perf_counter()
            try:
                with finetuned(view, sequences, method, rate, trainable, lens) as losses:
                    res.update_norm[method] = update_norms(params, saved, view.cfg.n_layers).numpy()
                    ft = record([])
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
            res.attn_change[method] = _attn_change(zs, ft)
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
    k: int = 32,
    seed: int = 0,
    n_eval: int = 32,
    methods: Sequence[str] = METHODS,
    trainable: Sequence[str] = ("W_K", "W_V"),
    loss_on: str = "all",
    readout="logit_lens",
) -> list[dict]:
    """Accuracy after finetuning with each learning rate, on validation examples (pool minus demos).

    Returns rows {lr, method, accuracy, final_loss, skipped}; the zero-shot accuracy is the row
    with ``lr`` 0 and method ``"zs"``.
    """
    _check_loss_on(loss_on)
    lens = resolve_readout(view, tokenizer, readout)
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
                with finetuned(view, sequences, method, lr, trainable, lens) as losses:
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
    k: int = 32,
    loss_on: str = "all",
    repeats: int = 1,
    trainable: Sequence[str] = ("W_K", "W_V"),
) -> dict[str, list[float]]:
    """Seconds of one SGD step's forward + backward (no update), GD and LCGD interleaved to share the noise.

    One step per training sequence of the ``k`` demonstrations of seed 0, ``repeats`` times:
    ``{"gd": [...], "lcgd": [...]}``, ``k * repeats`` timings each.
    """
    _check_loss_on(loss_on)
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
