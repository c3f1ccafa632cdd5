"""The ICL-vs-finetuning metrics, and the results of a study that holds them.

Metrics compare the ICL update (ICL - ZS) with each finetuning update (FT - ZS), per layer:

* SimAOU: cosine of the updates of the L2-normalised attention outputs; baseline: cosine
  of the ICL update with a uniform [0, 1) random vector;
* SimAM_delta: cosine of the updates of the attention scores, mean over heads;
* SimAM (Dai et al.): cos(ICL scores, FT scores), to compare with cos(ICL scores, ZS scores);
* Rec2FTP: |(C_ICL & C_FT) - C_ZS| / |C_FT - C_ZS| over the sets C of examples right.

:class:`SeedResult` holds them for one task and one draw of demonstrations,
:class:`TaskResult` for every seed of one task (:func:`lmscope.icl.runs.run_task` fills both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)


def sim_aou(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """SimAOU: cos(ICL - ZS, FT - ZS) of L2-normalised attention outputs (..., d_model) -> (...)."""
    zs, icl, ft = (F.normalize(x.double(), dim=-1) for x in (zs, icl, ft))
    return _cosine(icl - zs, ft - zs)


def random_sim_aou(zs: Tensor, icl: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Baseline: cos(ICL - ZS, uniform [0, 1) random vector), (..., d_model) -> (...)."""
    update = F.normalize(icl.double(), dim=-1) - F.normalize(zs.double(), dim=-1)
    rand = torch.rand(update.shape, generator=generator, dtype=torch.float64)
    return _cosine(update, rand)


def sim_am_delta(zs: Tensor, icl: Tensor, ft: Tensor) -> Tensor:
    """SimAM_delta: cos(ICL - ZS, FT - ZS) of scores (..., n_heads, n_input), mean over heads -> (...)."""
    return _cosine(icl - zs, ft - zs).mean(-1)


def sim_am(a: Tensor, b: Tensor) -> Tensor:
    """Dai et al.'s SimAM: cos of two score maps (..., n_heads, n_input), mean over heads -> (...)."""
    return _cosine(a, b).mean(-1)


def rec2ftp(correct_zs: Sequence[bool], correct_icl: Sequence[bool], correct_ft: Sequence[bool]) -> float:
    """|(C_ICL & C_FT) - C_ZS| / |C_FT - C_ZS|; nan when finetuning fixes nothing."""
    zs, icl, ft = (np.asarray(x, dtype=bool) for x in (correct_zs, correct_icl, correct_ft))
    denom = (ft & ~zs).sum()
    return float((icl & ft & ~zs).sum() / denom) if denom else float("nan")


# -- results -------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """One task, one seed (one draw of demonstrations). Arrays are (n_examples, n_layers)."""

    task: str
    seed: int
    k: int
    lr: float
    correct: dict[str, np.ndarray]  # run -> (n_examples,) bool
    sim_aou: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (n_ex, n_layers)
    sim_am_delta: dict[str, np.ndarray] = field(default_factory=dict)
    sim_am: dict[str, np.ndarray] = field(default_factory=dict)  # 'gd', 'lcgd', and 'zs' = cos(ICL, ZS)
    random_sim_aou: np.ndarray | None = None  # (n_ex, n_layers)
    losses: dict[str, list[float]] = field(default_factory=dict)  # method -> loss per SGD step
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why
    seconds: dict[str, float] = field(default_factory=dict)
    update_norm: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (n_layers,) |dW| per layer
    attn_change: dict[str, np.ndarray] = field(default_factory=dict)  # run -> (n_ex, n_layers) |attn - attn_ZS|

    def accuracy(self, run: str) -> float:
        c = self.correct.get(run)
        return float("nan") if c is None else float(c.mean())

    def rec2ftp(self, method: str) -> float:
        if method not in self.correct:
            return float("nan")
        return rec2ftp(self.correct["zs"], self.correct["icl"], self.correct[method])

    def has_metric(self, metric: str, method: str) -> bool:
        """Whether ``metric`` (a field name, or ``"random_sim_aou"``, which has no method) was recorded."""
        return metric == "random_sim_aou" and self.random_sim_aou is not None or method in getattr(self, metric, {})

    def metric_values(self, metric: str, method: str) -> np.ndarray:
        """The (n_examples, n_layers) values of ``metric`` for ``method``."""
        return self.random_sim_aou if metric == "random_sim_aou" else getattr(self, metric)[method]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), float("nan"))


@dataclass
class TaskResult:
    """Every seed of one task; statistics are mean and std over seeds."""

    task: str
    k: int
    seeds: list[SeedResult]
    n_examples: int

    def layer_curve(self, metric: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over seeds of the per-layer metric (each seed: mean over examples), (n_layers,) each."""
        per_seed = [s.metric_values(metric, method).mean(0) for s in self.seeds if s.has_metric(metric, method)]
        if not per_seed:
            return np.full(0, np.nan), np.full(0, np.nan)
        a = np.stack(per_seed)
        return a.mean(0), a.std(0)

    def summary(self, metric: str, method: str) -> tuple[float, float]:
        """Mean and std over seeds of the metric averaged over examples and layers."""
        return _mean_std([float(s.metric_values(metric, method).mean()) for s in self.seeds
                          if s.has_metric(metric, method)])

    def accuracy(self, run: str) -> tuple[float, float]:
        return _mean_std([s.accuracy(run) for s in self.seeds if run in s.correct])

    def size_curve(self, what: str, run: str) -> np.ndarray:
        """Mean over seeds (and examples) per layer of ``"update_norm"`` (a method's |dW|) or
        ``"attn_change"`` (a run's |attn_out - attn_out(ZS)|), (n_layers,); empty when not recorded."""
        if what not in ("update_norm", "attn_change"):
            raise ValueError(f"what must be 'update_norm' or 'attn_change', got {what!r}.")
        per_seed = [np.asarray(getattr(s, what)[run]).reshape(-1, np.shape(getattr(s, what)[run])[-1]).mean(0)
                    for s in self.seeds if run in getattr(s, what)]
        return np.stack(per_seed).mean(0) if per_seed else np.full(0, np.nan)

    def rec2ftp(self, method: str) -> tuple[float, float]:
        return _mean_std([v for v in (s.rec2ftp(method) for s in self.seeds) if not math.isnan(v)])

    @property
    def skipped(self) -> list[str]:
        return [f"seed {s.seed} {m.upper()}: {why}" for s in self.seeds for m, why in s.skipped.items()]
