"""Measurements behind the top-k attention chapter: perplexity vs k, in-context tasks, head patterns.

Everything takes a Hugging Face causal LM and its tokenizer; top-k attention
runs through :func:`lmscope.topk_patch.use_topk_attention` (the kernel), top-k
FF through :func:`lmscope.topk_patch.topk_feedforward`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path

import torch
from torch import nn

from lmscope.core.view import ModelView
from lmscope.topk.dropin import topk_feedforward, use_topk_attention

Tensor = torch.Tensor


# --------------------------------------------------------------------------- perplexity
@torch.no_grad()
def perplexity(model: nn.Module, blocks: Tensor, batch_size: int = 1) -> float:
    """exp(mean next-token NLL) over token blocks (N, T) (each block scored on its own)."""
    nll, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, blocks.shape[0], batch_size):
        ids = blocks[i : i + batch_size].to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        nll += float(loss)
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


def _mode(model: nn.Module, mode: str, k: int | None, chunk_size: int | None):
    if mode == "dense":
        return contextlib.nullcontext()
    if mode == "attention":
        return use_topk_attention(ModelView(model), k, chunk_size=chunk_size)
    if mode == "ff":
        return topk_feedforward(ModelView(model), k)
    raise ValueError(f"mode must be 'dense', 'attention' or 'ff', got {mode!r}")


def perplexity_sweep(
    model: nn.Module, blocks: Tensor, attn_ks=(), ff_ks=(), chunk_size: int | None = None
) -> list[dict]:
    """Rows {'mode', 'k', 'ppl'}: dense once, top-k attention per k, top-k FF per k."""
    rows = [{"mode": "dense", "k": None, "ppl": perplexity(model, blocks)}]
    for mode, ks in (("attention", attn_ks), ("ff", ff_ks)):
        for k in ks:
            with _mode(model, mode, k, chunk_size):
                rows.append({"mode": mode, "k": k, "ppl": perplexity(model, blocks)})
    return rows


# --------------------------------------------------------------------------- in-context tasks
CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Russia", "Moscow"), ("Greece", "Athens"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Austria", "Vienna"),
    ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Portugal", "Lisbon"), ("Sweden", "Stockholm"), ("Thailand", "Bangkok"),
]
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("old", "new"), ("open", "closed"), ("early", "late"), ("high", "low"), ("hard", "soft"), ("rich", "poor"),
    ("wet", "dry"), ("strong", "weak"), ("full", "empty"), ("long", "short"), ("first", "last"), ("good", "bad"),
]
NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen", "Liam"]


def icl_tasks(n_per_task: int = 20, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Few-shot prompts with one-word answers: {'capitals', 'antonyms', 'recall'} -> [(prompt, answer)].

    'recall' lists name -> number pairs and asks for one of them: the answer is
    only in the context, so it needs attention to a specific earlier token.
    """
    rng = random.Random(seed)
    tasks: dict[str, list[tuple[str, str]]] = {"capitals": [], "antonyms": [], "recall": []}
    for name, pairs, fmt in (
        ("capitals", CAPITALS, "The capital of {} is {}."),
        ("antonyms", ANTONYMS, "The opposite of {} is {}."),
    ):
        for _ in range(n_per_task):
            shots = rng.sample(pairs, 6)
            *demo, (x, y) = shots
            prompt = " ".join(fmt.format(a, b) for a, b in demo) + " " + fmt.format(x, "").rstrip(" .")
            tasks[name].append((prompt, y))
    for _ in range(n_per_task):
        names = rng.sample(NAMES, 8)
        nums = [str(rng.randint(10, 99)) for _ in names]
        facts = " ".join(f"{n} has {m} apples." for n, m in zip(names, nums))
        j = rng.randrange(len(names))
        tasks["recall"].append((f"{facts} Question: how many apples does {names[j]} have? Answer: {names[j]} has", nums[j]))
    return tasks


@torch.no_grad()
def icl_accuracy(model: nn.Module, tokenizer, tasks: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """Greedy next-token accuracy: the top token must be the first token of ' answer'."""
    device = next(model.parameters()).device
    acc = {}
    for name, items in tasks.items():
        hits = 0
        for prompt, answer in items:
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
            target = tokenizer(" " + answer, add_special_tokens=False).input_ids[0]
            hits += int(model(input_ids=ids).logits[0, -1].argmax()) == target
        acc[name] = hits / len(items)
    return acc


def icl_sweep(model: nn.Module, tokenizer, tasks, attn_ks=(), ff_ks=()) -> list[dict]:
    """Rows {'mode', 'k', task: accuracy...}, dense first."""
    rows = [{"mode": "dense", "k": None, **icl_accuracy(model, tokenizer, tasks)}]
    for mode, ks in (("attention", attn_ks), ("ff", ff_ks)):
        for k in ks:
            with _mode(model, mode, k, None):
                rows.append({"mode": mode, "k": k, **icl_accuracy(model, tokenizer, tasks)})
    return rows


# --------------------------------------------------------------------------- head patterns
def keep_topk_scores(scores: Tensor, k: int) -> Tensor:
    """Pre-softmax scores (..., Tk) with all but the k largest per row set to the dtype's minimum."""
    if k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, torch.finfo(scores.dtype).min)


