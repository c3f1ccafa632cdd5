"""The LM-Debugger engine: trace how a prediction forms, and intervene on FF value vectors.

After Geva et al., "LM-Debugger" (EMNLP 2022 demo) and "Transformer Feed-Forward
Layers Build Predictions by Promoting Concepts in the Vocabulary Space" (2022).

An FF block's output is a sum of sub-updates ``m_i * v_i`` (``mlp_out = m @ ff_values
+ b``): ``v_i`` is value vector ``i`` (named ``L{layer}D{unit}``), ``m_i`` its
coefficient. A :class:`~lmscope.debugger.records.Trace` of a prompt shows, for every
layer at one position,

* the logit lens (final norm + unembedding, softmax) of the residual stream before
  and after the attention block and before and after the FF block;
* the dominant FF sub-updates, ranked by ``|m_i| * ||v_i||``, each with the top
  tokens of its value vector (``v_i @ W_U``, raw, as in the projection index);
* the dominant attention heads (largest ``||head output||``) with the tokens their
  output promotes (``head_out @ W_U``, raw).

An :class:`~lmscope.debugger.interventions.Intervention` sets the coefficient of one
value at every position (``"off"``, ``"on"`` or a number). It goes through the view's
``ff_coeffs`` overwrite hook, so for gated MLPs the coefficient itself is set, not the
gate or up outputs. Hooks exist only inside :meth:`LMDebugger.intervene` and are always removed.

>>> dbg = LMDebugger(view, tokenizer, index=ProjectionIndex.build(view, k=50))  # doctest: +SKIP
>>> trace = dbg.trace("The capital of France is")                             # doctest: +SKIP
>>> dbg.generate("I feel", 10, [Intervention.parse("L12D34", "on")])          # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import torch

from lmscope.core.hooks import hook_name, hook_names
from lmscope.core.tokens import vocab_texts
from lmscope.core.view import last_logits_kwargs
from lmscope.debugger.dla import direct_logit_attribution
from lmscope.debugger.generation import (
    check_generation_length,
    greedy_tokens,
    greedy_tokens_padded,
    left_pad,
    pad_token_id,
    padded_forward,
)
from lmscope.debugger.interventions import (
    MODES,
    Intervention,
    coefficient_setter,
    parse_coefficient,
    parse_value_name,
    value_name,
)
from lmscope.debugger.records import HeadUpdate, LayerTrace, SubUpdate, Trace, ValueDetails

Tensor = torch.Tensor


class LMDebugger:
    """Trace, value details, interventions and greedy generation for one model.

    ``view`` is a :class:`lmscope.core.view.ModelView`; ``index`` a
    :class:`lmscope.embedding.index.ProjectionIndex` of its values (top tokens are looked up
    there; without one they are computed on demand); ``annotations`` an
    :class:`lmscope.debugger.annotations.Annotations` (names shown in traces).
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
        limit = self.view.cfg.n_ctx
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(
                f"The prompt has {ids.shape[1]} tokens, more than the model's context of {limit}: shorten it."
            )
        return ids.to(self.view.device)

    def encode_batch(self, prompts: Sequence) -> tuple[Tensor, Tensor]:
        """Prompts -> left-padded ``input_ids`` and ``attention_mask``, each (batch, pos)."""
        self._require_causal("Batched runs are for causal language models")
        rows = [self.encode(p)[0] for p in prompts]
        return left_pad(rows, pad_token_id(self.tokenizer), self.view.device)

    def _require_causal(self, need: str) -> None:
        if not self.view.cfg.causal:
            raise ValueError(f"{need}; this is a masked LM ({self.view.cfg.family}).")

    def _check_position(self, ids: Tensor, position: int) -> int:
        """``position`` of ``ids`` (1, pos) as an index 0..pos-1 (negative counts from the end)."""
        n = ids.shape[1]
        if isinstance(position, bool) or not isinstance(position, int) or not -n <= position < n:
            raise IndexError(f"Position {position!r} is outside the prompt's {n} tokens (0..{n - 1}, or -1 for the last).")
        return position % n

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        """Display text of token ids (:func:`lmscope.core.tokens.vocab_texts`)."""
        return [self.texts[int(i)] for i in ids]

    def token_id(self, text: str) -> int:
        """The id of ``text`` if the tokenizer writes it as one token (e.g. ``' Paris'``); ValueError otherwise."""
        if self.tokenizer is None:
            raise ValueError("This debugger has no tokenizer: pass token ids.")
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, not one: pick a single-token word.")
        return ids[0]

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

    def _sub_updates(self, layer: int, units: Tensor, coeffs: Tensor, scores: Tensor) -> list[SubUpdate]:
        """Rows for ``units`` (n,) of ``layer``, with their coefficients and scores (each indexed by unit)."""
        tok_ids, _ = self.value_top(layer, units, self.n_value_tokens)
        return [SubUpdate(layer, int(u), float(coeffs[u]), float(scores[u]), self.token_texts(t),
                          self._annotation(layer, int(u)))
                for u, t in zip(units.tolist(), tok_ids.tolist())]

    # -- interventions -------------------------------------------------------------------
    @torch.no_grad()
    def on_coefficients(self, ids: Tensor, position: int = -1) -> Tensor:
        """Per layer, max_j |m_j| * ||v_j|| at ``position`` of an un-intervened run: (n_layers,)."""
        position = self._check_position(ids, position)
        key = (tuple(ids[0].tolist()), position)
        if key not in self._on_cache:
            names = hook_names("ff_coeffs", range(self.view.cfg.n_layers))
            _, cache = self.view.run_with_cache(ids, names)
            m = torch.stack([cache[n][0, position].float() for n in names])  # (n_layers, d_ff)
            self._on_cache = {key: (m.abs() * self.value_norms).amax(dim=-1)}  # keep one prompt
        return self._on_cache[key]

    @torch.no_grad()
    def on_coefficients_batch(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Per prompt and layer, max_j |m_j| * ||v_j|| at the last position, un-intervened: (batch, n_layers)."""
        names = hook_names("ff_coeffs", range(self.view.cfg.n_layers))
        with self.view.capture(names) as cache:
            padded_forward(self.model, ids, mask, **last_logits_kwargs(self.model))
        m = torch.stack([cache[n][:, -1].float() for n in names], dim=1)  # (batch, n_layers, d_ff)
        return (m.abs() * self.value_norms).amax(dim=-1)

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
        edits = {hook_name(l, "ff_coeffs"): coefficient_setter(units, values) for l, (units, values) in coeffs.items()}
        with self.view.overwrite(edits):
            yield

    # -- trace --------------------------------------------------------------------------
    @torch.no_grad()
    def trace(self, prompt, position: int = -1, interventions: Sequence[Intervention] = (), lens=None) -> Trace:
        """Per-layer logit lens, dominant sub-updates and heads at ``position`` (default: last).

        ``lens``: read the residual through another lens, e.g. a :class:`lmscope.core.tuned_lens.TunedLens`
        (anything with ``lens.read(resid, layer, point)``); None is the logit lens."""
        view, cfg = self.view, self.view.cfg
        ids = self.encode(prompt)
        pos = self._check_position(ids, position)
        L = cfg.n_layers
        names = hook_names(("resid_pre", "resid_mid", "resid_post", "ff_coeffs", "attn_heads"), range(L))
        with self.intervene(interventions, ids, pos):  # the logits are read from the cache below
            _, cache = view.run_with_cache(ids, names, **view.last_logits_only())

        def at(layer, point):
            return cache[hook_name(layer, point)][0, pos]

        # logit lens of resid_pre[0], every resid_mid and resid_post (resid_pre[l] = resid_post[l-1])
        resid = torch.stack([at(0, "resid_pre")] + [at(l, "resid_mid") for l in range(L)]
                            + [at(l, "resid_post") for l in range(L)])  # (2L+1, d_model)
        where = [(0, "resid_pre")] + [(l, p) for p in ("resid_mid", "resid_post") for l in range(L)]
        read = view.unembed(resid) if lens is None else torch.stack([lens.read(r, *w) for r, w in zip(resid, where)])
        # the model's prediction: the final norm and unembedding of the last residual (= its logits)
        final_logits = read[-1] if lens is None else view.unembed(resid[-1])
        lens = read.float().softmax(-1).topk(self.k, dim=-1)
        lens_rows = [list(zip(self.token_texts(i), p)) for i, p in zip(lens.indices.tolist(), lens.values.tolist())]
        pre = [lens_rows[0]] + lens_rows[L + 1 : 2 * L]
        mid, post = lens_rows[1 : L + 1], lens_rows[L + 1 :]

        # FF sub-updates ranked by |m| * ||v||
        m = torch.stack([at(l, "ff_coeffs").float() for l in range(L)])  # (L, d_ff)
        score = m.abs() * self.value_norms
        top_units = score.topk(min(self.n_updates, cfg.d_ff), dim=-1).indices  # (L, n_updates)

        # attention heads ranked by the norm of their output
        heads = torch.stack([at(l, "attn_heads") for l in range(L)])  # (L, H, d_model)
        head_norm = heads.float().norm(dim=-1)  # (L, H)
        top_heads = head_norm.topk(min(self.n_heads, cfg.n_heads), dim=-1).indices  # (L, n_heads)
        chosen = heads[torch.arange(L)[:, None], top_heads]  # (L, n_heads, d_model)
        head_tok = (chosen @ view.W_U.to(chosen.dtype)).float().topk(self.n_value_tokens, dim=-1).indices

        layers = []
        for l in range(L):
            ups = self._sub_updates(l, top_units[l], m[l], score[l])
            hs = [HeadUpdate(l, int(h), float(head_norm[l, h]), self.token_texts(head_tok[l, j].tolist()))
                  for j, h in enumerate(top_heads[l].tolist())]
            layers.append(LayerTrace(l, pre[l], mid[l], mid[l], post[l], ups, hs))
        final = final_logits.float().softmax(-1).topk(self.k)
        prediction = list(zip(self.token_texts(final.indices.tolist()), final.values.tolist()))
        return Trace(self.token_texts(ids[0].tolist()), pos, layers, prediction, list(interventions))

    # -- readings for the case studies ------------------------------------------------------
    @torch.no_grad()
    def lens_probability(self, prompt, token: int, position: int = -1,
                         interventions: Sequence[Intervention] = ()) -> Tensor:
        """Logit-lens probability of ``token`` per layer: (3, n_layers) for resid_pre, resid_mid, resid_post."""
        ids = self.encode(prompt)
        pos = self._check_position(ids, position)
        L = self.view.cfg.n_layers
        points = ("resid_pre", "resid_mid", "resid_post")
        with self.intervene(interventions, ids, pos):
            _, cache = self.view.run_with_cache(ids, hook_names(points, range(L)))
        resid = torch.stack([torch.stack([cache[hook_name(l, p)][0, pos] for l in range(L)]) for p in points])
        return self.view.unembed(resid).float().softmax(-1)[..., token]  # (3, L)

    @torch.no_grad()
    def value_contributions(self, prompt, token: int, position: int = -1, top: int = 10) -> list[SubUpdate]:
        """The sub-updates that push ``token``'s logit most: ``SubUpdate.score`` is the signed exact direct
        effect (causal LMs: :func:`lmscope.debugger.dla.direct_logit_attribution`, norms frozen at this
        position; masked LMs, whose head is not linear: ``m_i * (v_i @ W_U[:, token])``)."""
        ids = self.encode(prompt)
        pos = self._check_position(ids, position)
        L, d_ff = self.view.cfg.n_layers, self.view.cfg.d_ff
        names = hook_names("ff_coeffs", range(L))
        _, cache = self.view.run_with_cache(ids, names)
        m = torch.stack([cache[n][0, pos].float() for n in names])  # (L, d_ff)
        if self.view.cfg.causal:
            contrib = direct_logit_attribution(self.view, ids, target=token, positions=[pos]).values[..., 0].float()
        else:
            u = self.view.W_U.detach()[:, token].float()  # (d_model,)
            contrib = m * torch.stack([self.view.layers[l].ff_values.detach().float() @ u for l in range(L)])
        best = contrib.flatten().topk(min(top, contrib.numel())).indices.tolist()
        return [self._sub_updates(l, torch.tensor([unit]), m[l], contrib[l])[0]
                for l, unit in (divmod(flat, d_ff) for flat in best)]

    @torch.no_grad()
    def contrast(self, prompt_a, prompt_b, position_a: int = -1, position_b: int = -1, top: int = 5) -> dict:
        """Where two contexts of the same word part ways, per layer.

        Returns ``resid_cosine`` (n_layers,) between the residuals after each layer,
        ``coeff_cosine`` (n_layers,) between the FF coefficient vectors, and per layer the
        ``top`` values most dominant in A relative to B (``only_a``) and vice versa
        (``only_b``), ranked by the difference of ``|m_i| * ||v_i||``.
        """
        L = self.view.cfg.n_layers
        reads = []
        for prompt, position in ((prompt_a, position_a), (prompt_b, position_b)):
            ids = self.encode(prompt)
            pos = self._check_position(ids, position)
            _, cache = self.view.run_with_cache(ids, hook_names(("resid_post", "ff_coeffs"), range(L)))
            resid = torch.stack([cache[hook_name(l, "resid_post")][0, pos].float() for l in range(L)])  # (L, d)
            coeffs = torch.stack([cache[hook_name(l, "ff_coeffs")][0, pos].float() for l in range(L)])  # (L, d_ff)
            reads.append((resid, coeffs))
        (resid_a, m_a), (resid_b, m_b) = reads
        cos = torch.nn.functional.cosine_similarity
        diff = (m_a.abs() - m_b.abs()) * self.value_norms  # (L, d_ff)
        only_a = [self._sub_updates(l, diff[l].topk(top).indices, m_a[l], diff[l]) for l in range(L)]
        only_b = [self._sub_updates(l, (-diff[l]).topk(top).indices, m_b[l], -diff[l]) for l in range(L)]
        return {"resid_cosine": cos(resid_a, resid_b, dim=-1), "coeff_cosine": cos(m_a, m_b, dim=-1),
                "only_a": only_a, "only_b": only_b}

    # -- logits and generation -------------------------------------------------------------
    @torch.no_grad()
    def logits(self, prompt, interventions: Sequence[Intervention] = (), position: int = -1) -> Tensor:
        """Logits (pos, d_vocab) of the prompt with the interventions active ('on' read at ``position``)."""
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
        self._require_causal("Generation needs a causal language model")
        ids = self.encode(prompt)
        check_generation_length(n_tokens, ids, self.view.cfg.n_ctx, f"Prompt ({ids.shape[1]} tokens)")
        eos = getattr(self.tokenizer, "eos_token_id", None) if stop_at_eos else None
        with self.intervene(interventions, ids):
            return greedy_tokens(self.model, ids, n_tokens, eos, progress)

    def generate_text(self, prompt, n_tokens: int = 10, interventions: Sequence[Intervention] = (),
                      progress: Callable[[int, int], None] | None = None) -> str:
        """:meth:`generate`, decoded to text (token display text without a tokenizer)."""
        new = self.generate(prompt, n_tokens, interventions, progress)
        if self.tokenizer is None:
            return " ".join(self.token_texts(new))
        return self.tokenizer.decode(new)

    # -- batches of prompts (left-padded) ---------------------------------------------------
    @torch.no_grad()
    def last_logits_batch(self, prompts: Sequence, interventions: Sequence[Intervention] = ()) -> Tensor:
        """Next-token logits after each prompt, (batch, d_vocab), with the interventions active
        ('on' from each prompt's own un-intervened run)."""
        ids, mask = self.encode_batch(prompts)
        on = self.on_coefficients_batch(ids, mask) if any(iv.mode == "on" for iv in interventions) else None
        with self.intervene(interventions, on=on):
            return padded_forward(self.model, ids, mask, **last_logits_kwargs(self.model)).logits[:, -1]

    @torch.no_grad()
    def generate_batch(self, prompts: Sequence, n_tokens: int = 10,
                       interventions: Sequence[Intervention] = ()) -> list[list[int]]:
        """Greedy continuations (token ids) of several prompts at once; equal to :meth:`generate` per prompt
        (up to float rounding), except that every row runs ``n_tokens`` steps (no stop at EOS)."""
        ids, mask = self.encode_batch(prompts)
        check_generation_length(n_tokens, ids, self.view.cfg.n_ctx, "The longest prompt")
        on = self.on_coefficients_batch(ids, mask) if any(iv.mode == "on" for iv in interventions) else None
        with self.intervene(interventions, on=on):
            return greedy_tokens_padded(self.model, ids, mask, n_tokens)
