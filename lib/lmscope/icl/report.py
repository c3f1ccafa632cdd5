"""Tables and figures of the study: accuracies, the paper's similarity table, layer curves, the controls.

Tables are Markdown strings (show them with ``IPython.display.Markdown``); figures are matplotlib
figures (matplotlib is imported inside the plot functions). Every function reads the
``{task name: TaskResult}`` dicts that :func:`lmscope.icl.runs.run_study` returns.

>>> print(accuracy_table(results))                               # doctest: +SKIP
>>> print(untrained_control_table(results, control))            # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from lmscope.icl.layer_causal import METHODS
from lmscope.icl.metrics import TaskResult
from lmscope.icl.runs import RUNS

# Deutch et al. (2024), committed results: mean (std) over 3 runs, averaged over layers
PAPER_TABLE = {
    "SST-2": {"sim_aou": ((0.111, 0.002), (0.223, 0.010)), "sim_am_delta": ((0.150, 0.021), (0.299, 0.018))},
    "SST-5": {"sim_aou": ((0.092, 0.013), (0.107, 0.005)), "sim_am_delta": ((0.308, 0.018), (0.326, 0.006))},
    "MR": {"sim_aou": ((0.216, 0.009), (0.328, 0.007)), "sim_am_delta": ((0.139, 0.053), (0.263, 0.005))},
    "Subj": {"sim_aou": ((0.177, 0.018), (0.345, 0.007)), "sim_am_delta": ((0.254, 0.066), (0.322, 0.006))},
    "AGNews": {"sim_aou": ((0.308, 0.039), (0.327, 0.007)), "sim_am_delta": ((0.505, 0.052), (0.432, 0.015))},
    "CB": {"sim_aou": ((0.205, 0.008), (0.344, 0.003)), "sim_am_delta": ((0.246, 0.010), (0.382, 0.010))},
}


def _mean_std_text(stat: tuple[float, float]) -> str:
    """``(mean, std)`` as ``"0.123 (0.004)"``; ``"n/a"`` for a nan mean."""
    return "n/a" if math.isnan(stat[0]) else f"{stat[0]:.3f} ({stat[1]:.3f})"


def _mean_text(stat: tuple[float, float]) -> str:
    """The mean of ``(mean, std)`` as ``"0.123"``; ``"n/a"`` for nan."""
    return "n/a" if math.isnan(stat[0]) else f"{stat[0]:.3f}"


def accuracy_table(results: dict[str, TaskResult]) -> str:
    """Markdown: accuracy mean (std over seeds) of ZS, ICL, GD, LCGD and Rec2FTP per task."""
    lines = ["| task | ZS | ICL | GD | LCGD | Rec2FTP GD | Rec2FTP LCGD |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [_mean_std_text(r.accuracy(run)) for run in RUNS] + [_mean_std_text(r.rec2ftp(m)) for m in METHODS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def similarity_table(results: dict[str, TaskResult], with_paper: bool = True) -> str:
    """Markdown: SimAOU and SimAM_delta of GD vs LCGD per task (ours), then the paper's rows."""
    head = "| task | SimAOU GD | SimAOU LCGD | SimAM_Δ GD | SimAM_Δ LCGD | random SimAOU |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [_mean_std_text(r.summary(m, meth)) for m in ("sim_aou", "sim_am_delta") for meth in METHODS]
        cells.append(_mean_std_text(r.summary("random_sim_aou", "")))
        lines.append(f"| {name} (ours) | " + " | ".join(cells) + " |")
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


def _both_models(trained: dict[str, TaskResult], untrained: dict[str, TaskResult]):
    """(task, "trained" | "untrained", result) for every task of ``untrained``, trained first."""
    missing = [name for name in untrained if name not in trained]
    if missing:
        raise ValueError(f"Tasks {missing} of the untrained control have no trained results; "
                         f"run them on the trained model too (trained tasks: {list(trained)}).")
    for name in untrained:
        yield name, "trained", trained[name]
        yield name, "untrained", untrained[name]


