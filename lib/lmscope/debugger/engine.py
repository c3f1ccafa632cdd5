"""LM-Debugger: trace how a prediction forms, and intervene on FF value vectors.

After Geva et al., "LM-Debugger" (EMNLP 2022 demo) and "Transformer Feed-Forward
Layers Build Predictions by Promoting Concepts in the Vocabulary Space" (2022).

An FF block's output is a sum of sub-updates ``m_i * v_i`` (``mlp_out = m @ ff_values
+ b``): ``v_i`` is value vector ``i`` (named ``L{layer}D{unit}``), ``m_i`` its
coefficient. A :class:`Trace` of a prompt shows, for every layer at one position,

* the logit lens (final norm + unembedding, softmax) of the residual stream before
  and after the attention block and before and after the FF block;
* the dominant FF sub-updates, ranked by ``|m_i| * ||v_i||``, each with the top
  tokens of its value vector (``v_i @ W_U``, raw, as in the projection index);
* the dominant attention heads (largest ``||head output||``) with the tokens their
  output promotes (``head_out @ W_U``, raw).

An :class:`Intervention` sets the coefficient of one value at every position:
``"off"`` (0), ``"on"`` (the layer's largest ``|m_j| * ||v_j||`` at the traced position
of an un-intervened run of the same prompt, as in the original tool) or any finite
number. It goes through the architecture view's ``ff_coeffs`` overwrite hook, so
for gated MLPs the coefficient itself is set, not the gate or up outputs. Hooks
exist only inside :meth:`LMDebugger.intervene` and are always removed.

>>> dbg = LMDebugger(view, tokenizer, index=ProjectionIndex.build(view))   # doctest: +SKIP
>>> trace = dbg.trace("The capital of France is")                           # doctest: +SKIP
>>> dbg.generate("I feel", 10, [Intervention.parse("L12D34", "on")])        # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import torch

Tensor = torch.Tensor

VALUE_NAME = re.compile(r"^\s*L\s*(\d+)\s*D\s*(\d+)\s*$", re.IGNORECASE)
MODES = ("off", "on", "set")


# -- names ---------------------------------------------------------------------------
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
        mode, value = parse_coefficient(coefficient)
        return replace(self, mode=mode, value=value)

    def describe(self) -> str:
        what = f"{self.value:g}" if self.mode == "set" else self.mode
        if self.mode == "on" and self.value is not None and self.value != 1:
            what = f"on\u00d7{self.value:g}"
        return f"{self.name}={what}" + ("" if self.enabled else " (disabled)")


# -- results -------------------------------------------------------------------------
@dataclass
class SubUpdate:
    """One FF sub-update ``m * v`` at the traced position."""

    layer: int
    unit: int
    coeff: float  # m_i
    score: float  # |m_i| * ||v_i||
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
    """Trace of one prompt at one position (see the module docstring)."""

    tokens: list[str]  # the prompt's tokens as text
    position: int
    layers: list[LayerTrace]
    prediction: list[tuple[str, float]]  # the model's own top-k next tokens at ``position``
    interventions: list[Intervention] = field(default_factory=list)

    def table(self) -> list[dict]:
        """Rows (one per layer) of short strings, for display or a DataFrame."""
        def fmt(tops):
            return " ".join(t for t, _ in tops[:3])

        return [
            {
                "layer": lt.layer,
                "before attn": fmt(lt.before_attn),
                "after attn": fmt(lt.after_attn),
                "after FF": fmt(lt.after_ff),
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


# -- vocabulary text -------------------------------------------------------------------
_VOCAB: dict[int, tuple[object, list[str]]] = {}


def decoded_vocab(tokenizer, d_vocab: int) -> list[str]:
    """Every token id decoded on its own, as plain text (cached per tokenizer); ``<id>`` without one."""
    if tokenizer is None:
        return [f"<{i}>" for i in range(d_vocab)]
    cached = _VOCAB.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer and len(cached[1]) >= d_vocab:
        return cached[1]
    n = min(d_vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    texts += [f"<{i}>" for i in range(n, d_vocab)]  # padded embedding rows without a token
    _VOCAB[id(tokenizer)] = (tokenizer, texts)
    return texts


def vocab_texts(tokenizer, d_vocab: int) -> list[str]:
    """Every token id's text for display: spaces shown as '␣', newlines as '\\n'."""
    return [t.replace(" ", "\u2423").replace("\n", "\\n") for t in decoded_vocab(tokenizer, d_vocab)]


