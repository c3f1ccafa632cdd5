"""Which factor moves the GD / LCGD comparison: the paper's protocol, changed one factor at a time.

The baseline cell is the paper's protocol (:mod:`lmscope.icl.runs` defaults: every-token loss,
k = 32, records at the label token, the learning rate chosen on validation examples, the logit
lens). Each other cell changes exactly one factor:

* ``loss_on``  ``"label"`` (loss on the label tokens only);
* ``k``        fewer demonstrations (8);
* ``read_at``  ``"last"`` (records at the last prompt token; SimAM_Δ keys end there too);
* ``lr``       the other two of the three learning rates (all three chosen by :func:`choose_lrs` on
  validation examples only: the best of a grid and its neighbours);
* ``readout``  ``"tuned_lens"`` (every layer read through a trained tuned lens);
* ``model``    another model (:func:`ablation` on its view, merged by the caller).

Every cell gives LCGD - GD on SimAOU and SimAM_Δ, mean and std over seeds (:func:`cell_rows`).

>>> lrs, best, _ = choose_lrs(view, tok, "wordnet_category", grid=(1e-4, 1e-3, 1e-2))   # doctest: +SKIP
>>> cells = ablation(view, tok, "wordnet_category", lrs, best, seeds=(0, 1, 2))         # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lmscope.core.view import ModelView
from lmscope.icl.metrics import TaskResult
from lmscope.icl.runs import run_task, sweep_lr

FACTORS = ("loss_on", "k", "read_at", "lr", "readout")
PAPER = {"loss_on": "all", "k": 32, "read_at": "label", "readout": "logit_lens"}
CHANGED = {"loss_on": "label", "k": 8, "read_at": "last", "readout": "tuned_lens"}


@dataclass
class Cell:
    """One ablation cell: which factor differs from the paper's protocol, its value, and the runs."""

    factor: str  # "paper" for the baseline
    value: object
    model: str
    result: TaskResult

    def difference(self, metric: str) -> tuple[float, float]:
        """LCGD - GD of ``metric`` (``"sim_aou"`` / ``"sim_am_delta"``), mean and std over seeds."""
        diffs = [float(s.metric_values(metric, "lcgd").mean() - s.metric_values(metric, "gd").mean())
                 for s in self.result.seeds if s.has_metric(metric, "lcgd") and s.has_metric(metric, "gd")]
        return (float(np.mean(diffs)), float(np.std(diffs))) if diffs else (math.nan, math.nan)

    @property
    def label(self) -> str:
        return f"{self.model}: paper" if self.factor == "paper" else f"{self.model}: {self.factor}={self.value}"


def best_lr(rows: list[dict]) -> float:
    """The rate of sweep ``rows`` with the best mean of GD and LCGD accuracy (ties: the larger; skips count 0)."""
    lrs = sorted({r["lr"] for r in rows if r["method"] != "zs"})
    if not lrs:
        raise ValueError("The sweep has no finetuned rows.")
    score = {lr: np.mean([0.0 if math.isnan(r["accuracy"]) else r["accuracy"] for r in rows if r["lr"] == lr])
             for lr in lrs}
    return max(lrs, key=lambda lr: (score[lr], lr))


def choose_lrs(view: ModelView, tokenizer, task, grid: Sequence[float], k: int = 32, seed: int = 0,
               n_eval: int = 16, **kwargs) -> tuple[tuple[float, ...], float, list[dict]]:
    """Three learning rates from ``grid`` and the best of them, chosen on validation examples only.

    :func:`lmscope.icl.runs.sweep_lr` scores every rate on pool examples that are not
    demonstrations; the best (:func:`best_lr`) and its two grid neighbours (the three nearest
    when it is at an end) are returned, sorted, with the best and the sweep rows.
    """
    grid = sorted(float(g) for g in grid)
    if len(grid) < 3:
        raise ValueError(f"grid needs at least 3 learning rates, got {grid}.")
    rows = sweep_lr(view, tokenizer, task, grid, k=k, seed=seed, n_eval=n_eval, **kwargs)
    best = best_lr(rows)
    i = min(max(grid.index(best), 1), len(grid) - 2)
    return tuple(grid[i - 1 : i + 2]), best, rows