def untrained_control_table(trained: dict[str, TaskResult], untrained: dict[str, TaskResult]) -> str:
    """Markdown: ICL accuracy, SimAOU, SimAM_Δ and the random SimAOU of the trained and the untrained model.

    One pair of rows per task of ``untrained`` (the control: :func:`lmscope.icl.runs.untrained_model`);
    values are means over seeds of the averages over examples and layers.
    """
    rows = ["| task | model | ICL acc | SimAOU GD | SimAOU LCGD | SimAM_Δ GD | SimAM_Δ LCGD | random SimAOU |",
            "|---|---|---|---|---|---|---|---|"]
    for name, label, res in _both_models(trained, untrained):
        cells = ([_mean_text(res.accuracy("icl"))]
                 + [_mean_text(res.summary(m, method)) for m in ("sim_aou", "sim_am_delta") for method in METHODS]
                 + [_mean_text(res.summary("random_sim_aou", ""))])
        rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def sim_am_table(trained: dict[str, TaskResult], untrained: dict[str, TaskResult]) -> str:
    """Markdown: Dai et al.'s SimAM, cos(ICL scores, ZS / GD / LCGD scores), trained and untrained model.

    If finetuning moved the attention toward ICL's, cos(ICL, GD) and cos(ICL, LCGD) exceed
    cos(ICL, ZS). Averages over examples and layers, mean over seeds; one pair of rows per task of
    ``untrained``.
    """
    rows = ["| task | model | cos(ICL, ZS) | cos(ICL, GD) | cos(ICL, LCGD) |", "|---|---|---|---|---|"]
    for name, label, res in _both_models(trained, untrained):
        rows.append(f"| {name} | {label} | "
                    + " | ".join(f"{res.summary('sim_am', m)[0]:.4f}" for m in ("zs", *METHODS)) + " |")
    return "\n".join(rows)


def size_table(results: dict[str, TaskResult]) -> str:
    """Markdown: per task, the weight-update norm of GD and LCGD (summed over layers, in quadrature) and the
    change to the attention output of ICL, GD and LCGD (mean over layers), means over seeds."""
    rows = ["| task | |ΔW| GD | |ΔW| LCGD | LCGD / GD | |Δattn| ICL | |Δattn| GD | |Δattn| LCGD |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        w = {m: r.size_curve("update_norm", m) for m in METHODS}
        a = {m: r.size_curve("attn_change", m) for m in ("icl", *METHODS)}
        wn = {m: float(np.sqrt((v ** 2).sum())) if v.size else math.nan for m, v in w.items()}
        an = {m: float(v.mean()) if v.size else math.nan for m, v in a.items()}
        ratio = wn["lcgd"] / wn["gd"] if wn["gd"] else math.nan
        rows.append(f"| {name} | {wn['gd']:.3g} | {wn['lcgd']:.3g} | {ratio:.2f} | {an['icl']:.3g} | "
                    f"{an['gd']:.3g} | {an['lcgd']:.3g} |")
    return "\n".join(rows)


def plot_sizes(results: dict[str, TaskResult], axes=None):
    """Per layer: |ΔW| of GD and LCGD (top row) and |attn_out - attn_out(ZS)| of ICL, GD, LCGD (bottom), per task."""
    import matplotlib.pyplot as plt

    names = list(results)
    if axes is None:
        fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.2), squeeze=False, sharex=True)
    else:
        fig = axes[0][0].figure
    colors = {"icl": "tab:green", "gd": "tab:blue", "lcgd": "tab:orange"}
    for j, name in enumerate(names):
        for i, (what, runs) in enumerate((("update_norm", METHODS), ("attn_change", ("icl", *METHODS)))):
            ax = axes[i][j]
            for run in runs:
                curve = results[name].size_curve(what, run)
                if curve.size:
                    ax.plot(np.arange(curve.size), curve, color=colors[run], label=run.upper())
            ax.set_yscale("log")
            ax.set_title(f"{name}: " + ("|ΔW| per layer" if i == 0 else "|Δ attn out| per layer"), fontsize=9)
            if i == 1:
                ax.set_xlabel("layer")
        axes[1][j].legend(fontsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
