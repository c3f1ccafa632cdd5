"""What the debugger returns: a :class:`Trace` of one prompt (per layer a :class:`LayerTrace` with
its :class:`SubUpdate` and :class:`HeadUpdate` rows) and the :class:`ValueDetails` of one value.

Token lists hold display text (:mod:`lmscope.core.tokens`: a space shows as ``␣``); logit-lens
rows are ``[(text, probability)]``, best first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope.debugger.interventions import Intervention, value_name


@dataclass
class SubUpdate:
    """One FF sub-update ``m * v`` at the traced position."""

    layer: int
    unit: int
    coeff: float  # m_i
    score: float  # |m_i| * ||v_i|| (or, from value_contributions, the signed logit contribution)
    tokens: list[str]  # top tokens of v_i @ W_U
    annotation: str | None = None

    @property
    def name(self) -> str:
        return value_name(self.layer, self.unit)


@dataclass
class HeadUpdate:
    """One attention head's output at the traced position, read as tokens."""

    layer: int
    head: int
    norm: float  # ||head output||
    tokens: list[str]  # top tokens of head_out @ W_U


@dataclass
class LayerTrace:
    """Logit-lens top tokens ``[(text, prob)]`` around each block of one layer, and its top updates."""

    layer: int
    before_attn: list[tuple[str, float]]
    after_attn: list[tuple[str, float]]
    before_ff: list[tuple[str, float]]
    after_ff: list[tuple[str, float]]
    ff_updates: list[SubUpdate]
    heads: list[HeadUpdate]


@dataclass
class Trace:
    """Trace of one prompt at one position (see :meth:`lmscope.debugger.engine.LMDebugger.trace`)."""

    tokens: list[str]  # the prompt's tokens as text
    position: int
    layers: list[LayerTrace]
    prediction: list[tuple[str, float]]  # the model's own top-k next tokens at ``position``
    interventions: list[Intervention] = field(default_factory=list)

    def table(self) -> list[dict]:
        """Rows (one per layer) of short strings, for display or a DataFrame."""
        def first_three(tops):
            return " ".join(t for t, _ in tops[:3])

        return [
            {
                "layer": lt.layer,
                "before attn": first_three(lt.before_attn),
                "after attn": first_three(lt.after_attn),
                "after FF": first_three(lt.after_ff),
                "top sub-updates": ", ".join(
                    f"{u.name}{'=' + u.annotation if u.annotation else ''}({u.tokens[0] if u.tokens else ''})"
                    for u in lt.ff_updates[:3]
                ),
                "top heads": ", ".join(f"H{h.head}({h.tokens[0] if h.tokens else ''})" for h in lt.heads),
            }
            for lt in self.layers
        ]


@dataclass
class ValueDetails:
    """The top tokens of one value vector ``v @ W_U`` and their scores (logit contributions)."""

    layer: int
    unit: int
    tokens: list[str]
    ids: list[int]
    scores: list[float]
    norm: float  # ||v||
    annotation: str | None = None

    @property
    def name(self) -> str:
        return value_name(self.layer, self.unit)
