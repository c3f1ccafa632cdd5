"""A synthetic ListOps task (Nangia & Bowman 2018; Long Range Arena) and a tiny classifier for it.

Expressions nest the operators MAX, MIN, MED (median) and SM (sum mod 10) over
digits 0-9, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` = 9. The answer is one of ten
classes, so a model must track nesting over long distances.

:class:`ListOpsModel` is a small pre-norm transformer encoder whose attention
is either exact (``topk=None``, SDPA) or :func:`lmscope.topk.attention.topk_attention`;
:func:`vanilla_vs_topk` trains both on one split (chapter 03), or reads their saved or cached curves.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmscope.core.models import cache_dir
from lmscope.topk.attention import topk_attention
from lmscope.topk.bench import find_benchmark

OPS = ("MAX", "MIN", "MED", "SM")
#: Token vocabulary: padding, classification token, digits, operators, closing bracket.
VOCAB = ["<pad>", "<cls>"] + [str(d) for d in range(10)] + [f"[{op}" for op in OPS] + ["]"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD, CLS = 0, 1


def _apply(op: str, args: list[int]) -> int:
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        return sorted(args)[len(args) // 2]
    return sum(args) % 10


def random_expression(rng: random.Random, max_depth: int, max_args: int) -> tuple[list[str], int]:
    """One random expression as tokens, with its value."""
    if max_depth == 0 or rng.random() < 0.25:
        d = rng.randrange(10)
        return [str(d)], d
    op = rng.choice(OPS)
    tokens, values = [f"[{op}"], []
    for _ in range(rng.randint(2, max_args)):
        t, v = random_expression(rng, max_depth - 1, max_args)
        tokens += t
        values.append(v)
    return tokens + ["]"], _apply(op, values)


def evaluate(tokens: list[str]) -> int:
    """Value of a token list (a stack machine; checks :func:`random_expression`)."""
    stack: list[list] = []
    value = None
    for t in tokens:
        if t.startswith("["):
            stack.append([t[1:]])
        elif t == "]":
            op, *args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1].append(value)
        elif stack:
            stack[-1].append(int(t))
        else:
            value = int(t)
    return value


@dataclass
class ListOpsData:
    tokens: torch.Tensor  # (N, T) ids, CLS first, PAD after the expression
    labels: torch.Tensor  # (N,) values 0..9


def make_dataset(n: int, max_len: int = 128, max_depth: int = 4, max_args: int = 5, seed: int = 0) -> ListOpsData:
    """``n`` expressions of at most ``max_len - 1`` tokens (longer ones are redrawn), with labels balanced-ish."""
    if n <= 0 or max_len < 4:
        raise ValueError("n must be positive and max_len at least 4")
    rng = random.Random(seed)
    ids = torch.full((n, max_len), PAD, dtype=torch.long)
    labels = torch.empty(n, dtype=torch.long)
    i = 0
    while i < n:
        toks, val = random_expression(rng, max_depth, max_args)
        if len(toks) < 3 or len(toks) > max_len - 1:
            continue
        ids[i, 0] = CLS
        ids[i, 1 : len(toks) + 1] = torch.tensor([TOKEN_ID[t] for t in toks])
        labels[i] = val
        i += 1
    return ListOpsData(ids, labels)


class _Block(nn.Module):
    def __init__(self, d: int, n_heads: int, topk: int | None):
        super().__init__()
        self.n_heads, self.topk = n_heads, topk
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        mask = key_mask.view(B, 1, 1, T)  # (B, 1, 1, T) True = real token
        if self.topk is None:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            z = topk_attention(q, k, v, self.topk, mask=mask)
        x = x + self.out(z.transpose(1, 2).reshape(B, T, d))
        return x + self.ff(self.ln2(x))


class ListOpsModel(nn.Module):
    """Bidirectional encoder; classifies from the CLS position. ``topk=None``: exact attention."""

    def __init__(self, max_len: int = 128, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, topk: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, topk) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, 10)."""
        key_mask = tokens != PAD
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, key_mask)
        return self.head(self.norm(x[:, 0]))


