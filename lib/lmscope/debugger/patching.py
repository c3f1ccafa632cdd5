"""Activation patching and attribution patching: which (layer, position) carries what a prediction needs.

A *corrupted* run (a prompt of the same length that changes the answer, or the clean prompt with
Gaussian noise on chosen token embeddings, as in Meng et al.'s causal tracing) is rerun with one
activation restored to its value in the *clean* run, and a metric of the last position's
prediction is read: the probability of ``target`` (``"prob"``), its logit (``"logit"``) or the
logit difference ``target - foil`` (``"logit_diff"``). Components (:data:`COMPONENTS`):

* ``resid_pre``, ``attn_out``, ``mlp_out``: one (layer, position) at a time -> grid (L, T);
* ``heads``: one head of one layer, at every position -> grid (L, H).

All patched runs of a grid go through the model in batches (``batch_size`` rows), with only the
last position's logits computed where the model allows it. :func:`attribution_patching` gives the
same grids from one forward and one backward pass of the corrupted run: the first-order estimate
``metric(corrupted) + (a_clean - a_corrupted) . d metric / d a``.

>>> grids = activation_patching(view, clean_ids, corrupted_ids, target=paris)  # doctest: +SKIP
>>> grids["resid_pre"].recovered()                                           # (L, T)
"""

from __future__ import annotations

import copy
import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from lmscope.core.hooks import hook_name
from lmscope.debugger.dla import check_positions

Tensor = torch.Tensor
COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "heads")
METRICS = ("prob", "logit", "logit_diff")
_POINT = {"resid_pre": "resid_pre", "attn_out": "attn_out", "mlp_out": "mlp_out", "heads": "attn_heads"}


@dataclass(frozen=True)
class Noise:
    """Causal-tracing corruption: Gaussian noise of std ``scale * std(W_E)`` added to the embeddings
    (the input of block 0) at ``positions``; ``seed`` fixes the draw. Meng et al. use scale 3."""

    positions: tuple[int, ...]
    scale: float = 3.0
    seed: int = 0

    def tensor(self, view, n_tokens: int, dtype: torch.dtype) -> Tensor:
        """The noise to add to block 0's input: (1, n_tokens, d_model), zero outside ``positions``."""
        pos = check_positions(list(self.positions), n_tokens, "noise positions")
        g = torch.Generator().manual_seed(self.seed)
        std = float(view.W_E.detach().float().std())
        noise = torch.zeros(1, n_tokens, view.cfg.d_model, dtype=dtype)
        noise[0, pos] = (torch.randn(len(pos), view.cfg.d_model, generator=g) * self.scale * std).to(dtype)
        return noise.to(view.device)


@dataclass
class PatchGrid:
    """The metric after patching each cell: ``grid`` (L, T) or, for heads, (L, H); ``clean`` and
    ``corrupted`` are the metric of the unpatched runs."""

    component: str
    grid: Tensor
    clean: float
    corrupted: float
    metric: str
    method: str = "activation"  # or "attribution"
    tokens: list[str] | None = None
    columns: list[int] = field(default_factory=list)  # positions (or heads) of the grid's columns
    n_runs: int = 0  # patched runs made (cells whose activation did not change need none)

    def recovered(self) -> Tensor:
        """(grid - corrupted) / (clean - corrupted): 1 where a patch restores the clean metric."""
        gap = self.clean - self.corrupted
        if abs(gap) < 1e-12:
            raise ValueError("The clean and corrupted runs give the same metric: pick a corruption that changes it.")
        return (self.grid - self.corrupted) / gap

    def rows(self) -> list[dict]:
        """One row per cell ``{component, method, metric, layer, column, token, value, recovered}``."""
        rec = self.recovered() if abs(self.clean - self.corrupted) >= 1e-12 else None
        out = []
        kind = "head" if self.component == "heads" else "position"
        for layer in range(self.grid.shape[0]):
            for j, col in enumerate(self.columns):
                tok = self.tokens[col] if (self.tokens is not None and kind == "position") else None
                out.append({"component": self.component, "method": self.method, "metric": self.metric,
                            "layer": layer, kind: col, "token": tok, "value": float(self.grid[layer, j]),
                            "recovered": None if rec is None else float(rec[layer, j])})
        return out


