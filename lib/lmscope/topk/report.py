"""Chapter 03's tables, figures and number-bearing sentences, from the measured rows (never typed by hand).

Tables are ``(headers, rows)`` for :func:`lmscope.display.html_table`; figures are matplotlib
(imported inside the functions); :data:`PAPER_T5_FF` holds the paper's zero-shot FF results.
"""

from __future__ import annotations

#: Gupta et al. (2021), zero-shot UnifiedQA with top-k at every FF layer: mean exact-match change vs
#: dense (points) by k, with each model's d_ff (official repository's result tables).
PAPER_T5_FF = {
    "T5-base": {"d_ff": 3072, "delta_em": {512: -0.04, 256: -0.12, 128: 0.08, 64: -0.02, 32: -1.47}},
    "T5-3B": {"d_ff": 16384, "delta_em": {512: -0.16, 256: -0.16, 128: -0.73, 64: -1.92, 32: -4.93}},
    "T5-11B": {"d_ff": 65536, "delta_em": {512: -0.19, 256: -0.33, 128: -2.02, 64: -4.22}},
}


def pct(x: float | None, digits: int = 1) -> str:
    """A relative change as a signed percentage ('+14.6%'); '-' for None."""
    return "-" if x is None else f"{100 * x:+.{digits}f}%"


def _dense(rows: list[dict], length: int) -> dict:
    return next(r for r in rows if r["length"] == length and r["mode"] == "dense")


def length_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """One line per (length, mode, k) of a :func:`lmscope.topk.lengths.length_sweep`: perplexity and its
    change from dense at that length; the dropped-mass rows give their own column."""
    mass = {(r["length"], r["k"]): r["mass"] for r in rows if r["mode"] == "dropped mass"}
    out = []
    for r in rows:
        if r["mode"] == "dropped mass":
            continue
        dense = _dense(rows, r["length"])["ppl"]
        k = "-" if r["k"] is None else r["k"]
        frac = "-" if r["k"] is None else f"1/{r['length'] / r['k']:.0f}" if r["k"] < r["length"] else ">= 1"
        dropped = mass.get((r["length"], r["k"])) if r["mode"] == "attention" else None
        out.append([r["length"], r["n_blocks"], r["mode"], k, frac, f"{r['ppl']:.2f}",
                    "-" if r["mode"] == "dense" else pct(r["ppl"] / dense - 1),
                    "-" if dropped is None else f"{dropped:.3f}"])
    return ["length", "blocks", "mode", "k", "k / length", "perplexity", "change", "dense mass dropped"], out


def fewshot_table(rows: list[dict], tasks) -> tuple[list[str], list[list]]:
    """Accuracy per task for each row of :func:`lmscope.topk.fewshot.fewshot_sweep`."""
    return ["mode", "k", *tasks], [[r["mode"], "-" if r["k"] is None else r["k"], *(f"{r[t]:.2f}" for t in tasks)]
                                   for r in rows]


def smallest_matching_k(rows: list[dict], tasks, mode: str = "attention") -> int | None:
    """The smallest k of ``mode`` whose accuracy is at least dense's on every task (None if none is)."""
    dense = rows[0]
    ks = sorted(r["k"] for r in rows if r["mode"] == mode and all(r[t] >= dense[t] for t in tasks))
    return ks[0] if ks else None


def ff_table(ppl_rows: list[dict], stats: dict, d_ff: int) -> tuple[list[str], list[list]]:
    """Top-k FF: k, k / d_ff, perplexity change (from :func:`~lmscope.topk.perplexity.perplexity_sweep`),
    share of |m| kept and FF-output error (from :func:`lmscope.topk.ff_sparsity.mean_stats`)."""
    dense = ppl_rows[0]["ppl"]
    out = []
    for r in ppl_rows:
        if r["mode"] != "ff":
            continue
        k = r["k"]
        out.append([k, f"{100 * k / d_ff:.1f}%", pct(r["ppl"] / dense - 1),
                    f"{stats['l1_kept'][k]:.3f}" if k in stats["l1_kept"] else "-",
                    f"{stats['out_error'][k]:.3f}" if k in stats["out_error"] else "-"])
    return ["k", "k / d_ff", "perplexity change", "share of sum |m| kept", "FF output error"], out


def paper_ff_table() -> tuple[list[str], list[list]]:
    """The paper's zero-shot FF results: per model and k, k / d_ff and the mean EM change."""
    out = []
    for name, entry in PAPER_T5_FF.items():
        for k, delta in entry["delta_em"].items():
            out.append([name, entry["d_ff"], k, f"{100 * k / entry['d_ff']:.2f}%", f"{delta:+.2f}"])
    return ["model", "d_ff", "k", "k / d_ff", "EM change (points)"], out