def train(
    model: ListOpsModel,
    train_data: ListOpsData,
    test_data: ListOpsData,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    eval_every: int = 50,
    seed: int = 0,
) -> list[dict]:
    """AdamW training; returns [{'step', 'loss', 'test_acc'}] every ``eval_every`` steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)  # linear warm-up, then cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    history = []
    for step in range(1, steps + 1):
        model.train()
        idx = torch.randint(0, len(train_data.labels), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(train_data.tokens[idx]), train_data.labels[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "test_acc": accuracy(model, test_data)})
    return history


@torch.no_grad()
def accuracy(model: nn.Module, data: ListOpsData, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data.labels), batch_size):
        correct += (model(data.tokens[i : i + batch_size]).argmax(-1) == data.labels[i : i + batch_size]).sum().item()
    return correct / len(data.labels)


@dataclass
class ListOpsRuns:
    """Training curves of the vanilla and the top-k classifier on one ListOps split, as the chapter shows them."""

    curves: dict[str, list[dict]]  # label ("vanilla", "top-K") -> train's history
    seconds: dict[str, float]  # label -> training seconds of the run that produced the curve
    majority: float  # test accuracy of always answering the commonest class
    source: str  # "trained", "cache" or "saved run <file name>"


def runs_key(sizes: dict) -> str:
    """Key of a pair of runs: the sizes, the training code of this module and the top-k attention module."""
    code = [inspect.getsource(f) for f in (_apply, random_expression, evaluate, make_dataset, _Block, ListOpsModel,
                                            train, accuracy)]
    text = json.dumps(sizes, sort_keys=True) + "".join(code) + Path(inspect.getsourcefile(topk_attention)).read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def vanilla_vs_topk(max_len: int, n_train: int, n_test: int, steps: int, topk: int, saved: bool = True,
                    cache: bool = True, folders: list[Path] | None = None) -> ListOpsRuns:
    """Train :class:`ListOpsModel` with exact and with top-``topk`` attention on the same data (seed 0).

    The curves depend only on these sizes and the training code (:func:`runs_key`), not on any
    language model. ``saved``: read ``listops_<key>.json`` from ``benchmarks/results``
    (:func:`lmscope.topk.bench.find_benchmark`, or ``folders``) when there is one; ``cache``: read and
    write ``cache_dir()/listops/<key>.json``, so a book built for a second model, or rebuilt, trains once.
    """
    sizes = dict(max_len=max_len, n_train=n_train, n_test=n_test, steps=steps, topk=topk)
    key = runs_key(sizes)
    test = make_dataset(n_test, max_len=max_len, seed=1)
    majority = max(torch.bincount(test.labels).tolist()) / len(test.labels)
    found = find_benchmark(f"listops_{key}.json", folders) if saved else None
    path = cache_dir() / "listops" / f"{key}.json"
    read = found if found is not None else path if cache and path.is_file() else None
    if read is not None:
        data = json.loads(read.read_text())
        return ListOpsRuns(data["curves"], data["seconds"], majority, f"saved run {found.name}" if found else "cache")
    train_data = make_dataset(n_train, max_len=max_len, seed=0)
    curves, seconds = {}, {}
    for label, k in (("vanilla", None), (f"top-{topk}", topk)):
        torch.manual_seed(0)
        net = ListOpsModel(max_len=max_len, topk=k)
        t0 = time.perf_counter()
        curves[label] = train(net, train_data, test, steps=steps, eval_every=max(1, steps // 10))
        seconds[label] = time.perf_counter() - t0
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"sizes": sizes, "torch": torch.__version__, "curves": curves, "seconds": seconds}))
    return ListOpsRuns(curves, seconds, majority, "trained")