@torch.no_grad()
def head_patterns(model: nn.Module, tokenizer, prompt: str, layer: int, head: int, k: int) -> dict:
    """Attention pattern of one head, dense and with top-k attention everywhere, and next-token probabilities.

    Returns {'tokens', 'dense' (T, T), 'topk' (T, T), 'p_dense' (V,), 'p_topk' (V,),
    'p_topk_kernel' (V,)}: the top-k run edits the scores of every layer through
    the ``attn_scores`` hook (so the pattern can be read); ``p_topk_kernel`` is
    the same model run with the top-k kernel, as a cross-check.
    """
    view = ModelView(model)
    device = view.device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    name = f"blocks.{layer}.attn_scores"
    with view.capture([name]) as cache:
        p_dense = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    dense = torch.softmax(cache[name][0, head].float(), -1)
    edits = {f"blocks.{l}.attn_scores": (lambda s: keep_topk_scores(s, k)) for l in range(view.cfg.n_layers)}
    with view.overwrite(edits), view.capture([name]) as cache:
        p_topk = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    topk = torch.softmax(cache[name][0, head].float(), -1)
    with use_topk_attention(view, k):
        p_kernel = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    tokens = [tokenizer.decode([t]) for t in ids[0].tolist()]
    return {"tokens": tokens, "dense": dense.cpu(), "topk": topk.cpu(), "p_dense": p_dense.cpu(),
            "p_topk": p_topk.cpu(), "p_topk_kernel": p_kernel.cpu()}


def topk_widget(model: nn.Module, tokenizer, prompt: str = "The capital of France is Paris. The capital of Japan is"):
    """ipywidgets control: prompt, k, layer, head -> dense vs top-k pattern and next-token change."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    view = ModelView(model)
    text = w.Text(value=prompt, description="prompt", layout=w.Layout(width="90%"))
    k = w.IntSlider(value=4, min=1, max=64, description="k")
    layer = w.IntSlider(value=view.cfg.n_layers // 2, min=0, max=view.cfg.n_layers - 1, description="layer")
    head = w.IntSlider(value=0, min=0, max=view.cfg.n_heads - 1, description="head")
    out = w.Output()

    def draw(_=None):
        r = head_patterns(model, tokenizer, text.value, layer.value, head.value, k.value)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
            for a, key, title in ((ax[0], "dense", "dense"), (ax[1], "topk", f"top-{k.value}")):
                a.imshow(r[key], cmap="viridis", vmin=0, vmax=1)
                a.set_title(f"layer {layer.value} head {head.value}: {title}")
                a.set_xticks(range(len(r["tokens"])), r["tokens"], rotation=90, fontsize=7)
                a.set_yticks(range(len(r["tokens"])), r["tokens"], fontsize=7)
            top = torch.topk(torch.maximum(r["p_dense"], r["p_topk"]), 8).indices
            labels = [repr(tokenizer.decode([int(t)])) for t in top]
            x = torch.arange(len(top))
            ax[2].bar(x - 0.2, r["p_dense"][top], 0.4, label="dense")
            ax[2].bar(x + 0.2, r["p_topk"][top], 0.4, label=f"top-{k.value}")
            ax[2].set_xticks(x.tolist(), labels, rotation=45)
            tv = 0.5 * (r["p_dense"] - r["p_topk"]).abs().sum()
            ax[2].set_title(f"next token; total variation {tv:.3f}")
            ax[2].legend()
            fig.tight_layout()
            plt.show()

    for c in (text, k, layer, head):
        c.observe(draw, names="value")
    draw()
    return w.VBox([text, w.HBox([k, layer, head]), out])


# --------------------------------------------------------------------------- benchmark results
def load_benchmark(path: str | Path) -> dict | None:
    """The JSON written by ``benchmarks/topk_attention.py``, or None if absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def find_benchmark(name: str) -> Path | None:
    """``benchmarks/results/<name>`` of this checkout (from the package location or the working folder)."""
    roots = [Path(__file__).resolve().parents[3], *Path.cwd().resolve().parents, Path.cwd().resolve()]
    for root in roots:
        path = root / "benchmarks" / "results" / name
        if path.exists():
            return path
    return None