def plot_positions(rows: list[dict]):
    """Per length, mean loss by query position (doubling bins), dense and each top-k run. Returns the figure."""
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    fig, ax = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.4), squeeze=False)
    for a, length in zip(ax[0], lengths):
        for r in rows:
            if r["length"] != length or "bins" not in r:
                continue
            label = "dense" if r["mode"] == "dense" else f"{r['mode']} k={r['k']}"
            bins = [b for b in r["bins"] if b["start"] > 0]
            a.plot([b["start"] for b in bins], [b["nll"] for b in bins], marker="o", ms=3, label=label,
                   color="black" if r["mode"] == "dense" else None, ls="--" if "first" in r["mode"] else "-")
        a.set_xscale("log", base=2)
        a.set_xlabel("query position (bin start)")
        a.set_ylabel("mean next-token loss (nats)")
        a.set_title(f"{length}-token blocks")
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_dropped_mass(rows: list[dict]):
    """Per layer, the dense attention mass outside the top k keys, one line per (length, k). Returns the
    figure, or None when ``rows`` hold no dropped-mass rows."""
    import matplotlib.pyplot as plt

    masses = [r for r in rows if r["mode"] == "dropped mass"]
    if not masses:
        return None
    fig, a = plt.subplots(figsize=(6.5, 3.4))
    for r in masses:
        a.plot(range(len(r["per_layer"])), r["per_layer"], marker="o", ms=3, label=f"length {r['length']}, k={r['k']}")
    a.set_xlabel("layer")
    a.set_ylabel("softmax mass dropped")
    a.set_title("dense attention mass outside each query's top k keys")
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def headline(rows: list[dict], ks: tuple[int, ...] = (64, 256)) -> tuple[int | None, dict[int, float | None]]:
    """The longest length where every k of ``ks`` has a top-k attention row, and the relative perplexity
    change at each k there: (length, {k: change}); (None, {}) when no length has them all."""
    from lmscope.topk.lengths import relative_change

    for length in sorted({r["length"] for r in rows}, reverse=True):
        changes = {k: relative_change(rows, length, k) for k in ks}
        if all(v is not None for v in changes.values()):
            return length, changes
    return None, {}


def plot_fraction(rows: list[dict]):
    """Perplexity change of top-k attention against k / length (log scale), one line per length: the
    fraction-of-length view of the sweep. Returns the figure, or None without top-k rows below the length."""
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows if r["mode"] == "attention" and r["k"] < r["length"]})
    if not lengths:
        return None
    fig, a = plt.subplots(figsize=(6.5, 3.4))
    for length in lengths:
        dense = _dense(rows, length)["ppl"]
        pts = sorted((r["k"] / length, 100 * (r["ppl"] / dense - 1)) for r in rows
                     if r["length"] == length and r["mode"] == "attention" and r["k"] < length)
        a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{length} tokens")
        for (f, c), r in zip(pts, sorted((r for r in rows if r["length"] == length and r["mode"] == "attention"
                                          and r["k"] < length), key=lambda r: r["k"])):
            a.annotate(f"k={r['k']}", (f, c), fontsize=7, textcoords="offset points", xytext=(3, 3))
    a.set_xscale("log", base=2)
    a.set_xlabel("k / length")
    a.set_ylabel("perplexity change vs dense (%)")
    a.set_title("top-k attention: cost against the share of keys kept")
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ff_changes(ppl_rows: list[dict]) -> dict[int, float]:
    """{k: perplexity change of top-k FF vs dense} from :func:`~lmscope.topk.perplexity.perplexity_sweep` rows."""
    dense = ppl_rows[0]["ppl"]
    return {r["k"]: r["ppl"] / dense - 1 for r in ppl_rows if r["mode"] == "ff"}


def ff_reading(name: str, ppl_rows: list[dict], stats: dict, d_ff: int, gated: bool = True) -> str:
    """The Markdown reading of the top-k FF table: every number from the same rows as :func:`ff_table`."""
    change = ff_changes(ppl_rows)
    t5 = PAPER_T5_FF["T5-base"]
    t5_frac = 64 / t5["d_ff"]
    near = min(change, key=lambda k: abs(k / d_ff - t5_frac))
    big = " and ".join(f"{m} loses {-PAPER_T5_FF[m]['delta_em'][64]:.1f} EM at k=64 ({64 / PAPER_T5_FF[m]['d_ff']:.1%})"
                    for m in ("T5-3B", "T5-11B"))
    return (f"**Reading.** {name}'s {'gated' if gated else 'ungated'} FF coefficients: {stats['zero']:.1%} exactly zero, "
            f"{stats['small']:.1%} below 1% of the token's largest, effective share {stats['effective']:.1%} of "
            f"$d_{{ff}}$ (mean over layers). Top-k FF costs {', '.join(f'{pct(c)} at k={k}' for k, c in change.items())} "
            f"in perplexity. At the fraction where T5-base loses {-t5['delta_em'][64]:.2f} EM (k=64 of "
            f"{t5['d_ff']}, {t5_frac:.1%}), the nearest k here, {near} ({near / d_ff:.1%}), costs "
            f"{pct(change[near])}; {big}, far smaller fractions. The measures differ (perplexity of every token "
            "vs exact match of short answers), so read the fractions, not the magnitudes, side by side.")


