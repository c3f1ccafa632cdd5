"""The tuned lens: identity start = logit lens exactly, the least-squares start against a brute-force
solve, lower KL on held-out tokens, a frozen read-out, save/load and the cache."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, make_tiny_model

from lmscope import ModelView
from lmscope.core.hooks import hook_name
from lmscope.core.lens_stats import lens_kl
from lmscope.core.tuned_lens import (
    LogitLens,
    TunedLens,
    TunedLensConfig,
    load_or_train_tuned_lens,
    tuned_lens_path,
)


def _tokens(n: int, seq_len: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, seq_len), generator=gen)


def _busy_view(family: str) -> ModelView:
    """A tiny model with a peaked output that its blocks move: random init gives near-uniform logits and
    near-identity blocks, so scale up the unembedding and every block's linear weights."""
    view = ModelView(make_tiny_model(family))
    with torch.no_grad():
        view.W_U.mul_(20.0)
        for layer in range(view.cfg.n_layers):
            for linear in view.block_linears(layer):
                linear.weight.mul_(8.0)
    return view


def _resid_post(view, tokens):
    names = [hook_name(l, "resid_post") for l in range(view.cfg.n_layers)]
    logits, cache = view.run_with_cache(tokens, names)
    return logits, [cache[n] for n in names]


def test_identity_lens_is_the_logit_lens_exactly(tiny):
    _, _, view = tiny
    lens, logit = TunedLens(view), LogitLens(view)
    _, resids = _resid_post(view, _tokens(2))
    for layer, resid in enumerate(resids):
        for point in ("resid_pre", "resid_mid", "resid_post"):
            assert torch.equal(lens.read(resid, layer, point), view.unembed(resid))
            assert torch.equal(logit.read(resid, layer, point), view.unembed(resid))
        assert torch.equal(lens(resid, layer), view.unembed(resid))


def test_last_layer_reads_the_model_output_and_stays_identity(tiny):
    family, model, view = tiny
    tokens = _tokens(4)
    lens = TunedLens.trained(view, tokens=tokens, config=TunedLensConfig(fit_sequences=4, steps=2, batch=2))
    logits, resids = _resid_post(view, tokens)
    L = view.cfg.n_layers
    assert torch.count_nonzero(lens.weight[L]) == 0 and torch.count_nonzero(lens.bias[L]) == 0
    assert torch.count_nonzero(lens.weight[:L]) > 0
    torch.testing.assert_close(lens(resids[-1], L - 1), logits)


def test_regression_start_solves_the_ridge_least_squares_problem():
    model = make_tiny_model("llama")
    view = ModelView(model)
    tokens = _tokens(6)
    cfg = TunedLensConfig(fit_sequences=6, steps=0, ridge=1e-3)
    lens = TunedLens.trained(view, tokens=tokens, config=cfg)
    L, d = view.cfg.n_layers, view.cfg.d_model
    names = [hook_name(l, "resid_pre") for l in range(L)] + [hook_name(L - 1, "resid_post")]
    _, cache = view.run_with_cache(tokens, names)
    y = cache[names[-1]][:, 1:].reshape(-1, d)
    for i in range(L):
        x = cache[names[i]][:, 1:].reshape(-1, d)
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        lam = cfg.ridge * (x1 * x1).sum(0).mean()
        # ridge as an ordinary least-squares problem on stacked rows [x1; sqrt(lam) I] -> [y; 0]
        a = torch.cat([x1, lam.sqrt() * torch.eye(d + 1, dtype=x.dtype)])
        b = torch.cat([y, torch.zeros(d + 1, d, dtype=x.dtype)])
        sol = torch.linalg.lstsq(a, b).solution  # (d + 1, d)
        torch.testing.assert_close(lens.weight[i] + torch.eye(d, dtype=x.dtype), sol[:d].T)
        torch.testing.assert_close(lens.bias[i], sol[d])