def check_pair(clean_ids, corrupted_ids) -> tuple[Tensor, Tensor | None]:
    """Both prompts as (1, T) ids of the same length; ValueError naming the argument otherwise."""
    clean = torch.as_tensor(clean_ids, dtype=torch.long).reshape(1, -1)
    if clean.shape[1] == 0:
        raise ValueError("clean prompt is empty: give at least one token.")
    if corrupted_ids is None:
        return clean, None
    corrupted = torch.as_tensor(corrupted_ids, dtype=torch.long).reshape(1, -1)
    if corrupted.shape != clean.shape:
        raise ValueError(f"The clean prompt has {clean.shape[1]} tokens and the corrupted one {corrupted.shape[1]}: "
                         "patching needs prompts of the same length (reword the corrupted prompt, or use Noise).")
    return clean, corrupted


def metric_values(logits: Tensor, metric: str, target: int, foil: int | None) -> Tensor:
    """The metric of last-position logits (B, V): (B,)."""
    if metric == "prob":
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        return x.softmax(-1)[:, target].to(logits.dtype)
    if metric == "logit":
        return logits[:, target]
    if metric == "logit_diff":
        if foil is None:
            raise ValueError("metric='logit_diff' needs a foil token (the answer of the corrupted prompt).")
        return logits[:, target] - logits[:, foil]
    raise ValueError(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)}.")


def _check_args(view, component_list, metric, target, foil) -> None:
    for c in component_list:
        if c not in COMPONENTS:
            raise ValueError(f"Unknown component {c!r}: use any of {', '.join(COMPONENTS)}.")
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)}.")
    for name, tok in (("target", target), ("foil", foil)):
        if tok is not None and (isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < view.cfg.d_vocab):
            raise ValueError(f"{name} must be one token id in 0..{view.cfg.d_vocab - 1}, got {tok!r}.")
    if target is None:
        raise ValueError("target is missing: give the token id of the clean answer.")


def _last_logits(view, ids: Tensor) -> Tensor:
    """Logits of the last position (B, V), computing only that position's read-out where possible."""
    if "logits_to_keep" in inspect.signature(view.model.forward).parameters:
        return view.model(input_ids=ids, logits_to_keep=1, use_cache=False).logits[:, -1]
    return view.model(input_ids=ids).logits[:, -1]


@contextmanager
def _corrupting(view, noise: Tensor | None) -> Iterator[None]:
    if noise is None:
        yield
        return
    # a run of a suffix of the prompt (after a cached prefix) gets the suffix's noise
    with view.overwrite({hook_name(0, "resid_pre"): lambda t: t + noise[:, noise.shape[1] - t.shape[1]:].to(t.dtype)}):
        yield


def _restorer(rows: Tensor, cols: Tensor, clean: Tensor, heads: bool):
    """An edit that puts ``clean`` back in batch rows ``rows`` at positions (or heads) ``cols``."""
    def edit(t: Tensor) -> Tensor:
        t = t.clone()
        if heads:
            t[rows, :, cols] = clean[0][:, cols].permute(1, 0, 2).to(t.dtype)
        else:
            t[rows, cols] = clean[0][cols].to(t.dtype)
        return t

    return edit


@torch.no_grad()
def run_patched(view, corrupted_ids: Tensor, clean_cache: dict[str, Tensor], cells: Sequence[tuple[str, int, int]],
                noise: Tensor | None = None, prefix=None, start: int = 0) -> Tensor:
    """One batch: row ``b`` is the corrupted run with cell ``cells[b] = (component, layer, column)``
    restored from ``clean_cache`` (hook name -> clean activation). Last-position logits (B, V).

    With ``prefix`` (the corrupted run's key/value cache of positions ``0..start-1``, which no
    patch at a column >= ``start`` can change in a causal model) only positions ``start..`` run.
    """
    edits: dict[str, list] = {}
    for b, (component, layer, col) in enumerate(cells):
        edits.setdefault(hook_name(layer, _POINT[component]), []).append((b, col, component == "heads"))
    with ExitStack() as stack:
        stack.enter_context(_corrupting(view, noise))
        for name, items in edits.items():
            rows = torch.tensor([b for b, _, _ in items])
            cols = torch.tensor([c - start for _, c, _ in items])
            clean = clean_cache[name] if start == 0 else clean_cache[name][:, start:]
            stack.enter_context(view.overwrite({name: _restorer(rows, cols, clean, items[0][2])}))
        ids = corrupted_ids[:, start:].expand(len(cells), -1).to(view.device)
        if prefix is None:
            return _last_logits(view, ids)
        past = copy.deepcopy(prefix)
        past.crop(start - corrupted_ids.shape[1])  # a negative count: drop the cached positions start..
        past.batch_repeat_interleave(len(cells))
        key = "cache" if "cache" in inspect.signature(view.model.forward).parameters else "past_key_values"
        return view.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{key: past}).logits[:, -1]


