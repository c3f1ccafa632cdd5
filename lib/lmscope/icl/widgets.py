"""The chapter 04 explorer: pick a task, k and a layer; see how the ICL update compares with each
finetuning update (GD, LCGD) there. ipywidgets and matplotlib are imported inside the functions.

>>> icl_vs_gd_explorer(view, tokenizer, results)      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lmscope.core.view import ModelView
from lmscope.icl.builtin_tasks import BUILTIN_TASKS
from lmscope.icl.metrics import TaskResult
from lmscope.icl.runs import run_task
from lmscope.icl.tasks import Task

METRICS = {"sim_aou": "SimAOU", "sim_am_delta": "SimAM_Δ"}


def layer_similarities(result: TaskResult, layer: int) -> dict[str, dict[str, float]]:
    """{metric: {method: mean over seeds and examples at ``layer``}}, plus the random SimAOU baseline."""
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        out[metric] = {}
        for method in ("gd", "lcgd"):
            mean, _ = result.layer_curve(metric, method)
            out[metric][method] = float(mean[layer]) if mean.size else float("nan")
    rand, _ = result.layer_curve("random_sim_aou", "")
    out["sim_aou"]["random"] = float(rand[layer]) if rand.size else float("nan")
    return out


def icl_vs_gd_explorer(
    view: ModelView,
    tokenizer,
    results: dict[str, TaskResult] | None = None,
    tasks: Sequence[str | Task] = BUILTIN_TASKS,
    ks: Sequence[int] = (2, 4, 8),
    n_test: int = 8,
    lr=None,
):
    """A task / k / layer picker. Results not yet computed run on demand (1 seed, ``n_test`` examples)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    cache: dict[tuple[str, int], TaskResult] = {(r.task, r.k): r for r in (results or {}).values()}
    ks = sorted(set(ks) | {k for _, k in cache})
    task_w = widgets.Dropdown(options=[(t.name if isinstance(t, Task) else t, t) for t in tasks], description="task")
    opening = max(k for _, k in cache) if cache else max(ks)  # open on a computed result: nothing runs at display
    k_w = widgets.Dropdown(options=ks, value=opening, description="k")
    layer_w = widgets.IntSlider(value=0, min=0, max=view.cfg.n_layers - 1, description="layer")
    out = widgets.Output()

    def get(task: str | Task, k: int) -> TaskResult:
        key = (task.name if isinstance(task, Task) else task, k)
        if key not in cache:
            cache[key] = run_task(view, tokenizer, task, k=k, seeds=(0,), n_test=n_test, lr=lr)
        return cache[key]

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            res = get(task_w.value, k_w.value)
            layer = layer_w.value
            sims = layer_similarities(res, layer)
            fig, axes = plt.subplots(1, 2, figsize=(9, 3))
            for ax, (metric, label) in zip(axes, METRICS.items()):
                for method, color in (("gd", "tab:blue"), ("lcgd", "tab:orange")):
                    mean, _ = res.layer_curve(metric, method)
                    if mean.size:
                        ax.plot(np.arange(mean.size), mean, color=color, label=method.upper())
                if metric == "sim_aou":
                    rand, _ = res.layer_curve("random_sim_aou", "")
                    ax.plot(np.arange(rand.size), rand, color="gray", ls=":", label="random")
                ax.axvline(layer, color="black", lw=0.8)
                ax.set_title(f"{label} at layer {layer}: GD {sims[metric]['gd']:.3f}, LCGD {sims[metric]['lcgd']:.3f}",
                             fontsize=9)
                ax.set_xlabel("layer")
            axes[0].legend(fontsize=8)
            fig.suptitle(f"{res.task}, k={res.k}: similarity of the ICL update to each finetuning update "
                         f"({len(res.seeds)} seed(s), {res.n_examples} test examples)", fontsize=9)
            fig.tight_layout()
            plt.show()

    for w in (task_w, k_w, layer_w):
        w.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([task_w, k_w, layer_w]), out])