def max_context(model) -> int | None:
    """The longest input the model accepts, from its config (None if it does not say)."""
    c = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        n = getattr(c, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


# -- the debugger ----------------------------------------------------------------------
class LMDebugger:
    """Trace, value details, interventions and greedy generation for one model.

    ``index`` is a :class:`lmscope.projection_index.ProjectionIndex` of the values
    (top tokens are looked up there); without one they are computed on demand.
    ``annotations`` is an :class:`lmscope.annotations.Annotations` (names shown in traces).
    """

    def __init__(self, view, tokenizer=None, index=None, annotations=None, k: int = 10,
                 n_updates: int = 10, n_heads: int = 3, n_value_tokens: int = 10):
        self.view = view
        self.model = view.model
        self.tokenizer = tokenizer
        self.index = index
        self.annotations = annotations
        self.k, self.n_updates, self.n_heads, self.n_value_tokens = k, n_updates, n_heads, n_value_tokens
        cfg = view.cfg
        if index is not None and (index.n_layers, index.n_units) != (cfg.n_layers, cfg.d_ff):
            raise ValueError(
                f"The projection index has {index.n_layers} layers x {index.n_units} units, "
                f"the model {cfg.n_layers} x {cfg.d_ff}: build the index of this model."
            )
        with torch.no_grad():
            self.value_norms = torch.stack(
                [view.layers[l].ff_values.detach().float().norm(dim=-1) for l in range(cfg.n_layers)]
            )  # (n_layers, d_ff)
        self.texts = vocab_texts(tokenizer, cfg.d_vocab)
        self._on_cache: dict[tuple, Tensor] = {}

    # -- input ----------------------------------------------------------------------
    def encode(self, prompt) -> Tensor:
        """A prompt (text, or token ids) -> input ids (1, pos); ValueError if empty or too long."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("The prompt is empty: type some text.")
            if self.tokenizer is None:
                raise ValueError("This debugger has no tokenizer: pass token ids instead of text.")
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        else:
            ids = torch.as_tensor(prompt, dtype=torch.long).reshape(1, -1)
            if ids.shape[1] == 0:
                raise ValueError("The prompt is empty: give at least one token.")
        limit = max_context(self.model)
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(
                f"The prompt has {ids.shape[1]} tokens, more than the model's context of {limit}: shorten it."
            )
        return ids.to(self.view.device)

    def _position(self, ids: Tensor, position: int) -> int:
        n = ids.shape[1]
        if isinstance(position, bool) or not isinstance(position, int) or not -n <= position < n:
            raise IndexError(f"Position {position!r} is outside the prompt's {n} tokens (0..{n - 1}, or -1 for the last).")
        return position % n

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        return [self.texts[int(i)] for i in ids]

    # -- value vectors ----------------------------------------------------------------
    def value_top(self, layer: int, units: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k token ids and scores of ``v @ W_U`` for ``units`` (n,) of ``layer``: each (n, k)."""
        if self.index is not None and k <= self.index.k:
            return self.index.ids[layer, units, :k], self.index.scores[layer, units, :k]
        with torch.no_grad():
            v = self.view.layers[layer].ff_values.detach()[units]  # (n, d_model)
            top = (v @ self.view.W_U.detach().to(v.dtype)).float().topk(k, dim=-1)
        return top.indices, top.values

    def resolve_value(self, name_or_pair) -> tuple[int, int]:
        """``'L12D34'`` or ``(12, 34)`` -> ``(layer, unit)``, range-checked."""
        cfg = self.view.cfg
        if isinstance(name_or_pair, str):
            return parse_value_name(name_or_pair, cfg.n_layers, cfg.d_ff)
        layer, unit = name_or_pair
        return parse_value_name(value_name(int(layer), int(unit)), cfg.n_layers, cfg.d_ff)

    def value_details(self, name_or_pair, k: int = 50) -> ValueDetails:
        """Top ``k`` tokens and scores of a value vector (``'L12D34'`` or ``(12, 34)``)."""
        layer, unit = self.resolve_value(name_or_pair)
        if not 1 <= k <= self.view.cfg.d_vocab:
            raise ValueError(f"k={k} must be between 1 and the vocabulary size {self.view.cfg.d_vocab}.")
        ids, scores = self.value_top(layer, torch.tensor([unit]), k)
        return ValueDetails(layer, unit, self.token_texts(ids[0].tolist()), ids[0].tolist(), scores[0].tolist(),
                            float(self.value_norms[layer, unit]), self._annotation(layer, unit))

    def _annotation(self, layer: int, unit: int) -> str | None:
        return None if self.annotations is None else self.annotations.get(value_name(layer, unit))

    # -- interventions -------------------------------------------------------------------
    @torch.no_grad()
    def on_coefficients(self, ids: Tensor, position: int = -1) -> Tensor:
        """Per layer, max_j |m_j| * ||v_j|| at ``position`` of an un-intervened run: (n_layers,)."""
        position = self._position(ids, position)
        key = (tuple(ids[0].tolist()), position)
        if key not in self._on_cache:
            names = [f"blocks.{l}.ff_coeffs" for l in range(self.view.cfg.n_layers)]
            _, cache = self.view.run_with_cache(ids, names)
            m = torch.stack([cache[n][0, position].float() for n in names])  # (n_layers, d_ff)
            self._on_cache = {key: (m.abs() * self.value_norms).amax(dim=-1)}  # keep one prompt
        return self._on_cache[key]

    def coefficients(self, interventions: Sequence[Intervention], ids: Tensor | None = None,
                     position: int = -1, on: Tensor | None = None) -> dict[int, tuple[Tensor, Tensor]]:
        """Enabled interventions -> ``{layer: (units (n,), values)}``.

        'on' needs ``ids`` (its value comes from an un-intervened run) or precomputed ``on``
        values: (n_layers,), or (batch, n_layers) for one value per prompt of a batch, in
        which case ``values`` is (batch, n) instead of (n,).
        """
        out: dict[int, dict[int, Tensor]] = {}
        cfg = self.view.cfg
        for iv in interventions:
            if not iv.enabled:
                continue
            parse_value_name(iv.name, cfg.n_layers, cfg.d_ff)
            if iv.mode == "off":
                value = torch.tensor(0.0)
            elif iv.mode == "on":
                if on is None and ids is None:
                    raise ValueError(f"{iv.name}=on needs the prompt: its value comes from an un-intervened run.")
                on = self.on_coefficients(ids, position) if on is None else on
                value = on[..., iv.layer].float() * (1.0 if iv.value is None else float(iv.value))
            elif iv.mode == "set":
                value = torch.tensor(parse_coefficient(iv.value)[1])
            else:
                raise ValueError(f"Unknown intervention mode {iv.mode!r}: use one of {', '.join(MODES)}.")
            out.setdefault(iv.layer, {})[iv.unit] = value
        batch = on.shape[:-1] if on is not None else torch.Size()
        return {l: (torch.tensor(list(d)), torch.stack([v.float().expand(batch) for v in d.values()], dim=-1))
                for l, d in out.items()}

    @contextmanager
    def intervene(self, interventions: Sequence[Intervention] = (), prompt=None,
                  position: int = -1, on: Tensor | None = None) -> Iterator[None]:
        """Context manager: the model runs with the interventions set at every position."""
        ids = None if prompt is None else (prompt if isinstance(prompt, Tensor) else self.encode(prompt))
        coeffs = self.coefficients(list(interventions), ids, position, on)
        edits = {f"blocks.{l}.ff_coeffs": _setter(units, values) for l, (units, values) in coeffs.items()}
        with self.view.overwrite(edits):
            yield

    # -- batches of prompts (left-padded) ---------------------------------------------------
    def encode_batch(self, prompts: Sequence) -> tuple[Tensor, Tensor]:
        """Prompts -> left-padded ``input_ids`` and ``attention_mask``, each (batch, pos)."""
        if self.view.cfg.family == "bert":
            raise ValueError("Batched runs are for causal language models; this is a masked LM (BERT).")
        rows = [self.encode(p)[0] for p in prompts]
        if not rows:
            raise ValueError("No prompts given.")
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None) or 0
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), int(pad), dtype=torch.long, device=self.view.device)
        mask = torch.zeros((len(rows), T), dtype=torch.long, device=self.view.device)
        for i, r in enumerate(rows):
            ids[i, T - len(r):] = r
            mask[i, T - len(r):] = 1
        return ids, mask

    def _forward(self, ids: Tensor, mask: Tensor, **kwargs):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, pos), real tokens from 0
        if "position_ids" in kwargs:
            positions = kwargs.pop("position_ids")
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)

    @torch.no_grad()
    def on_coefficients_batch(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Per prompt and layer, max_j |m_j| * ||v_j|| at the last position, un-intervened: (batch, n_layers)."""
        names = [f"blocks.{l}.ff_coeffs" for l in range(self.view.cfg.n_layers)]
        with self.view.capture(names) as cache:
            self._forward(ids, mask)
        m = torch.stack([cache[n][:, -1].float() for n in names], dim=1)  # (batch, n_layers, d_ff)
        return (m.abs() * self.value_norms).amax(dim=-1)

    @torch.no_grad()
    def last_logits_batch(self, prompts: Sequence, interventions: Sequence[Intervention] = ()) -> Tensor:
        """Next-token logits after each prompt, (batch, d_vocab), with the interventions active
        ('on' from each prompt's own un-intervened run)."""
        ids, mask = self.encode_batch(prompts)
        on = self.on_coefficients_batch(ids, mask) if any(iv.mode == "on" for iv in interventions) else None
        with self.intervene(interventions, on=on):
            return self._forward(ids, mask).logits[:, -1]

    @torch.no_grad()
    def generate_batch(self, prompts: Sequence, n_tokens: int = 10,
                       interventions: Sequence[Intervention] = ()) -> list[list[int]]:
        """Greedy continuations (token ids) of several prompts at once; equal to :meth:`generate` per prompt
        (up to float rounding), except that every row runs ``n_tokens`` steps (no stop at EOS)."""
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}.")
        ids, mask = self.encode_batch(prompts)
        limit = max_context(self.model)
        if limit is not None and ids.shape[1] + n_tokens > limit:
            raise ValueError(f"The longest prompt plus {n_tokens} new tokens exceeds the context of {limit}.")
        on = self.on_coefficients_batch(ids, mask) if any(iv.mode == "on" for iv in interventions) else None
        cache_arg = _cache_argument(self.model)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        new = []
        with self.intervene(interventions, on=on):
            out = self._forward(ids, mask, position_ids=positions, use_cache=True)
            for step in range(n_tokens):
                nxt = out.logits[:, -1].argmax(-1)  # (batch,)
                new.append(nxt)
                if step == n_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
                past = out.get("cache", None) if cache_arg == "cache" else out.get("past_key_values", None)
                out = self._forward(nxt[:, None], mask, position_ids=positions, use_cache=True, **{cache_arg: past})
        return torch.stack(new, dim=1).tolist()

    # -- trace --------------------------------------------------------------------------
    @torch.no_grad()
    def trace(self, prompt, position: int = -1, interventions: Sequence[Intervention] = ()) -> Trace:
        """Per-layer logit lens, dominant sub-updates and heads at ``position`` (default: last)."""
        view, cfg = self.view, self.view.cfg
        ids = self.encode(prompt)
        pos = self._position(ids, position)
        L = cfg.n_layers
        points = ("resid_pre", "resid_mid", "resid_post", "ff_coeffs", "attn_heads")
        names = [f"blocks.{l}.{p}" for l in range(L) for p in points]
        with self.intervene(interventions, ids, pos):
            logits, cache = view.run_with_cache(ids, names)

        def at(l, p):
            return cache[f"blocks.{l}.{p}"][0, pos]

        # logit lens of resid_pre[0], every resid_mid and resid_post (resid_pre[l] = resid_post[l-1])
        resid = torch.stack([at(0, "resid_pre")] + [at(l, "resid_mid") for l in range(L)]
                            + [at(l, "resid_post") for l in range(L)])  # (2L+1, d_model)
        lens = view.unembed(resid).float().softmax(-1).topk(self.k, dim=-1)
        lens_rows = [list(zip(self.token_texts(i), p)) for i, p in zip(lens.indices.tolist(), lens.values.tolist())]
        pre = [lens_rows[0]] + lens_rows[L + 1 : 2 * L]
        mid, post = lens_rows[1 : L + 1], lens_rows[L + 1 :]

        # FF sub-updates ranked by |m| * ||v||
        m = torch.stack([at(l, "ff_coeffs").float() for l in range(L)])  # (L, d_ff)
        score = m.abs() * self.value_norms
        n_up = min(self.n_updates, cfg.d_ff)
        top_units = score.topk(n_up, dim=-1).indices  # (L, n_up)

        # attention heads ranked by the norm of their output
        heads = torch.stack([at(l, "attn_heads") for l in range(L)])  # (L, H, d_model)
        n_h = min(self.n_heads, cfg.n_heads)
        head_norm = heads.float().norm(dim=-1)  # (L, H)
        top_heads = head_norm.topk(n_h, dim=-1).indices  # (L, n_h)
        chosen = heads[torch.arange(L)[:, None], top_heads]  # (L, n_h, d_model)
        head_tok = (chosen @ view.W_U.to(chosen.dtype)).float().topk(self.n_value_tokens, dim=-1).indices

        layers = []
        for l in range(L):
            units = top_units[l]
            tok_ids, _ = self.value_top(l, units, self.n_value_tokens)
            ups = [
                SubUpdate(l, int(u), float(m[l, u]), float(score[l, u]), self.token_texts(t),
                          self._annotation(l, int(u)))
                for u, t in zip(units.tolist(), tok_ids.tolist())
            ]
            hs = [HeadUpdate(l, int(h), float(head_norm[l, h]), self.token_texts(head_tok[l, j].tolist()))
                  for j, h in enumerate(top_heads[l].tolist())]
            layers.append(LayerTrace(l, pre[l], mid[l], mid[l], post[l], ups, hs))
        final = logits[0, pos].float().softmax(-1).topk(self.k)
        prediction = list(zip(self.token_texts(final.indices.tolist()), final.values.tolist()))
        return Trace(self.token_texts(ids[0].tolist()), pos, layers, prediction, list(interventions))

    # -- readings for the case studies ------------------------------------------------------
    def token_id(self, text: str) -> int:
        """The id of ``text`` if the tokenizer writes it as one token (e.g. ``' Paris'``); ValueError otherwise."""
        if self.tokenizer is None:
            raise ValueError("This debugger has no tokenizer: pass token ids.")
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, not one: pick a single-token word.")
        return ids[0]

    @torch.no_grad()
    def lens_probability(self, prompt, token: int, position: int = -1,
                         interventions: Sequence[Intervention] = ()) -> Tensor:
        """Logit-lens probability of ``token`` per layer: (3, n_layers) for resid_pre, resid_mid, resid_post."""
        ids = self.encode(prompt)
        pos = self._position(ids, position)
        L = self.view.cfg.n_layers
        points = ("resid_pre", "resid_mid", "resid_post")
        with self.intervene(interventions, ids, pos):
            _, cache = self.view.run_with_cache(ids, [f"blocks.{l}.{p}" for p in points for l in range(L)])
        resid = torch.stack([torch.stack([cache[f"blocks.{l}.{p}"][0, pos] for l in range(L)]) for p in points])
        return self.view.unembed(resid).float().softmax(-1)[..., token]  # (3, L)

    @torch.no_grad()
    def value_contributions(self, prompt, token: int, position: int = -1, top: int = 10) -> list[SubUpdate]:
        """The sub-updates that push ``token``'s logit most: ranked by ``m_i * (v_i @ W_U[:, token])``.

        This is the direct effect on the logit before the final norm rescales the residual;
        ``SubUpdate.score`` holds that contribution (signed), ``coeff`` the coefficient.
        """
        ids = self.encode(prompt)
        pos = self._position(ids, position)
        L, d_ff = self.view.cfg.n_layers, self.view.cfg.d_ff
        names = [f"blocks.{l}.ff_coeffs" for l in range(L)]
        _, cache = self.view.run_with_cache(ids, names)
        m = torch.stack([cache[n][0, pos].float() for n in names])  # (L, d_ff)
        u = self.view.W_U.detach()[:, token].float()  # (d_model,)
        direct = torch.stack([self.view.layers[l].ff_values.detach().float() @ u for l in range(L)])  # (L, d_ff)
        contrib = (m * direct).flatten()
        best = contrib.topk(min(top, contrib.numel())).indices.tolist()
        out = []
        for flat in best:
            l, unit = divmod(flat, d_ff)
            tok_ids, _ = self.value_top(l, torch.tensor([unit]), self.n_value_tokens)
            out.append(SubUpdate(l, unit, float(m[l, unit]), float(contrib[flat]), self.token_texts(tok_ids[0].tolist()),
                                 self._annotation(l, unit)))
        return out

    @torch.no_grad()
    def contrast(self, prompt_a, prompt_b, position_a: int = -1, position_b: int = -1, top: int = 5) -> dict:
        """Where two contexts of the same word part ways, per layer.

        Returns ``resid_cosine`` (n_layers,) between the residuals after each layer,
        ``coeff_cosine`` (n_layers,) between the FF coefficient vectors, and per layer the
        ``top`` values most dominant in A relative to B (``only_a``) and vice versa
        (``only_b``), ranked by the difference of ``|m_i| * ||v_i||``.
        """
        L = self.view.cfg.n_layers
        names = [f"blocks.{l}.{p}" for l in range(L) for p in ("resid_post", "ff_coeffs")]
        reads = []
        for prompt, position in ((prompt_a, position_a), (prompt_b, position_b)):
            ids = self.encode(prompt)
            pos = self._position(ids, position)
            _, cache = self.view.run_with_cache(ids, names)
            reads.append({k: v[0, pos].float() for k, v in cache.items()})
        a, b = reads
        cos = torch.nn.functional.cosine_similarity
        resid = torch.stack([cos(a[f"blocks.{l}.resid_post"], b[f"blocks.{l}.resid_post"], dim=0) for l in range(L)])
        coeff = torch.stack([cos(a[f"blocks.{l}.ff_coeffs"], b[f"blocks.{l}.ff_coeffs"], dim=0) for l in range(L)])
        only_a, only_b = [], []
        for l in range(L):
            diff = (a[f"blocks.{l}.ff_coeffs"].abs() - b[f"blocks.{l}.ff_coeffs"].abs()) * self.value_norms[l]
            for sign, dest in ((1, only_a), (-1, only_b)):
                units = (sign * diff).topk(top).indices
                tok_ids, _ = self.value_top(l, units, self.n_value_tokens)
                dest.append([SubUpdate(l, int(u), float(a[f"blocks.{l}.ff_coeffs"][u] if sign > 0 else b[f"blocks.{l}.ff_coeffs"][u]),
                                       float(sign * diff[u]), self.token_texts(t), self._annotation(l, int(u)))
                             for u, t in zip(units.tolist(), tok_ids.tolist())])
        return {"resid_cosine": resid, "coeff_cosine": coeff, "only_a": only_a, "only_b": only_b}

    # -- logits and generation -------------------------------------------------------------
    @torch.no_grad()
    def logits(self, prompt, interventions: Sequence[Intervention] = (), position: int = -1) -> Tensor:
        """Logits (pos, d_vocab) of the prompt with the interventions active."""
        ids = self.encode(prompt)
        with self.intervene(interventions, ids, position):
            return self.model(input_ids=ids).logits[0]

    @torch.no_grad()
    def generate(self, prompt, n_tokens: int = 10, interventions: Sequence[Intervention] = (),
                 progress: Callable[[int, int], None] | None = None, stop_at_eos: bool = True) -> list[int]:
        """Greedy continuation (token ids) of ``prompt`` with the interventions active.

        'on' coefficients come from the un-intervened run of the prompt (last position).
        ``progress(done, total)`` is called after every token.
        """
        if self.view.cfg.family == "bert":
            raise ValueError("Generation needs a causal language model; this is a masked LM (BERT).")
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}.")
        ids = self.encode(prompt)
        limit = max_context(self.model)
        if limit is not None and ids.shape[1] + n_tokens > limit:
            raise ValueError(f"Prompt ({ids.shape[1]} tokens) plus {n_tokens} new tokens exceeds the context of {limit}.")
        eos = getattr(self.tokenizer, "eos_token_id", None) if stop_at_eos else None
        cache_arg = _cache_argument(self.model)
        new: list[int] = []
        with self.intervene(interventions, ids):
            out = self.model(input_ids=ids, use_cache=True)
            for step in range(n_tokens):
                nxt = int(out.logits[0, -1].argmax())
                new.append(nxt)
                if progress is not None:
                    progress(step + 1, n_tokens)
                if nxt == eos or step == n_tokens - 1:
                    break
                past = out.get("cache", None) if cache_arg == "cache" else out.get("past_key_values", None)
                out = self.model(input_ids=torch.tensor([[nxt]], device=ids.device),
                                 use_cache=True, **{cache_arg: past})
        return new

    def generate_text(self, prompt, n_tokens: int = 10, interventions: Sequence[Intervention] = (),
                      progress: Callable[[int, int], None] | None = None) -> str:
        """:meth:`generate`, decoded to text (needs a tokenizer)."""
        new = self.generate(prompt, n_tokens, interventions, progress)
        if self.tokenizer is None:
            return " ".join(self.token_texts(new))
        return self.tokenizer.decode(new)


def _cache_argument(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _setter(units: Tensor, values: Tensor) -> Callable[[Tensor], Tensor]:
    """An ``ff_coeffs`` edit: coefficients (B, T, d_ff) with ``units`` set to ``values`` everywhere."""

    def edit(t: Tensor) -> Tensor:  # values (n,) or, one row per prompt, (B, n)
        t = t.clone()
        v = values.to(t.device, t.dtype)
        t[..., units.to(t.device)] = v[:, None, :] if v.ndim == 2 else v
        return t

    return edit