def _prefix_cache(view, corrupted: Tensor, noise: Tensor | None):
    """The corrupted run's key/value cache (for runs of suffixes), or None where the model has none."""
    if not view.cfg.causal or "logits_to_keep" not in inspect.signature(view.model.forward).parameters:
        return None
    with torch.no_grad(), _corrupting(view, noise):
        out = view.model(input_ids=corrupted.to(view.device), use_cache=True)
    past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if not all(hasattr(past, m) for m in ("crop", "batch_repeat_interleave")):
        return None
    try:  # a sliding-window cache already as long as its window cannot be cut back: run whole prompts
        copy.deepcopy(past).crop(-1)
    except (RuntimeError, ValueError):
        return None
    return past


def _setup(view, clean_ids, corrupted_ids, noise, components, metric, target, foil):
    component_list = [components] if isinstance(components, str) else list(components)
    _check_args(view, component_list, metric, target, foil)
    clean, corrupted = check_pair(clean_ids, corrupted_ids)
    if (corrupted is None) == (noise is None):
        raise ValueError("Give exactly one corruption: corrupted_ids (a prompt of the same length) or noise=Noise(...).")
    noise_t = None if noise is None else noise.tensor(view, clean.shape[1], view.W_E.dtype)
    corrupted = clean if corrupted is None else corrupted
    names = [hook_name(l, _POINT[c]) for c in component_list for l in range(view.cfg.n_layers)]
    with torch.no_grad():
        with view.capture(names) as clean_cache:
            clean_logits = _last_logits(view, clean.to(view.device))
        clean_cache = dict(clean_cache)
    return component_list, clean, corrupted, noise_t, clean_cache, clean_logits


def _cells(view, component: str, columns: list[int]) -> list[tuple[str, int, int]]:
    return [(component, l, c) for l in range(view.cfg.n_layers) for c in columns]


def activation_patching(view, clean_ids, corrupted_ids=None, *, target: int, foil: int | None = None,
                        metric: str = "prob", components: Sequence[str] | str = ("resid_pre", "attn_out", "mlp_out"),
                        positions=None, noise: Noise | None = None, batch_size: int = 128,
                        tokens: list[str] | None = None, suffix_runs: bool = True,
                        skip_unchanged: bool = True) -> dict[str, PatchGrid]:
    """The patching grid of each component: ``{component: PatchGrid}`` (see the module docstring).

    ``positions`` limits the grids' columns (default: every position); heads are patched at every
    position. ``suffix_runs``: a patch at position t reruns only positions t.. after the corrupted
    run's cached keys and values (causal models; the same numbers, about half the work).
    ``skip_unchanged``: a cell whose clean activation equals the corrupted one exactly (in a causal
    model every position before the first change) gets the corrupted metric without a run.
    """
    comps, clean, corrupted, noise_t, cache, clean_logits = _setup(
        view, clean_ids, corrupted_ids, noise, components, metric, target, foil)
    cols = check_positions(positions, clean.shape[1])
    with torch.no_grad():
        with _corrupting(view, noise_t), view.capture(list(cache)) as corrupt_cache:
            base = _last_logits(view, corrupted.to(view.device))
    clean_m = float(metric_values(clean_logits, metric, target, foil)[0])
    corrupt_m = float(metric_values(base, metric, target, foil)[0])
    prefix = _prefix_cache(view, corrupted, noise_t) if suffix_runs else None
    out = {}
    L = view.cfg.n_layers

    def unchanged(comp: str, layer: int, col: int) -> bool:
        """Restoring a value the corrupted run already has is that run: no patched run needed."""
        n = hook_name(layer, _POINT[comp])
        a, b = cache[n][0], corrupt_cache[n][0]
        return torch.equal(a[:, col], b[:, col]) if comp == "heads" else torch.equal(a[col], b[col])

    for comp in comps:
        columns = list(range(view.cfg.n_heads)) if comp == "heads" else cols
        grid = torch.full((L, len(columns)), corrupt_m, dtype=torch.float64)
        # a patch at position t leaves positions < t as they were: run t.. after the cached prefix
        groups = [(0, _cells(view, comp, columns))] if comp == "heads" or prefix is None else \
            [(t, [(comp, l, t) for l in range(L)]) for t in cols]
        n_runs = 0
        for start, cells in groups:
            cells = [c for c in cells if not (skip_unchanged and unchanged(*c))]
            n_runs += len(cells)
            for lo in range(0, len(cells), batch_size):
                chunk = cells[lo:lo + batch_size]
                logits = run_patched(view, corrupted, cache, chunk, noise_t, prefix if start else None, start)
                for (_, layer, col), value in zip(chunk, metric_values(logits, metric, target, foil).tolist()):
                    grid[layer, columns.index(col)] = value
        out[comp] = PatchGrid(comp, grid, clean_m, corrupt_m, metric, "activation", tokens, columns, n_runs)
    return out