def ablation(
    view: ModelView,
    tokenizer,
    task,
    lrs: Sequence[float],
    best: float,
    seeds: Sequence[int] = (0, 1, 2),
    n_test: int = 16,
    factors: Sequence[str] = FACTORS,
    k: int = PAPER["k"],
    k_changed: int = CHANGED["k"],
    readout_lens=None,
    baseline: TaskResult | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Cell]:
    """The paper's cell and one cell per changed factor, on one task and model.

    ``lrs``: the three rates (:func:`choose_lrs`), ``best`` the one of the paper cell.
    ``readout_lens``: the lens of the ``readout`` cell (None: ``"tuned_lens"``, loaded or trained).
    ``baseline``: the paper cell's result when already run (the chapter's main table).
    ``k`` / ``k_changed``: the paper cell's demonstrations (32) and the ``k`` cell's (8).
    """
    bad = [f for f in factors if f not in FACTORS]
    if bad:
        raise ValueError(f"Unknown ablation factors {bad}: choose from {', '.join(FACTORS)}.")
    if best not in lrs:
        raise ValueError(f"best={best} must be one of lrs={tuple(lrs)}.")
    common = dict(seeds=seeds, n_test=n_test, progress=progress)
    name = view.name
    paper = {**PAPER, "k": k}
    base = baseline or run_task(view, tokenizer, task, lr=best, **paper, **common)
    cells = [Cell("paper", "", name, base)]
    for factor in factors:
        if factor == "lr":
            for lr in lrs:
                if lr != best:
                    cells.append(Cell("lr", lr, name, run_task(view, tokenizer, task, lr=lr, **paper, **common)))
            continue
        value = k_changed if factor == "k" else CHANGED[factor]
        if factor == "readout" and readout_lens is not None:
            value = readout_lens
        settings = {**paper, factor: value}
        res = run_task(view, tokenizer, task, lr=best, **settings, **common)
        cells.append(Cell(factor, CHANGED[factor] if factor == "readout" else value, name, res))
    return cells


def cell_rows(cells: Sequence[Cell]) -> list[dict]:
    """One row per cell: label, and LCGD - GD of SimAOU and SimAM_Δ (mean, std over seeds)."""
    rows = []
    for c in cells:
        aou, am = c.difference("sim_aou"), c.difference("sim_am_delta")
        rows.append({"cell": c.label, "factor": c.factor, "value": c.value, "model": c.model,
                     "d_sim_aou": aou[0], "d_sim_aou_std": aou[1], "d_sim_am_delta": am[0],
                     "d_sim_am_delta_std": am[1], "n_seeds": len(c.result.seeds)})
    return rows


def ablation_table(cells: Sequence[Cell]) -> str:
    """Markdown: LCGD - GD per cell (mean (std) over seeds); > 0 is the paper's claim holding."""
    lines = ["| cell | Δ SimAOU (LCGD - GD) | Δ SimAM_Δ (LCGD - GD) | seeds |", "|---|---|---|---|"]
    for r in cell_rows(cells):
        fmt = lambda m, s: "n/a" if math.isnan(m) else f"{m:+.3f} ({s:.3f})"  # noqa: E731
        lines.append(f"| {r['cell']} | {fmt(r['d_sim_aou'], r['d_sim_aou_std'])} | "
                     f"{fmt(r['d_sim_am_delta'], r['d_sim_am_delta_std'])} | {r['n_seeds']} |")
    return "\n".join(lines)


def plot_ablation(cells: Sequence[Cell], ax=None):
    """Horizontal bars: LCGD - GD on SimAOU and SimAM_Δ per cell, error bars the std over seeds."""
    import matplotlib.pyplot as plt

    rows = cell_rows(cells)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))
    for off, metric, color in ((-0.2, "d_sim_aou", "tab:blue"), (0.2, "d_sim_am_delta", "tab:orange")):
        ax.barh(y + off, [r[metric] for r in rows], 0.38, xerr=[r[metric + "_std"] for r in rows], color=color,
                label={"d_sim_aou": "SimAOU", "d_sim_am_delta": "SimAM_Δ"}[metric])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [r["cell"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("LCGD - GD  (> 0: the paper's claim holds)")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure
