"""The architecture view's identities hold on tiny random models of every family."""

import pytest
import torch

from lmscope import ModelView
from lmscope.core.hooks import hook_name, hook_names

TOL = dict(rtol=1e-9, atol=1e-9)
# Identities that cross one of the model's RMSNorms: HF's RMSNorms compute in float32 even in a float64
# model, so the model's own output carries float32 rounding there.
NORM_TOL = dict(rtol=2e-6, atol=2e-6)


def _random_norm_gains(model, seed=1):
    """Give every norm a random gain (and bias), so that an identity that drops one fails."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _tol(view):
    return NORM_TOL if view.cfg.post_block_norms else TOL


def _ids(view, batch=2, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, view.cfg.d_vocab, (batch, length), generator=g)


def test_config_sizes(tiny):
    family, model, view = tiny
    cfg = view.cfg
    assert cfg.n_layers == 3 and cfg.d_model == 32 and cfg.n_heads == 4
    assert view.W_E.shape == (cfg.d_vocab, cfg.d_model)
    assert view.W_U.shape == (cfg.d_model, cfg.d_vocab)
    lv = view.layers[1]
    for w in (lv.W_Q, lv.W_K, lv.W_V):
        assert w.shape == (cfg.n_heads, cfg.d_model, cfg.d_head)
    assert lv.W_O.shape == (cfg.n_heads, cfg.d_head, cfg.d_model)
    assert lv.ff_keys.shape == lv.ff_values.shape == (cfg.d_ff, cfg.d_model)
    assert (lv.ff_gate_keys is not None) == cfg.gated


def test_ff_output_is_sum_of_sub_updates(tiny):
    """sum_i m_i v_i + b equals the FF block output."""
    _, model, view = tiny
    names = [f"blocks.{l}.{p}" for l in range(view.cfg.n_layers) for p in ("ff_coeffs", "mlp_out")]
    _, cache = view.run_with_cache(_ids(view), names)
    for l, lv in enumerate(view.layers):
        m = cache[f"blocks.{l}.ff_coeffs"]  # (B, T, d_ff)
        recon = m @ lv.ff_values
        if lv.b_ff_out is not None:
            recon = recon + lv.b_ff_out
        torch.testing.assert_close(recon, cache[f"blocks.{l}.mlp_out"], **TOL)


def test_heads_sum_to_attention_output(tiny):
    _, model, view = tiny
    names = [f"blocks.{l}.{p}" for l in range(view.cfg.n_layers) for p in ("attn_heads", "attn_out")]
    _, cache = view.run_with_cache(_ids(view), names)
    for l, lv in enumerate(view.layers):
        heads = cache[f"blocks.{l}.attn_heads"]
        assert heads.shape[-2:] == (view.cfg.n_heads, view.cfg.d_model)
        total = heads.sum(-2) + (lv.b_O if lv.b_O is not None else 0)
        torch.testing.assert_close(total, cache[f"blocks.{l}.attn_out"], **TOL)


def test_heads_recomputed_from_weights(tiny):
    """Per-head outputs rebuilt from W_Q, W_K, W_V, W_O and the captured scores' softmax match."""
    family, model, view = tiny
    if family != "gpt2":
        pytest.skip("positional rotation makes a from-scratch rebuild family-specific; gpt2 checks the weights")
    l = 1
    names = [f"blocks.{l}.resid_pre", f"blocks.{l}.attn_heads"]
    _, cache = view.run_with_cache(_ids(view, batch=1), names)
    lv = view.layers[l]
    x = model.transformer.h[l].ln_1(cache[f"blocks.{l}.resid_pre"])[0]  # (T, d)
    q = torch.einsum("td,hdk->htk", x, lv.W_Q) + lv.b_Q[:, None]
    k = torch.einsum("td,hdk->htk", x, lv.W_K) + lv.b_K[:, None]
    v = torch.einsum("td,hdk->htk", x, lv.W_V) + lv.b_V[:, None]
    scores = q @ k.transpose(1, 2) / view.cfg.d_head**0.5
    t = x.shape[0]
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    z = scores.softmax(-1) @ v  # (H, T, dh)
    heads = torch.einsum("htk,hkd->thd", z, lv.W_O)
    torch.testing.assert_close(heads, cache[f"blocks.{l}.attn_heads"][0], **TOL)


