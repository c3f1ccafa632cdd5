"""Two small causal LMs trained from scratch on the same text, for a real alignment (Dar et al., section 5).

The paper aligns independently pretrained models (MultiBERTs seeds). Offline, we make such a
pair ourselves: small Llama-style models (``ScratchSpec``) trained with different seeds on the
same Shakespeare text (:mod:`lmscope.data.shakespeare`), tokenized with the given tokenizer
(SmolLM2's). To keep the softmax cheap on a CPU, the model's vocabulary is the tokenizer's
tokens that occur in the text (:class:`CompactVocab`, ids renumbered in order); every token the
model knows was seen in training. The first ``1 - test_fraction`` of each play is training
text, the rest held out. Training is seeded and repeatable (one thread, fixed data order);
checkpoints are cached as safetensors under ``cache_dir()/scratch_lm/<spec hash>/``.
``ScratchSpec(ff="relu")`` trains a GPT-2-style model instead (ungated ReLU FF, LayerNorm, learned
positions; chapter 03's ReLU vs SwiGLU sparsity baseline); the default stays the Llama/SwiGLU block.

>>> corpus = ScratchCorpus.build(tokenizer)                       # doctest: +SKIP
>>> model, losses = train_scratch_lm(corpus, ScratchSpec(), seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load_model, save_model

from lmscope.core.models import cache_dir
from lmscope.data.shakespeare import DEFAULT_PLAYS, play_text

Tensor = torch.Tensor


@dataclass(frozen=True)
class ScratchSpec:
    """Size and training schedule of a scratch model (Llama block: RMSNorm, RoPE, SwiGLU, tied E)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    seq_len: int = 64
    batch: int = 8
    steps: int = 500
    lr: float = 3e-3
    ff: str = "swiglu"  # "swiglu": Llama block (default); "relu": GPT-2 block with an ungated ReLU FF

    def key(self, seed: int, corpus_key: str) -> str:
        fields = asdict(self)
        if fields["ff"] == "swiglu":  # the default leaves the key (and the cached checkpoints) as before
            del fields["ff"]
        text = json.dumps({**fields, "seed": seed, "corpus": corpus_key}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CompactVocab:
    """The tokenizer ids a model knows, in order: model id i is tokenizer id ``ids[i]``."""

    ids: Tensor  # (V',) sorted tokenizer ids

    def encode(self, token_ids: Tensor) -> Tensor:
        """Tokenizer ids -> model ids (same shape); ValueError for an id outside the vocabulary."""
        pos = torch.searchsorted(self.ids, token_ids)
        ok = (pos < len(self.ids)) & (self.ids[pos.clamp_max(len(self.ids) - 1)] == token_ids)
        if not bool(ok.all()):
            raise ValueError("Some tokens are not in the scratch model's vocabulary (not seen in its text).")
        return pos

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ScratchCorpus:
    """Per play: training and held-out model ids (1-D each), and the shared :class:`CompactVocab`."""

    vocab: CompactVocab
    train: dict[str, Tensor]
    test: dict[str, Tensor]
    key: str

    @classmethod
    def build(cls, tokenizer, plays=DEFAULT_PLAYS, test_fraction: float = 0.1) -> "ScratchCorpus":
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
        raw = {p: torch.tensor(tokenizer(play_text(p)).input_ids) for p in plays}
        vocab = CompactVocab(torch.unique(torch.cat(list(raw.values()))))
        train, test = {}, {}
        for p, ids in raw.items():
            cut = int(len(ids) * (1 - test_fraction))
            train[p], test[p] = vocab.encode(ids[:cut]), vocab.encode(ids[cut:])
        key = hashlib.sha256(json.dumps([list(plays), test_fraction, len(vocab), int(vocab.ids.sum()),
                                         len(tokenizer)]).encode()).hexdigest()[:12]
        return cls(vocab, train, test, key)

    def seen_in_training(self) -> Tensor:
        """Bool mask over the model vocabulary (V',): tokens that occur in the training part."""
        seen = torch.zeros(len(self.vocab), dtype=torch.bool)
        seen[torch.cat(list(self.train.values()))] = True
        return seen

    def blocks(self, split: str, seq_len: int) -> tuple[Tensor, Tensor]:
        """Non-overlapping blocks (n, seq_len) of one split and the play index of each block (n,)."""
        parts = self.train if split == "train" else self.test
        xs, ys = [], []
        for label, ids in enumerate(parts.values()):
            n = len(ids) // seq_len
            xs.append(ids[: n * seq_len].view(n, seq_len))
            ys.append(torch.full((n,), label))
        return torch.cat(xs), torch.cat(ys)


def scratch_model(spec: ScratchSpec, vocab_size: int, seed: int):
    """A freshly initialised (seeded) model of the given size, float32: LlamaForCausalLM (``ff="swiglu"``)
    or GPT2LMHeadModel with ReLU and no dropout (``ff="relu"``); embeddings tied in both."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if spec.d_model % spec.n_heads:
        raise ValueError(f"d_model {spec.d_model} must be a multiple of n_heads {spec.n_heads}.")
    if spec.ff not in ("swiglu", "relu"):
        raise ValueError(f"ff must be 'swiglu' or 'relu', got {spec.ff!r}.")
    if spec.ff == "relu":
        return _relu_model(spec, vocab_size, seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.d_model, intermediate_size=spec.d_ff,
                      num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads,
                      num_key_value_heads=spec.n_heads, max_position_embeddings=spec.seq_len,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).float()


def _relu_model(spec: ScratchSpec, vocab_size: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=spec.seq_len, n_embd=spec.d_model, n_layer=spec.n_layers,
                     n_head=spec.n_heads, n_inner=spec.d_ff, activation_function="relu", resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None,
                     eos_token_id=None, pad_token_id=None)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).float()
    # transformers finds no loss by this class's name and warns (into the page) before taking the causal-LM loss
    model.loss_type = "ForCausalLM"
    return model


def train_scratch_lm(corpus: ScratchCorpus, spec: ScratchSpec = ScratchSpec(), seed: int = 0,
                     cache: bool = True) -> tuple[torch.nn.Module, list[float]]:
    """Train (or load from the cache) one scratch model: ``(model in eval mode, training losses)``.

    Random windows of ``seq_len`` tokens of the training text, ``batch`` per step, AdamW with
    linear warm-up then cosine decay; the seed fixes the initialisation and the data order.
    """
    folder = cache_dir() / "scratch_lm" / spec.key(seed, corpus.key)
    model = scratch_model(spec, len(corpus.vocab), seed)
    if cache and (folder / "model.safetensors").exists():
        load_model(model, folder / "model.safetensors")
        return model.eval(), json.loads((folder / "losses.json").read_text())
    data = torch.cat(list(corpus.train.values()))
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warm = max(1, spec.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + torch.cos(torch.tensor(torch.pi * min(s, spec.steps) / spec.steps)).item()) + 1e-3)
    model.train()
    losses = []
    for _ in range(spec.steps):
        starts = torch.randint(0, len(data) - spec.seq_len - 1, (spec.batch,), generator=g)
        x = torch.stack([data[s: s + spec.seq_len] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        save_model(model, str(folder / "model.safetensors"))
        (folder / "losses.json").write_text(json.dumps(losses))
        (folder / "spec.json").write_text(json.dumps({**asdict(spec), "seed": seed, "corpus": corpus.key}))
    return model, losses


@torch.no_grad()
def heldout_loss(model, blocks: Tensor, batch: int = 16) -> float:
    """Mean next-token cross-entropy of ``model`` on blocks (n, T) of model ids."""
    total, n = 0.0, 0
    for i in range(0, len(blocks), batch):
        x = blocks[i: i + batch]
        total += float(model(input_ids=x, labels=x).loss) * len(x)
        n += len(x)
    return total / n