def ff_baseline_table(baseline: list[dict], pretrained: dict | None = None) -> tuple[list[str], list[list]]:
    """FF coefficient sparsity side by side: the rows of :func:`lmscope.topk.ff_baseline.ff_baseline` and,
    if given, ``pretrained`` {'model', 'd_ff', 'gated', 'zero', 'small', 'effective'} (a pretrained model)."""
    rows = list(baseline) + ([pretrained] if pretrained else [])
    out = [[r["model"], "gated" if r["gated"] else "ReLU", r["d_ff"], f"{r['zero']:.1%}", f"{r['small']:.1%}",
            f"{r['effective']:.1%}"] for r in rows]
    return ["model", "FF", "d_ff", "exactly zero", "below 1% of the token's largest", "effective share"], out


def ff_fraction_table(baseline: list[dict]) -> tuple[list[str], list[list]]:
    """Top-k FF by k / d_ff: per scratch model and k, the share of sum |m| kept, the FF output error and the
    perplexity change; beside the paper's T5 EM changes at the same k / d_ff where it has them."""
    t5 = PAPER_T5_FF["T5-base"]
    out = []
    for r in baseline:
        for k in r["ks"]:
            frac = k / r["d_ff"]
            paper = [f"{d:+.2f} (k={kt})" for kt, d in t5["delta_em"].items() if abs(kt / t5["d_ff"] - frac) < 0.001]
            out.append([r["model"], k, f"{100 * frac:.1f}%", f"{r['l1_kept'][k]:.3f}",
                        f"{r['out_error'][k]:.3f}", pct(r["ppl_change"][k]), paper[0] if paper else "-"])
    return ["model", "k", "k / d_ff", "share of sum |m| kept", "FF output error", "perplexity change",
            "T5-base EM change, paper (same k / d_ff)"], out


def ff_baseline_reading(baseline: list[dict]) -> str:
    """The Markdown reading of the scratch ReLU vs gated comparison, numbers (and which way each
    comparison goes) from ``baseline``."""
    by = {("relu" if not r["gated"] else "gated"): r for r in baseline}
    if set(by) != {"relu", "gated"}:
        raise ValueError("ff_baseline_reading needs one ReLU and one gated model in the baseline rows")
    relu, gated = by["relu"], by["gated"]
    k_r, k_g = relu["ks"][0], gated["ks"][0]
    sparser = relu["effective"] < gated["effective"] and relu["small"] > gated["small"]
    cheaper = relu["ppl_change"][k_r] < gated["ppl_change"][k_g]
    if sparser and not cheaper and relu["out_error"][k_r] <= 1.25 * gated["out_error"][k_g]:
        verdict = ("so the sparser coefficients did not make top-k FF cheaper here: at a comparable FF output error "
                   "the ReLU model loses more perplexity, i.e. it depends more on what its FF layers write")
    elif sparser and not cheaper:
        verdict = ("so the sparser coefficients did not make top-k FF cheaper here: top-k leaves a larger error in "
                   "the ReLU model's FF output")
    elif sparser:
        verdict = "so here the sparser ReLU coefficients also make top-k FF cheaper, as the paper's reasoning expects"
    else:
        verdict = "so in this pair the ReLU coefficients are not the sparser ones by these measures"
    return (f"**Reading.** Trained the same way, the ReLU model's FF coefficients are {relu['zero']:.1%} exactly "
            f"zero and {relu['small']:.1%} below 1% of the token's largest (effective share {relu['effective']:.1%} "
            f"of $d_{{ff}}$); the SwiGLU model's {gated['zero']:.1%} and {gated['small']:.1%} (effective share "
            f"{gated['effective']:.1%}). At the smallest k tried ({k_r / relu['d_ff']:.1%} of $d_{{ff}}$) top-k keeps "
            f"{relu['l1_kept'][k_r]:.1%} of $\\sum|m|$ for ReLU and {gated['l1_kept'][k_g]:.1%} for SwiGLU (FF output "
            f"error {relu['out_error'][k_r]:.2f} and {gated['out_error'][k_g]:.2f}) and costs "
            f"{pct(relu['ppl_change'][k_r])} and {pct(gated['ppl_change'][k_g])} in perplexity; {verdict}. "
            "This is a controlled small-scale baseline (models of a few million parameters trained for minutes on "
            "Shakespeare, the ReLU one a GPT-2 block), not GPT-2 or T5: it measures the FF types side by side here, "
            "not at the paper's scale.")