def test_residual_stream_adds_up(tiny):
    family, model, view = tiny
    if family == "bert":
        pytest.skip("post-norm: the residual is normalised after each add")
    names = view.hook_names(1)
    _, cache = view.run_with_cache(_ids(view), [n for n in names if "scores" not in n])
    pre, mid, post = (cache[f"blocks.1.{p}"] for p in ("resid_pre", "resid_mid", "resid_post"))
    attn, mlp = cache["blocks.1.attn_resid"], cache["blocks.1.mlp_resid"]
    torch.testing.assert_close(mid, pre + attn, **TOL)
    if not view.cfg.post_block_norms:  # without a norm after the sub-block, it adds its raw output
        torch.testing.assert_close(attn, cache["blocks.1.attn_out"], **TOL)
        torch.testing.assert_close(mlp, cache["blocks.1.mlp_out"], **TOL)
    else:
        lv = view.layers[1]
        torch.testing.assert_close(attn, lv.post_attn_norm(cache["blocks.1.attn_out"]), **TOL)
        torch.testing.assert_close(mlp, lv.post_ff_norm(cache["blocks.1.mlp_out"]), **TOL)
    if not view.cfg.parallel_residual:
        torch.testing.assert_close(post, mid + mlp, **TOL)
    else:
        torch.testing.assert_close(post, pre + attn + mlp, **TOL)


def test_parts_sum_to_the_blocks_residual_contribution(tiny):
    """Heads and m_i v_i, each through the post-norm frozen at the token's RMS, sum to attn_resid / mlp_resid."""
    family, model, view = tiny
    _random_norm_gains(model)
    points = ("attn_heads", "attn_out", "attn_resid", "ff_coeffs", "mlp_out", "mlp_resid")
    _, cache = view.run_with_cache(_ids(view), hook_names(points, range(view.cfg.n_layers)))
    for l, lv in enumerate(view.layers):
        c = {p: cache[hook_name(l, p)] for p in points}
        heads, rest = lv.residual_parts("attn", c["attn_heads"], c["attn_out"])
        torch.testing.assert_close(heads.sum(-2) + rest, c["attn_resid"], **_tol(view))
        values = c["ff_coeffs"][..., None] * lv.ff_values  # (B, T, d_ff, d_model): m_i v_i
        parts, rest = lv.residual_parts("ff", values, c["mlp_out"])
        torch.testing.assert_close(parts.sum(-2) + rest, c["mlp_resid"], **_tol(view))
        if lv.post_ff_norm is not None:  # each part is v_i * gain scaled by m_i / rms(mlp_out)
            rms = c["mlp_out"].pow(2).mean(-1, keepdim=True).add(lv.post_ff_norm.eps if hasattr(
                lv.post_ff_norm, "eps") else lv.post_ff_norm.variance_epsilon).sqrt()
            applied = c["ff_coeffs"][..., None] * lv.ff_values_applied / rms[..., None]
            torch.testing.assert_close(parts, applied, **TOL)
        else:
            assert lv.ff_values_applied is lv.ff_values or torch.equal(lv.ff_values_applied, lv.ff_values)
    with pytest.raises(ValueError, match="'attn' or 'ff'"):
        view.layers[0].residual_parts("mlp", values, c["mlp_out"])


def test_embedding_enters_with_its_scale(tiny):
    family, model, view = tiny
    ids = _ids(view)
    if family in ("gpt2", "bert"):
        pytest.skip("learned absolute positions are added to the token embedding before the first block")
    _, cache = view.run_with_cache(ids, [hook_name(0, "resid_pre")])
    torch.testing.assert_close(cache[hook_name(0, "resid_pre")], view.W_E_applied[ids], **TOL)
    assert (view.cfg.embed_scale != 1.0) == (view.family.embed_scale is not None)


def test_unembed_of_last_residual_is_logits(tiny):
    _, model, view = tiny
    last = f"blocks.{view.cfg.n_layers - 1}.resid_post"
    logits, cache = view.run_with_cache(_ids(view), [last])
    torch.testing.assert_close(view.unembed(cache[last]), logits, **TOL)


def test_overwrite_one_coefficient_changes_output_as_predicted(tiny):
    _, model, view = tiny
    ids = _ids(view)
    l, unit, new_value = 2, 5, 3.0
    last = f"blocks.{l}.resid_post"
    coeffs = f"blocks.{l}.ff_coeffs"
    _, base = view.run_with_cache(ids, [last, coeffs])

    def set_unit(m):
        m = m.clone()
        m[..., unit] = new_value
        return m

    with view.overwrite({coeffs: set_unit}):
        logits, edited = view.run_with_cache(ids, [last])
    delta = (new_value - base[coeffs][..., unit])[..., None] * view.layers[l].ff_values[unit]
    lv = view.layers[l]
    if lv.post_ff_norm is not None:  # the post-norm sees the new raw sum: its RMS changes, run it again
        _, parts = view.run_with_cache(ids, [f"blocks.{l}.resid_mid", f"blocks.{l}.mlp_out"])
        expected = parts[f"blocks.{l}.resid_mid"] + lv.post_ff_norm(parts[f"blocks.{l}.mlp_out"] + delta)
        frozen = base[last] + lv.residual_parts("ff", delta[..., None, :], parts[f"blocks.{l}.mlp_out"])[0][..., 0, :]
        assert (frozen - expected).abs().max() > 1e-6  # reusing the frozen map would mispredict
    elif view.cfg.post_norm:  # BERT: the update passes through the block's final LayerNorm
        block = view.blocks[l]
        mid = base[last]  # recompute through the output LayerNorm from captured parts
        _, parts = view.run_with_cache(ids, [f"blocks.{l}.resid_mid", f"blocks.{l}.mlp_out"])
        expected = block.output.LayerNorm(parts[f"blocks.{l}.mlp_out"] + delta + parts[f"blocks.{l}.resid_mid"])
        del mid
    else:
        expected = base[last] + delta
    torch.testing.assert_close(edited[last], expected, **_tol(view))
    torch.testing.assert_close(logits, view.unembed(expected), **_tol(view))


def test_hooks_removed_after_context_even_on_error(tiny):
    _, model, view = tiny
    ids = _ids(view)
    before = model(input_ids=ids).logits
    with pytest.raises(RuntimeError):
        with view.overwrite({"blocks.0.mlp_out": lambda t: t * 0}), view.capture(["blocks.0.attn_scores"]):
            raise RuntimeError("boom")
    impl = model.config._attn_implementation
    assert impl != "lmscope_eager"
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(model(input_ids=ids).logits, before, **TOL)


def test_attention_scores_capture_matches_softmax_weights(tiny):
    family, model, view = tiny
    ids = _ids(view)
    base = model(input_ids=ids).logits
    with view.capture(["blocks.0.attn_scores"]) as cache:
        logits = model(input_ids=ids).logits
    # the scored eager path changes nothing (HF's own eager attention, Gemma 2's default, takes its softmax
    # in float32 even in a float64 model)
    torch.testing.assert_close(logits, base, **(NORM_TOL if model.config._attn_implementation == "eager" else TOL))
    scores = cache["blocks.0.attn_scores"]
    assert scores.shape == (2, view.cfg.n_heads, 7, 7)
    if family != "bert":  # causal: future keys are masked out
        probs = scores.softmax(-1)
        assert probs[..., 0, 1:].abs().max() < 1e-12


def test_scores_honour_soft_caps_and_sliding_windows(tiny):
    """Captured scores are capped (Gemma 2) and keys outside a sliding window get no weight."""
    family, model, view = tiny
    ids = _ids(view)
    cfg = view.cfg
    names = hook_names("attn_scores", range(cfg.n_layers))
    with view.capture(names) as cache:
        model(input_ids=ids)
    t = ids.shape[1]
    pos = torch.arange(t)
    for l in range(cfg.n_layers):
        probs = cache[names[l]].softmax(-1)
        visible = probs > 0
        if cfg.causal:
            assert not visible[..., pos[:, None] < pos[None, :]].any()
        if l in cfg.sliding_layers:  # HF's window: key j is seen by query i when i - window < j <= i
            outside = pos[:, None] - pos[None, :] >= cfg.sliding_window
            assert outside.any() and not visible[..., outside].any(), f"layer {l} saw keys outside its window"
        elif cfg.causal:
            assert visible[..., pos[:, None] >= pos[None, :]].all()
        if cfg.attn_softcap is not None:
            kept = cache[names[l]][visible]
            assert kept.abs().max() <= cfg.attn_softcap


