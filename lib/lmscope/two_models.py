"""The two-model chapter and the book's landing page: every chapter's headline numbers side by side.

Each chapter saves its headline numbers with :func:`lmscope.core.results.save_results`
(``{model: {chapter: numbers}}`` once read back by :func:`lmscope.core.results.load_results`).
:func:`comparison_rows` flattens them into one row per (chapter, number) with a value per
model; :func:`comparison_markdown` renders the table with a reading per row, and
:func:`findings_markdown` the landing page's per-chapter summary. A number a chapter saves
under the key ``"finding"`` (a sentence) is shown as that chapter's finding.
"""

from __future__ import annotations

import math

CHAPTER_TITLES = {
    "00_model": "The model under the microscope (logit lens)",
    "01_embedding_space": "Transformers in embedding space",
    "02_lm_debugger": "An LM debugger",
    "03_topk_attention": "Top-k attention",
    "04_icl_vs_gd": "In-context learning vs. gradient descent",
    "05_across_vocabularies": "Across vocabularies (SmolLM2 vs Gemma 3, chapter 05)",
}

# What a difference between the two models in each chapter's numbers is about: the models, or
# the method (the same measurement, so a method property shows on both models alike).
CHAPTER_NOTES = {
    "00_model": "Where the prediction first leads is a property of the model (its depth and how it "
                "spreads the computation); compare it as a fraction of the layers. The lens itself is "
                "the same on both, so a lens that is better on one model says something about that model's "
                "basis drift, not about the method.",
    "01_embedding_space": "The gap between real and random readings is the method's claim: if it holds on both "
                          "models it is about the method; its size depends on the vocabulary (49k vs 262k "
                          "tokens) and on whether the model rescales what it writes (Gemma's post-norms).",
    "02_lm_debugger": "The effect of switching the dominant values off, against the random control, tests the "
                      "method (are sub-updates causal?); how large it is depends on how many values share the "
                      "work in each model.",
    "03_topk_attention": "That a small change in perplexity holds at moderate k is the method's claim of a drop-in "
                         "approximation; how small k can go differs with how concentrated each model's attention "
                         "is (Gemma 3 has sliding-window layers, SmolLM2 none), which is about the model.",
    "04_icl_vs_gd": "Accuracies are about the model (what it can do in context); whether LCGD is at least as "
                    "similar to ICL as GD is the method's claim, and it should hold or fail on both alike.",
    "05_across_vocabularies": "One experiment across both models (saved under the first): numbers are [real, shuffled "
                              "control] pairs, so there is no second column to compare.",
}


def _flatten(numbers: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + " / "))
        elif isinstance(value, list) and all(isinstance(v, (int, float)) or v is None for v in value):
            out[name] = " / ".join(fmt(v) for v in value)
        else:
            out[name] = value
    return out


def fmt(value) -> str:
    """A number as the table shows it (3 significant digits; integers as they are), else its text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def comparison_rows(results: dict[str, dict[str, dict]], models: list[str] | None = None) -> list[dict]:
    """One row per (chapter, number): ``{'chapter', 'name', 'values': {model: value}}``, chapters in order."""
    models = models or list(results)
    chapters = sorted({c for m in models for c in results.get(m, {})})
    rows = []
    for chapter in chapters:
        flat = {m: _flatten(results.get(m, {}).get(chapter, {})) for m in models}
        names = list(dict.fromkeys(n for m in models for n in flat[m] if n != "finding"))
        rows += [{"chapter": chapter, "name": n, "values": {m: flat[m].get(n) for m in models}} for n in names]
    return rows


def reading(values: dict[str, object]) -> str:
    """A short reading of one row: which model is higher and by how much, or that they agree."""
    nums = {m: v for m, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and not (isinstance(v, float) and math.isnan(v))}
    if len(nums) < 2:
        present = [v for v in values.values() if v is not None and v != "–"]
        if len(values) < 2:
            return ""
        if len(present) < 2:
            return "one model only"
        return "the same on both" if all(v == present[0] for v in present) else "see the columns (not one number)"
    (m_lo, lo), (m_hi, hi) = min(nums.items(), key=lambda x: x[1]), max(nums.items(), key=lambda x: x[1])
    scale = max(abs(lo), abs(hi), 1e-12)
    if (hi - lo) / scale < 0.05:
        return "about equal (within 5%)"
    return f"higher on {m_hi} ({fmt(hi)} vs {fmt(lo)})"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def comparison_markdown(results: dict[str, dict[str, dict]], models: list[str] | None = None) -> str:
    """The side-by-side table (markdown): chapter, number, one column per model, a reading."""
    models = models or list(results)
    if not models:
        return "*No results saved yet: build the chapters first (`make book`).*"
    lines = ["| chapter | number | " + " | ".join(models) + " | reading |",
             "|---|---|" + "---|" * len(models) + "---|"]
    for row in comparison_rows(results, models):
        cells = [CHAPTER_TITLES.get(row["chapter"], row["chapter"]), row["name"]]
        cells += [fmt(row["values"][m]) for m in models] + [reading(row["values"])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def chapter_notes(results: dict[str, dict[str, dict]]) -> str:
    """One paragraph per chapter with results: what a difference between the models is about."""
    chapters = sorted({c for per in results.values() for c in per})
    return "\n\n".join(f"**{CHAPTER_TITLES.get(c, c)}.** {CHAPTER_NOTES.get(c, '')}" for c in chapters)


def findings_markdown(results: dict[str, dict[str, dict]], max_numbers: int = 4) -> str:
    """The landing page's summary: per chapter, its saved finding or its first numbers, per model."""
    if not results:
        return ""
    chapters = sorted({c for per in results.values() for c in per})
    lines = []
    for chapter in chapters:
        parts = []
        for model, per in results.items():
            numbers = per.get(chapter)
            if numbers is None:
                continue
            if isinstance(numbers.get("finding"), str):
                parts.append(f"on {model}: {numbers['finding']}")
            else:
                flat = [(n, v) for n, v in _flatten(numbers).items()][:max_numbers]
                parts.append(f"on {model}: " + "; ".join(f"{n} {fmt(v)}" for n, v in flat))
        lines.append(f"- **{CHAPTER_TITLES.get(chapter, chapter)}**: " + ". ".join(parts) + ".")
    return "\n".join(lines)


def plot_comparison(results: dict[str, dict[str, dict]], models: list[str] | None = None):
    """Figure: every numeric row, each model's value divided by the row's largest magnitude."""
    import matplotlib.pyplot as plt
    import numpy as np

    models = models or list(results)
    rows = [r for r in comparison_rows(results, models)
            if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r["values"].values())]
    fig, ax = plt.subplots(figsize=(7, 0.32 * max(len(rows), 1) + 1.4), layout="constrained")
    if not rows:
        ax.text(0.5, 0.5, "no numeric results saved yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    y = np.arange(len(rows))
    height = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        vals = []
        for r in rows:
            v = r["values"][model]
            nums = [abs(x) for x in r["values"].values() if isinstance(x, (int, float)) and not isinstance(x, bool)]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and max(nums) > 0
            vals.append(v / max(nums) if ok else np.nan)
        ax.barh(y + i * height, vals, height=height, label=model)
    ax.set_yticks(y + height * (len(models) - 1) / 2,
                  [f"{r['chapter'][:2]}: {r['name'][:40]}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("value / largest magnitude in its row")
    ax.legend(fontsize=8)
    return fig
