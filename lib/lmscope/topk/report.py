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