def test_overwrite_attention_scores(tiny):
    """Masking every key but the first makes each head copy the first value vector."""
    _, model, view = tiny
    ids = _ids(view)

    def only_first_key(scores):
        s = torch.full_like(scores, torch.finfo(scores.dtype).min)
        s[..., 0] = 0
        return s

    with view.overwrite({"blocks.0.attn_scores": only_first_key}), view.capture(["blocks.0.attn_heads"]) as c:
        model(input_ids=ids)
    heads = c["blocks.0.attn_heads"]  # (B, T, H, d): the same at every position
    torch.testing.assert_close(heads, heads[:, :1].expand_as(heads), **TOL)


def test_bad_hook_names(tiny):
    _, _, view = tiny
    for bad, needle in [("blocks.9.mlp_out", "layer 9"), ("blocks.0.nope", "unknown point"), ("mlp", "Bad hook")]:
        with pytest.raises(ValueError, match=needle):
            with view.capture([bad]):
                pass
    with pytest.raises(IndexError, match="layers 0..2"):
        view.layer(3)


def test_unsupported_architecture_is_named():
    import transformers as tf

    model = tf.OPTForCausalLM(tf.OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                           vocab_size=50, word_embed_proj_dim=16))
    with pytest.raises(ValueError, match="Supported families: .*gpt2.*llama"):
        ModelView(model)


@pytest.mark.slow
def test_embedded_model_identities(smollm):
    model, tok = smollm
    view = ModelView(model)
    assert (view.cfg.n_layers, view.cfg.d_model, view.cfg.d_vocab) == (30, 576, 49152)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    l = 12
    names = [f"blocks.{l}.ff_coeffs", f"blocks.{l}.mlp_out", f"blocks.{l}.attn_heads", f"blocks.{l}.attn_out",
             "blocks.29.resid_post"]
    logits, cache = view.run_with_cache(ids, names)
    lv = view.layers[l]
    torch.testing.assert_close(cache[f"blocks.{l}.ff_coeffs"] @ lv.ff_values, cache[f"blocks.{l}.mlp_out"],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cache[f"blocks.{l}.attn_heads"].sum(-2), cache[f"blocks.{l}.attn_out"],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(view.unembed(cache["blocks.29.resid_post"]), logits, rtol=1e-4, atol=1e-3)
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"


@pytest.mark.slow
def test_second_embedded_model_decomposes_exactly(gemma):
    """Gemma 3 270M (post-norms, embedding scale, QK-norm, sliding windows): the decomposition holds in float32."""
    model, tok = gemma
    view = ModelView(model)
    cfg = view.cfg
    assert (cfg.family, cfg.n_layers, cfg.d_model, cfg.d_vocab) == ("gemma3_text", 18, 640, 262144)
    assert cfg.post_block_norms and cfg.qk_norm and cfg.sliding_layers
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    l, last = 7, hook_name(cfg.n_layers - 1, "resid_post")
    points = ("attn_heads", "attn_out", "attn_resid", "ff_coeffs", "mlp_out", "mlp_resid", "resid_pre", "resid_mid")
    logits, cache = view.run_with_cache(ids, hook_names(points, [l]) + [last, hook_name(0, "resid_pre")])
    c = {p: cache[hook_name(l, p)] for p in points}
    lv = view.layers[l]

    def close(a, b):  # float32: relative to the largest entry
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()

    heads, rest = lv.residual_parts("attn", c["attn_heads"], c["attn_out"])
    close(heads.sum(-2) + rest, c["attn_resid"])
    parts, rest = lv.residual_parts("ff", c["ff_coeffs"][..., None] * lv.ff_values, c["mlp_out"])
    close(parts.sum(-2) + rest, c["mlp_resid"])
    torch.testing.assert_close(c["resid_mid"], c["resid_pre"] + c["attn_resid"])
    torch.testing.assert_close(view.unembed(cache[last]), logits)
    torch.testing.assert_close(view.W_E_applied[ids], cache[hook_name(0, "resid_pre")])
