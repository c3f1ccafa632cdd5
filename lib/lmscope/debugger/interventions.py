"""Value names, coefficients and :class:`Intervention`: what the debugger changes in a model.

An FF block's output is a sum of sub-updates ``m_i * v_i``: ``v_i`` is value vector ``i`` of the
layer, named ``L{layer}D{unit}`` (``L12D34``), and ``m_i`` its coefficient. An intervention sets
one coefficient at every position, in one of three modes (:data:`MODES`):

* ``"off"``: 0;
* ``"on"``: the layer's largest ``|m_j| * ||v_j||`` at the traced position of an un-intervened run
  of the same prompt (the original LM-Debugger's "on"), times ``value`` if one is given;
* ``"set"``: ``value``, any finite number.

>>> Intervention.parse("L12D34", "off").describe()
'L12D34=off'
>>> Intervention(3, 7, "on", 0.25).describe()
'L3D7=on×0.25'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Callable

import torch

Tensor = torch.Tensor

VALUE_NAME = re.compile(r"^\s*L\s*(\d+)\s*D\s*(\d+)\s*$", re.IGNORECASE)
MODES = ("off", "on", "set")


def value_name(layer: int, unit: int) -> str:
    """``(12, 34)`` -> ``'L12D34'``."""
    return f"L{layer}D{unit}"


def parse_value_name(name: str, n_layers: int | None = None, d_ff: int | None = None) -> tuple[int, int]:
    """``'L12D34'`` -> ``(12, 34)``; ValueError if malformed, IndexError if out of range."""
    if not isinstance(name, str):
        raise ValueError(f"A value name is a string like 'L12D34', got {type(name).__name__}.")
    match = VALUE_NAME.match(name)
    if match is None:
        raise ValueError(f"Bad value name {name!r}: write it as L<layer>D<unit>, e.g. 'L12D34'.")
    layer, unit = int(match[1]), int(match[2])
    if n_layers is not None and layer >= n_layers:
        raise IndexError(f"Value {name.strip()}: layer {layer} does not exist (layers 0..{n_layers - 1}).")
    if d_ff is not None and unit >= d_ff:
        raise IndexError(f"Value {name.strip()}: unit {unit} does not exist (units 0..{d_ff - 1}).")
    return layer, unit


def parse_coefficient(coefficient) -> tuple[str, float | None]:
    """``'off'``/``'on'``/a finite number (or its text) -> ``(mode, value)``; ValueError otherwise."""
    if isinstance(coefficient, str):
        text = coefficient.strip().lower()
        if text in ("off", "on"):
            return text, None
        try:
            coefficient = float(text)
        except ValueError:
            raise ValueError(f"Coefficient {coefficient!r} is not 'off', 'on' or a number.") from None
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)):
        raise ValueError(f"Coefficient must be 'off', 'on' or a finite number, got {coefficient!r}.")
    if not math.isfinite(coefficient):
        raise ValueError(f"Coefficient must be a finite number, got {coefficient!r}.")
    return "set", float(coefficient)


@dataclass(frozen=True)
class Intervention:
    """Set the coefficient of value ``L{layer}D{unit}`` at every position.

    ``mode`` is ``"off"`` (0), ``"on"`` (the layer's max ``|m_j| * ||v_j||`` of an
    un-intervened run, times ``value`` if given: ``Intervention(l, u, "on", 0.25)`` is a
    quarter of the original tool's "on") or ``"set"`` (``value``). Disabled ones are ignored.
    """

    layer: int
    unit: int
    mode: str = "on"
    value: float | None = None
    enabled: bool = True

    @property
    def name(self) -> str:
        return value_name(self.layer, self.unit)

    @classmethod
    def parse(cls, name: str, coefficient="on", enabled: bool = True, view=None) -> "Intervention":
        """``Intervention.parse('L12D34', 'off' | 'on' | 3.5)``; checks ranges when ``view`` is given."""
        cfg = getattr(view, "cfg", None)
        layer, unit = parse_value_name(name, cfg and cfg.n_layers, cfg and cfg.d_ff)
        mode, value = parse_coefficient(coefficient)
        return cls(layer, unit, mode, value, enabled)

    def with_coefficient(self, coefficient) -> "Intervention":
        """The same value with a new coefficient (``'off'``, ``'on'`` or a number)."""
        mode, value = parse_coefficient(coefficient)
        return replace(self, mode=mode, value=value)

    def describe(self) -> str:
        """``'L12D34=off'``, ``'L12D34=on×0.25'``, ``'L12D34=3.5 (disabled)'``."""
        what = f"{self.value:g}" if self.mode == "set" else self.mode
        if self.mode == "on" and self.value is not None and self.value != 1:
            what = f"on\u00d7{self.value:g}"
        return f"{self.name}={what}" + ("" if self.enabled else " (disabled)")


def random_values(view, layers: list[int], seed: int, exclude=(), scale: float | None = None) -> list[Intervention]:
    """The matched random control: one random unit in each of ``layers`` (repeats allowed, so
    the control has the chosen values' layers), none of them in ``exclude``, each switched
    "on" (times ``scale``); the same ``seed`` draws the same units."""
    g = torch.Generator().manual_seed(seed)
    taken = {(iv.layer, iv.unit) for iv in exclude}
    out = []
    for layer in layers:
        while True:
            unit = int(torch.randint(view.cfg.d_ff, (1,), generator=g))
            if (layer, unit) not in taken:
                taken.add((layer, unit))
                out.append(Intervention(layer, unit, "on", scale))
                break
    return out


def coefficient_setter(units: Tensor, values: Tensor) -> Callable[[Tensor], Tensor]:
    """An ``ff_coeffs`` edit: coefficients (B, T, d_ff) with ``units`` (n,) set to ``values`` at every
    position; ``values`` is (n,), or (B, n) for one row per prompt of a batch."""

    def edit(coeffs: Tensor) -> Tensor:
        coeffs = coeffs.clone()
        v = values.to(coeffs.device, coeffs.dtype)
        coeffs[..., units.to(coeffs.device)] = v[:, None, :] if v.ndim == 2 else v
        return coeffs

    return edit
