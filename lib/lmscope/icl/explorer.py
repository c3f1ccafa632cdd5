"""Chapter 04's static explorer: how well each finetuning update matches the ICL update, per layer.

Built from results the chapter already has (``{k: {task: TaskResult}}`` from
:func:`lmscope.icl.runs.run_study`, with the ablation's k cell through :func:`results_by_k`, optionally
the untrained control's), nothing is recomputed:
for each task, k, model and metric, a table of layers x methods with the per-layer mean over
seeds (each seed: mean over test examples), the std on hover. Metrics as recorded in
:class:`lmscope.icl.metrics.SeedResult`: SimAOU (``sim_aou``, with the random-update baseline
``random_sim_aou``), SimAM (``sim_am``, with ``zs`` = cos(ICL, zero-shot)) and SimAM_Δ (``sim_am_delta``).
"""

from __future__ import annotations

import numpy as np

from lmscope.static_explorer import StaticExplorer, heatmap

# metric label -> (field, [(column label, method)])
METRICS = {
    "SimAOU": ("sim_aou", [("GD", "gd"), ("LCGD", "lcgd"), ("random update", None)]),
    "SimAM": ("sim_am", [("GD", "gd"), ("LCGD", "lcgd"), ("zero-shot", "zs")]),
    "SimAM_Δ": ("sim_am_delta", [("GD", "gd"), ("LCGD", "lcgd")]),
}
TRAINED, CONTROL = "trained model", "untrained control"


def similarity_panel(result, metric: str) -> str | None:
    """Layers x methods table of one TaskResult's ``metric`` (a key of :data:`METRICS`), or None if not recorded."""
    field, columns = METRICS[metric]
    curves = []
    for label, method in columns:
        name, key = ("random_sim_aou", "") if method is None else (field, method)
        mean, std = result.layer_curve(name, key)
        curves.append((label, mean, std))
    curves = [c for c in curves if c[1].size]
    if not curves:
        return None
    n_layers = curves[0][1].size
    order = list(range(n_layers))[::-1]
    values = np.stack([c[1] for c in curves], axis=1)[order]  # (n_layers, n_methods)
    cells = [[f"{v:.2f}" for v in row] for row in values]
    tips = [[f"layer {l}, {c[0]}: {c[1][l]:.3f} ± {c[2][l]:.3f} over {len(result.seeds)} seed(s)" for c in curves]
            for l in order]
    mean_row = ", ".join(f"{c[0]} {np.nanmean(c[1]):.3f}" for c in curves)
    return (f"<p>{result.task}, k = {result.k}: {metric} per layer (mean over layers: {mean_row}).</p>"
            + heatmap(values, cells, tips, [f"L{l}" for l in order], [c[0] for c in curves], signed=True,
                      corner="layer"))


def results_by_k(results: dict, cells=(), model: str | None = None) -> dict:
    """``{k: {task: TaskResult}}`` for the explorer: the main table's results at their k, plus each ablation
    cell of ``model`` (None: any) whose changed factor is k, so the k control offers every k that was run."""
    by_k: dict = {}
    for task, result in results.items():
        by_k.setdefault(result.k, {})[task] = result
    for cell in cells:
        if cell.factor == "k" and (model is None or cell.model == model):
            by_k.setdefault(cell.result.k, {}).setdefault(cell.result.task, cell.result)
    return by_k


def icl_static_explorer(by_k: dict, control: dict | None = None, view_name: str = "") -> StaticExplorer:
    """The chapter's static explorer: ``by_k`` is ``{k: {task: TaskResult}}``; ``control`` the untrained model's
    ``{task: TaskResult}`` (at one k) if the chapter ran it."""
    if not by_k or not any(by_k.values()):
        raise ValueError("by_k is empty: pass {k: run_study(...)} for at least one k")
    tasks = sorted({t for results in by_k.values() for t in results})
    panels = {}
    runs = [(TRAINED, k, results) for k, results in by_k.items()]
    if control:
        runs += [(CONTROL, next(iter(control.values())).k, control)]
    for model, k, results in runs:
        for task, result in results.items():
            for metric in METRICS:
                panel = similarity_panel(result, metric)
                if panel is not None:
                    panels[(task, str(k), model, metric)] = panel
    ks = sorted({str(k) for _, k, _ in runs}, key=int)
    return StaticExplorer(
        title=f"ICL vs finetuning{' on ' + view_name if view_name else ''}: similarity per layer (precomputed)",
        controls={"task": tasks, "k": ks, "model": [TRAINED] + ([CONTROL] if control else []),
                  "metric": list(METRICS)},
        panels=panels, hint="hover a cell: mean ± std over seeds",
        missing="not run for this choice (the untrained control runs only some tasks, at one k)")
