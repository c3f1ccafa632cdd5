"""The tuned lens (Belrose et al. 2023): one learned affine map per layer before the final norm and unembedding.

The logit lens reads the residual stream ``h`` at any depth with the model's own read-out,
``unembed(h)``. Early layers are not written in the final layer's basis, so that read-out can be
worse than uniform. The tuned lens adds one *translator* per read point,

    tuned_l(h) = unembed(h + A_l h + b_l)        A_l (d_model, d_model), b_l (d_model,),

trained to minimise ``KL(final || tuned_l)``: the model's own next-token distribution at the same
position is the target. ``A_l = 0, b_l = 0`` is the logit lens exactly. The KL steps follow the
authors' code (AlignmentResearch/tuned-lens ``train_loop``): SGD with Nesterov momentum 0.9, learning
rate ``(1 - momentum) * lr`` with ``lr = 1``, weight decay 1e-3 (which pulls ``A_l`` toward 0, the
identity map), linear decay to zero, gradient norm clipped to 1. They start at the identity and take
250 steps of 2**18 tokens on GPUs. On a CPU one such step is out of reach (each read point costs a
d_model x d_vocab product forward and backward per token), so by default each translator starts at
the ridge least-squares map from its read point to the last layer's residual (closed form, forward
passes only); KL steps refine it when asked for (``steps``; :class:`TunedLensConfig`; ``init="identity"``
with many steps is theirs).

Read points: the embeddings and every layer's ``resid_post``. Translator ``i`` reads ``resid_pre`` of layer ``i``
(``i = 0``: the embeddings; ``resid_pre[i] = resid_post[i - 1]``); the last layer's ``resid_post``
is the model's output, so its translator stays the identity and is never trained (as in the
authors' code). ``resid_mid`` has no translator of its own: it is read with the translator of
``resid_pre`` of the same layer (an approximation, said where it is shown).

>>> lens = load_or_train_tuned_lens(view, tokenizer)   # doctest: +SKIP
>>> logits = lens(resid, layer=3)                      # (..., d_vocab), differentiable in resid

Both lenses share one interface (:class:`LogitLens` is the identity case): ``lens(resid, layer)``
reads ``resid_post`` of ``layer``; ``lens.read(resid, layer, point)`` reads any residual point;
:mod:`lmscope.core.lens_stats` scores them.
A trained lens is frozen (``requires_grad=False``): used as a read-out inside finetuning it passes
gradients to ``resid`` (and to the model) but is itself never trained by anyone else.
Trained lenses are cached as safetensors under
``cache_dir()/tuned_lens/<view.name>-<weights hash>/lens-<config hash>.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from lmscope.core.hooks import hook_name
from lmscope.core.lens_stats import check_tokens, kl_to_final
from lmscope.core.models import cache_dir, save_safetensors

Tensor = torch.Tensor
FORMAT_VERSION = "1"
READ_POINTS = ("resid_pre", "resid_mid", "resid_post")
#: Chapter 00's run sizes (:func:`lmscope.core.profiles.settings`): the training recipe and the held-out
#: 64-token blocks the lenses are compared on.
PROFILES = {
    "quick": {"fit_sequences": 8, "steps": 0, "eval_blocks": 1},
    "full": {"fit_sequences": 32, "steps": 0, "eval_blocks": 8},  # the default lens, which chapter 04 reads
}


@dataclass(frozen=True)
class TunedLensConfig:
    """How a tuned lens is trained; the defaults take about 3 CPU-minutes for SmolLM2-135M (benchmarks/tuned_lens.py).

    ``init="regression"`` (our departure, for a CPU budget): each translator starts at the ridge
    least-squares affine map from its read point to the last layer's ``resid_post`` on
    ``fit_sequences * seq_len`` tokens (position 0 left out: its activations are orders of magnitude
    larger and would dominate the fit), then ``steps`` SGD steps on the KL objective refine it (none by default).
    ``init="identity"`` with many steps is the authors' recipe.
    """

    init: str = "regression"  # "regression" or "identity" (the authors')
    fit_sequences: int = 32  # sequences for the least-squares start
    ridge: float = 1e-2  # ridge strength, relative to the mean diagonal of the Gram matrix
    # KL optimizer steps (the authors: 250 steps of 2**18 tokens, on GPUs). Off by default: on SmolLM2, 4 steps
    # took 10 more minutes on a shared 2-core CPU and lowered the held-out KL from 1.77 to 1.69 nats
    steps: int = 0
    batch: int = 2  # sequences per KL step
    seq_len: int = 64  # tokens per sequence (the authors use 2048-token chunks)
    lr: float = 1.0  # SGD learning rate before the (1 - momentum) scaling, as in the authors' code
    momentum: float = 0.9
    weight_decay: float = 1e-3
    clip: float = 1.0  # gradient-norm clip
    seed: int = 0
    # training text: Shakespeare plays NOT in lmscope.data.shakespeare.DEFAULT_PLAYS (the held-out ones)
    plays: tuple[str, ...] = ("romeo-and-juliet", "julius-caesar", "the-tempest", "twelfth-night",
                              "richard-iii", "as-you-like-it")

    def __post_init__(self):
        if self.init not in ("regression", "identity"):
            raise ValueError(f"init must be 'regression' or 'identity', not {self.init!r}.")
        for name in ("fit_sequences", "steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}.")
        for name in ("batch", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}.")

    def digest(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=6).hexdigest()


@dataclass
class TrainLog:
    """What training did: mean KL per step over the trained read points, and the wall time."""

    loss: list[float] = field(default_factory=list)  # (steps,) nats per token, averaged over read points
    seconds: float = 0.0  # all of training
    fit_seconds: float = 0.0  # the least-squares start
    tokens_per_step: int = 0


def _check_layer(view, layer: int) -> int:
    n = view.cfg.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
        raise IndexError(f"Layer {layer!r} does not exist: this model has layers 0..{n - 1}.")
    return layer % n


def _translator_index(view, layer: int, point: str) -> int:
    """Index of the translator that reads ``point`` of ``layer`` (0 = embeddings, n_layers = output)."""
    layer = _check_layer(view, layer)
    if point not in READ_POINTS:
        raise ValueError(f"A lens reads residual points only: point must be one of {READ_POINTS}, not {point!r}.")
    return layer + 1 if point == "resid_post" else layer


class LogitLens:
    """The logit lens behind the lens interface: ``unembed(resid)`` at every layer and point."""

    kind = "logit"

    def __init__(self, view):
        self.view = view

    def read(self, resid: Tensor, layer: int, point: str = "resid_post") -> Tensor:
        """Logits (..., d_vocab) of residual vectors ``resid`` (..., d_model) taken at ``point`` of ``layer``."""
        _translator_index(self.view, layer, point)
        return self.view.unembed(resid)

    def __call__(self, resid: Tensor, layer: int) -> Tensor:
        return self.read(resid, layer, "resid_post")


class TunedLens(nn.Module):
    """One affine translator per read point: ``weight`` (n_layers + 1, d, d), ``bias`` (n_layers + 1, d).

    Index ``i`` reads ``resid_pre`` of layer ``i``; index ``n_layers`` is the output (identity, never
    trained). The model is held as a plain attribute, not a submodule: ``lens.parameters()`` are the
    translators only.
    """

    kind = "tuned"

    def __init__(self, view, config: TunedLensConfig | None = None):
        super().__init__()
        self.view = view
        self.config = config or TunedLensConfig()
        n, d = view.cfg.n_layers + 1, view.cfg.d_model
        dtype, device = view.W_U.dtype, view.device
        self.weight = nn.Parameter(torch.zeros(n, d, d, dtype=dtype, device=device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n, d, dtype=dtype, device=device), requires_grad=False)
        self.log = TrainLog()

    # -- reading ---------------------------------------------------------------------------
    def translate(self, resid: Tensor, index: int) -> Tensor:
        """``h + A_i h + b_i`` for translator ``index``: (..., d_model) -> (..., d_model)."""
        return resid + resid @ self.weight[index].T + self.bias[index]

    def read(self, resid: Tensor, layer: int, point: str = "resid_post") -> Tensor:
        """Logits (..., d_vocab) of ``resid`` (..., d_model) taken at ``point`` of ``layer``; differentiable."""
        return self.view.unembed(self.translate(resid, _translator_index(self.view, layer, point)))

    def forward(self, resid: Tensor, layer: int) -> Tensor:
        """Logits (..., d_vocab) of ``resid_post`` of ``layer``."""
        return self.read(resid, layer, "resid_post")

    # -- training ----------------------------------------------------------------------------
    @classmethod
    def trained(cls, view, tokenizer=None, config: TunedLensConfig | None = None, *,
                 tokens: Tensor | None = None, verbose: bool = False) -> "TunedLens":
        """Train a tuned lens for ``view``: on ``config.plays`` (needs ``tokenizer``) or on ``tokens`` (n, T).

        Returns the lens, frozen, with ``lens.log`` (per-step KL, seconds). The model is not changed.
        """
        config = config or TunedLensConfig()
        lens = cls(view, config)
        if tokens is None:
            if tokenizer is None:
                raise ValueError("TunedLens.trained needs a tokenizer (to read config.plays) or tokens=(n, T) ids.")
            tokens = training_tokens(tokenizer, config)
        tokens = check_tokens(tokens, config.batch)
        start = time.perf_counter()
        if config.init == "regression" and config.fit_sequences > 0:
            lens._fit_regression(tokens[: config.fit_sequences])
        fit_seconds = time.perf_counter() - start
        lens._fit_kl(tokens, verbose)
        lens.log.fit_seconds, lens.log.seconds = fit_seconds, time.perf_counter() - start
        return lens

    @torch.no_grad()
    def _fit_regression(self, tokens: Tensor, batch: int = 8) -> None:
        """Each translator := ridge least squares from its read point to the last ``resid_post`` (positions >= 1)."""
        view, cfg = self.view, self.config
        L, d = view.cfg.n_layers, view.cfg.d_model
        names = [hook_name(l, "resid_pre") for l in range(L)] + [hook_name(L - 1, "resid_post")]
        gram = torch.zeros(L, d + 1, d + 1, dtype=torch.float64)  # sum over tokens of [x, 1][x, 1]^T
        cross = torch.zeros(L, d + 1, d, dtype=torch.float64)  # sum of [x, 1] y^T, y = last resid_post
        for start in range(0, tokens.shape[0], batch):
            _, cache = view.run_with_cache(tokens[start : start + batch], names)
            y = cache[names[-1]][:, 1:].reshape(-1, d).double().cpu()  # (n, d)
            for i in range(L):
                x = cache[names[i]][:, 1:].reshape(-1, d).double().cpu()
                x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # (n, d + 1)
                gram[i] += x1.T @ x1
                cross[i] += x1.T @ y
        eye = torch.eye(d + 1, dtype=torch.float64)
        for i in range(L):
            lam = cfg.ridge * gram[i].diagonal().mean()
            solution = torch.linalg.solve(gram[i] + lam * eye, cross[i])  # (d + 1, d): y ~ x M^T + b
            self.weight[i] = (solution[:d].T - eye[:d, :d]).to(self.weight)
            self.bias[i] = solution[d].to(self.bias)

    def _fit_kl(self, tokens: Tensor, verbose: bool) -> None:
        """``config.steps`` SGD steps on ``KL(final || lens)``, summed over the read points (the authors' loop)."""
        view, cfg = self.view, self.config
        self.log = TrainLog(tokens_per_step=cfg.batch * cfg.seq_len)
        if cfg.steps == 0:
            return
        L = view.cfg.n_layers
        names = [hook_name(l, "resid_pre") for l in range(L)]  # translator i reads resid_pre[i]
        gen = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(tokens.shape[0], generator=gen)
        params = [self.weight, self.bias]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=cfg.lr * (1 - cfg.momentum), momentum=cfg.momentum,
                              nesterov=True, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / cfg.steps))
        start = time.perf_counter()
        try:
            with _model_frozen(view.model):
                for step in range(cfg.steps):
                    rows = order[(torch.arange(cfg.batch) + step * cfg.batch) % len(order)]
                    batch = tokens[rows].to(view.device)  # (batch, seq_len)
                    with torch.no_grad():
                        logits, cache = view.run_with_cache(batch, names)
                    target = logits.float().log_softmax(-1)  # (batch, seq_len, d_vocab)
                    opt.zero_grad(set_to_none=False)
                    total = 0.0
                    for i, name in enumerate(names):
                        logp = view.unembed(self.translate(cache[name], i)).float().log_softmax(-1)
                        loss = kl_to_final(target, logp).mean()
                        loss.backward()
                        total += loss.item()
                    with torch.no_grad():  # the output translator stays the identity
                        self.weight.grad[L].zero_()
                        self.bias.grad[L].zero_()
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                    opt.step()
                    sched.step()
                    with torch.no_grad():  # weight decay touches the output translator too: undo
                        self.weight[L].zero_()
                        self.bias[L].zero_()
                    self.log.loss.append(total / L)  # KL before this step's update
                    if verbose and (step % 25 == 0 or step == cfg.steps - 1):
                        print(f"step {step:4d}  mean KL {total / L:.3f} nats  {time.perf_counter() - start:.0f}s")
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the translators (and config, model name, weights hash) as safetensors, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "model_name": self.view.name,
                "fingerprint": model_fingerprint(self.view), "config": json.dumps(asdict(self.config)),
                "log": json.dumps(asdict(self.log))}
        tensors = {"weight": self.weight.detach().cpu().contiguous(), "bias": self.bias.detach().cpu().contiguous()}
        return save_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, view, path: str | Path) -> "TunedLens":
        """Read a lens written by :meth:`save`; ValueError if it was trained for other weights or shapes."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No tuned lens at {path}; train one with load_or_train_tuned_lens(view, tokenizer).")
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("fingerprint") != model_fingerprint(view):
            raise ValueError(f"The tuned lens at {path} was trained for other weights "
                             f"({meta.get('model_name')!r}); train one for this model.")
        config = TunedLensConfig(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in json.loads(meta["config"]).items()})
        lens = cls(view, config)
        want = tuple(lens.weight.shape), tuple(lens.bias.shape)
        got = tuple(tensors["weight"].shape), tuple(tensors["bias"].shape)
        if want != got:
            raise ValueError(f"The tuned lens at {path} has shapes {got}, this model needs {want}.")
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            lens.bias.copy_(tensors["bias"])
        lens.log = TrainLog(**json.loads(meta.get("log", "{}")))
        return lens


def training_tokens(tokenizer, config: TunedLensConfig | None = None) -> Tensor:
    """Non-overlapping blocks (n, seq_len) of the training plays, enough for ``steps * batch`` rows if the text allows."""
    from lmscope.data.shakespeare import heldout_text

    config = config or TunedLensConfig()
    ids = tokenizer(heldout_text(config.plays), return_tensors="pt").input_ids[0]
    n = min(ids.numel() // config.seq_len, max(config.steps * config.batch, config.fit_sequences))
    if n < config.batch:
        raise ValueError(f"The plays {config.plays} give {ids.numel()} tokens: too few for batch * seq_len.")
    return ids[: n * config.seq_len].view(n, config.seq_len)


@contextmanager
def _model_frozen(model: nn.Module):
    """No model parameter collects gradients inside; the flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def model_fingerprint(view) -> str:
    """A hash of every parameter of the model (names, shapes, values): a lens fits one set of weights."""
    h = hashlib.blake2b(digest_size=10)
    for name, p in view.model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tuned_lens_path(view, config: TunedLensConfig | None = None) -> Path:
    """``cache_dir()/tuned_lens/<view.name>-<weights hash>/lens-<config hash>.safetensors``."""
    config = config or TunedLensConfig()
    return cache_dir() / "tuned_lens" / f"{view.name}-{model_fingerprint(view)}" / f"lens-{config.digest()}.safetensors"


def load_or_train_tuned_lens(view, tokenizer, config: TunedLensConfig | None = None, *,
                             verbose: bool = False, **overrides) -> TunedLens:
    """The cached tuned lens of ``view`` for ``config`` (fields can be given as keywords), training it once."""
    config = config or TunedLensConfig()
    if overrides:
        config = TunedLensConfig(**{**asdict(config), **overrides})
    path = tuned_lens_path(view, config)
    if path.exists():
        return TunedLens.load(view, path)
    lens = TunedLens.trained(view, tokenizer, config, verbose=verbose)
    lens.save(path)
    return lens
