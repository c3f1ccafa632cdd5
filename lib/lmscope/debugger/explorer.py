"""Chapter 02's static explorer: the debugger's trace of several prompts, and switching values off.

For each prompt, two precomputed views (:class:`lmscope.static_explorer.StaticExplorer`):

- *trace*: per layer the logit lens before and after the attention block and after the FF
  block (top 3; all top-k with probabilities on hover), the dominant FF sub-updates
  ``m_i v_i`` (ranked by ``|m_i| ||v_i||``, their top tokens on hover) and the largest heads;
- *top values off*: the prediction when the ``n_off`` dominant sub-updates of the whole trace
  are switched off (coefficient 0 at every position), against switching off as many random
  values (seeded): the probability of the original top token in each case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention
from lmscope.static_explorer import StaticExplorer, tip_table, token_list

TRACE, OFF = "trace", "top values off"


@dataclass
class SwitchOff:
    """The prediction of one prompt with its dominant values off, and with random values off."""

    values: list[str]  # names of the values switched off
    token: str  # the original top-1 token
    p_before: float
    p_after: float  # its probability with the dominant values off
    p_random: float  # ... with as many random values off
    after: list[tuple[str, float]]  # top-k with the dominant values off
    random_after: list[tuple[str, float]]


def _lens(row) -> tuple[str, str]:
    tokens, probs = [t for t, _ in row], [p for _, p in row]
    return " ".join(tokens[:3]), token_list(tokens, probs)


def _top(debugger: LMDebugger, probs: torch.Tensor, k: int) -> list[tuple[str, float]]:
    top = probs.topk(k)
    return list(zip(debugger.token_texts(top.indices.tolist()), top.values.tolist()))


@torch.no_grad()
def switch_off(debugger: LMDebugger, prompt: str, trace=None, n_off: int = 10, seed: int = 0) -> SwitchOff:
    """Switch off the ``n_off`` dominant sub-updates of ``prompt``'s trace, and as many random values."""
    if n_off < 1:
        raise ValueError(f"n_off must be at least 1, got {n_off}")
    trace = trace or debugger.trace(prompt)
    updates = sorted((u for lt in trace.layers for u in lt.ff_updates), key=lambda u: -u.score)[:n_off]
    dominant = [Intervention(u.layer, u.unit, "off") for u in updates]
    cfg = debugger.view.cfg
    g = torch.Generator().manual_seed(seed)
    layers = torch.randint(cfg.n_layers, (len(dominant),), generator=g).tolist()
    units = torch.randint(cfg.d_ff, (len(dominant),), generator=g).tolist()
    random = [Intervention(l, u, "off") for l, u in zip(layers, units)]
    token = trace.prediction[0][0]
    base = debugger.logits(prompt)[-1].float().softmax(-1)
    top = int(base.argmax())
    after = debugger.logits(prompt, dominant)[-1].float().softmax(-1)
    control = debugger.logits(prompt, random)[-1].float().softmax(-1)
    return SwitchOff([i.name for i in dominant], token, float(base[top]), float(after[top]), float(control[top]),
                     _top(debugger, after, len(trace.prediction)), _top(debugger, control, len(trace.prediction)))


def trace_panel(trace) -> str:
    """The trace as a table: one row per layer, lens cells and sub-updates with hover details."""
    rows = []
    for lt in trace.layers:
        ups = [(u.name + (f"={u.annotation}" if u.annotation else ""), u) for u in lt.ff_updates[:3]]
        rows.append([
            (f"L{lt.layer}", None), _lens(lt.before_attn), _lens(lt.after_attn), _lens(lt.after_ff),
            (", ".join(f"{name}({u.tokens[0] if u.tokens else ''})" for name, u in ups),
             "; ".join(f"{name} m={u.coeff:.2f} |m||v|={u.score:.2f}: {' '.join(u.tokens[:8])}" for name, u in ups)),
            (", ".join(f"H{h.head}({h.tokens[0] if h.tokens else ''})" for h in lt.heads),
             "; ".join(f"H{h.head} |out|={h.norm:.2f}: {' '.join(h.tokens[:8])}" for h in lt.heads)),
        ])
    tokens, probs = [t for t, _ in trace.prediction], [p for _, p in trace.prediction]
    return (f"<p>prediction after {trace.tokens[trace.position]!r}: {token_list(tokens, probs)}</p>"
            + tip_table(["layer", "before attention", "after attention", "after FF", "top sub-updates", "top heads"],
                        rows))


def switch_off_panel(result: SwitchOff) -> str:
    """Before / after / random control of one :class:`SwitchOff`, as a short table."""
    def line(pred):
        return token_list([t for t, _ in pred[:5]], [p for _, p in pred[:5]])

    rows = [[("dominant values off", "; ".join(result.values)), (f"{result.p_after:.3f}", None),
             (line(result.after), None)],
            [("as many random values off", None), (f"{result.p_random:.3f}", None), (line(result.random_after), None)]]
    return (f"<p>{len(result.values)} dominant sub-updates switched off at every position (hover for their names). "
            f"p({result.token!r}) was {result.p_before:.3f}.</p>"
            + tip_table(["run", f"p({result.token!r})", "top 5 next tokens"], rows))


def debugger_static_explorer(debugger: LMDebugger, prompts: list[str], n_off: int = 10, seed: int = 0) -> StaticExplorer:
    """The chapter's static explorer over ``prompts`` (trace and switch-off per prompt)."""
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    panels = {}
    for prompt in prompts:
        trace = debugger.trace(prompt)
        panels[(prompt, TRACE)] = trace_panel(trace)
        panels[(prompt, OFF)] = switch_off_panel(switch_off(debugger, prompt, trace, n_off, seed))
    return StaticExplorer(
        title=f"LM debugger on {debugger.view.name}: trace and interventions (precomputed)",
        controls={"prompt": list(prompts), "view": [TRACE, OFF]}, panels=panels,
        hint="hover a cell: the lens's top tokens with probabilities, or a sub-update's tokens")