def attribution_patching(view, clean_ids, corrupted_ids=None, *, target: int, foil: int | None = None,
                         metric: str = "prob", components: Sequence[str] | str = ("resid_pre", "attn_out", "mlp_out"),
                         positions=None, noise: Noise | None = None,
                         tokens: list[str] | None = None) -> dict[str, PatchGrid]:
    """The first-order estimate of :func:`activation_patching`'s grids from one forward and one
    backward pass of the corrupted run (plus the clean run for its activations)."""
    comps, clean, corrupted, noise_t, cache, clean_logits = _setup(
        view, clean_ids, corrupted_ids, noise, components, metric, target, foil)
    cols = check_positions(positions, clean.shape[1])
    names = list(cache)
    deltas = {n: torch.zeros_like(cache[n], requires_grad=True) for n in names}
    with torch.enable_grad(), ExitStack() as stack:
        stack.enter_context(_corrupting(view, noise_t))
        acts = stack.enter_context(view.capture(names))
        # head edits rebuild W_O's output from z, so they go first and attn_out's edit adds to theirs
        first = sorted(names, key=lambda n: not n.endswith("attn_heads"))
        stack.enter_context(view.overwrite({n: (lambda d: lambda t: t + d.to(t.dtype))(deltas[n]) for n in first}))
        logits = _last_logits(view, corrupted.to(view.device))
        m = metric_values(logits, metric, target, foil)[0]
        grads = torch.autograd.grad(m, [deltas[n] for n in names])
    clean_m = float(metric_values(clean_logits, metric, target, foil)[0])
    corrupt_m = float(m.detach())
    out = {}
    L = view.cfg.n_layers
    for comp in comps:
        rows = []
        for l in range(L):
            n = hook_name(l, _POINT[comp])
            effect = ((cache[n] - acts[n]) * grads[names.index(n)]).sum(-1)[0]  # (T,) or (T, H)
            rows.append(effect.sum(0) if comp == "heads" else effect[cols])
        columns = list(range(view.cfg.n_heads)) if comp == "heads" else cols
        grid = (torch.stack(rows) + corrupt_m).detach().cpu()
        out[comp] = PatchGrid(comp, grid, clean_m, corrupt_m, metric, "attribution", tokens, columns)
    return out


def attribution_error(real: dict[str, PatchGrid], approx: dict[str, PatchGrid]) -> dict[str, dict[str, float]]:
    """Per component: max and mean |approx - real| of the recovered fraction, and their correlation."""
    out = {}
    for comp, grid in real.items():
        if comp not in approx:
            continue
        a, b = grid.recovered().flatten().double(), approx[comp].recovered().flatten().double()
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.numel() > 1 else float("nan")
        out[comp] = {"max_abs_error": float((a - b).abs().max()), "mean_abs_error": float((a - b).abs().mean()),
                     "correlation": corr}
    return out