@pytest.mark.parametrize("init", ["identity", "regression"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_trained_lens_lowers_kl_on_held_out_tokens(family, init):
    view = _busy_view(family)
    train, held_out = _tokens(32, seed=1), _tokens(8, seed=2)
    cfg = TunedLensConfig(init=init, fit_sequences=32, steps=60, batch=4, seq_len=16)
    lens = TunedLens.trained(view, tokens=train, config=cfg)
    before = lens_kl(view, LogitLens(view), held_out)
    after = lens_kl(view, lens, held_out)
    L = view.cfg.n_layers
    assert abs(after[L - 1]) < 1e-6 and abs(before[L - 1]) < 1e-6  # the last layer is the output for both (round-off)
    assert torch.all(after[: L - 1] < before[: L - 1]), (before, after)
    assert len(lens.log.loss) == cfg.steps and lens.log.tokens_per_step == 4 * 16


def test_lens_is_a_frozen_readout_and_training_leaves_the_model_alone():
    model = make_tiny_model("llama")
    view = ModelView(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    lens = TunedLens.trained(view, tokens=_tokens(4), config=TunedLensConfig(fit_sequences=4, steps=3, batch=2))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert not any(p.requires_grad for p in lens.parameters())
    assert {id(p) for p in lens.parameters()} == {id(lens.weight), id(lens.bias)}  # the model is no submodule

    # used as a read-out inside finetuning: gradients reach the model, never the lens
    saved = [p.detach().clone() for p in lens.parameters()]
    with view.capture([hook_name(1, "resid_post")], detach=False) as cache:
        model(input_ids=_tokens(1))
    loss = lens(cache[hook_name(1, "resid_post")], 1).logsumexp(-1).sum()
    loss.backward()
    assert model.get_submodule("model.layers.0.mlp.down_proj").weight.grad is not None
    assert all(p.grad is None for p in lens.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert all(torch.equal(p, s) for p, s in zip(lens.parameters(), saved))


def test_save_load_round_trip_and_other_weights_refused(tmp_path):
    view = ModelView(make_tiny_model("llama"))
    lens = TunedLens.trained(view, tokens=_tokens(4), config=TunedLensConfig(fit_sequences=4, steps=2, batch=2))
    path = lens.save(tmp_path / "lens.safetensors")
    back = TunedLens.load(view, path)
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    assert back.config == lens.config and back.log.loss == lens.log.loss
    other = ModelView(make_tiny_model("llama", seed=1))
    with pytest.raises(ValueError, match="other weights"):
        TunedLens.load(other, path)
    with pytest.raises(FileNotFoundError, match="load_or_train_tuned_lens"):
        TunedLens.load(view, tmp_path / "missing.safetensors")


class _TokenizerStub:
    """Enough of a tokenizer for the training text: ids modulo the tiny vocabulary."""

    def __call__(self, text, return_tensors="pt"):
        ids = torch.tensor([3 + ord(c) % (VOCAB - 3) for c in text[:4000]])
        return type("Encoding", (), {"input_ids": ids[None]})()


def test_load_or_train_caches_per_model_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    view = ModelView(make_tiny_model("llama"))
    cfg = TunedLensConfig(fit_sequences=4, steps=1, batch=2, seq_len=16)
    first = load_or_train_tuned_lens(view, _TokenizerStub(), cfg)
    assert tuned_lens_path(view, cfg).exists() and str(tuned_lens_path(view, cfg)).startswith(str(tmp_path))
    monkeypatch.setattr(TunedLens, "trained", classmethod(lambda *a, **k: pytest.fail("retrained")))
    again = load_or_train_tuned_lens(view, _TokenizerStub(), cfg)
    assert torch.equal(again.weight, first.weight)
    assert tuned_lens_path(view, TunedLensConfig(steps=2)) != tuned_lens_path(view, cfg)


def test_bad_input_names_the_argument():
    view = ModelView(make_tiny_model("llama"))
    lens = TunedLens(view)
    resid = torch.zeros(2, view.cfg.d_model, dtype=torch.float64)
    with pytest.raises(IndexError, match="layers 0..2"):
        lens(resid, 3)
    with pytest.raises(ValueError, match="point must be one of"):
        lens.read(resid, 0, "attn_out")
    with pytest.raises(ValueError, match="tokenizer"):
        TunedLens.trained(view)
    with pytest.raises(ValueError, match="integer tensor"):
        TunedLens.trained(view, tokens=torch.zeros(4, 8))
    with pytest.raises(ValueError, match="init must be"):
        TunedLensConfig(init="zeros")


@pytest.mark.slow
def test_smollm_tuned_lens_beats_the_logit_lens_on_held_out_shakespeare(smollm):
    from lmscope.data.shakespeare import token_blocks

    model, tok = smollm
    view = ModelView(model)
    lens = TunedLens.trained(view, tok, TunedLensConfig(fit_sequences=8, steps=1, seq_len=32))
    held_out = token_blocks(tok, 32, 2)  # DEFAULT_PLAYS: not among the training plays
    before, after = lens_kl(view, LogitLens(view), held_out), lens_kl(view, lens, held_out)
    assert torch.all(after[:-1] < before[:-1]), (before, after)
    assert before[:10].mean() > 5.0  # the logit lens is far off in the early layers (nats per token)


def test_debugger_trace_reads_through_either_lens():
    from lmscope.debugger.engine import LMDebugger

    view = _busy_view("llama")
    dbg = LMDebugger(view, k=3)
    ids = _tokens(1, seq_len=6)
    assert dbg.trace(ids, lens=TunedLens(view)) == dbg.trace(ids)  # identity translators: the logit lens
    lens = TunedLens.trained(view, tokens=_tokens(8), config=TunedLensConfig(fit_sequences=8, steps=0))
    trace = dbg.trace(ids, lens=lens)
    _, cache = view.run_with_cache(ids, [hook_name(1, "resid_post"), hook_name(1, "resid_mid")])
    for point, row in (("resid_post", trace.layers[1].after_ff), ("resid_mid", trace.layers[1].after_attn)):
        top = lens.read(cache[hook_name(1, point)][0, -1], 1, point).float().softmax(-1).topk(3)
        assert [p for _, p in row] == pytest.approx(top.values.tolist())
    assert trace.layers[1].after_ff != dbg.trace(ids).layers[1].after_ff

