"""Shared fixtures: tiny random models of every supported family, and the embedded model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf

from lmscope import ModelView, load_model

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 97
D_MODEL = 32


def _tiny_configs() -> dict[str, tf.PretrainedConfig]:
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gpt2": tf.GPT2Config(n_embd=D_MODEL, n_layer=3, n_head=4, n_positions=64, **common),
        "llama": tf.LlamaConfig(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, **common,
        ),
        "qwen2": tf.Qwen2Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, max_position_embeddings=64, **common,
        ),
        "gpt_neox": tf.GPTNeoXConfig(
            hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=64, **common,
        ),
        "bert": tf.BertConfig(
            hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=64, **common,
        ),
        # The families of issue 11. Soft caps and windows are small enough to bind on 7-token inputs
        # of random weights (a missed tanh or window fails the identities); head_dim 8 = d_model / heads.
        "gemma2": tf.Gemma2Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=6, attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0, sliding_window=3, max_position_embeddings=64,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], **common,
        ),
        "gemma3_text": tf.Gemma3TextConfig(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=6, sliding_window=3,
            max_position_embeddings=64, final_logit_softcapping=3.0,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], **common,
        ),
        "gemma3": tf.Gemma3Config(  # the multimodal wrapper (Gemma3ForConditionalGeneration), a tiny vision tower
            text_config=dict(
                hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=6, sliding_window=3,
                max_position_embeddings=64, layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                vocab_size=VOCAB,
            ),
            vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                               image_size=16, patch_size=8),
            mm_tokens_per_image=4, image_token_index=VOCAB - 1, boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2,
            **{k: v for k, v in common.items() if k != "vocab_size"},
        ),
        "qwen3": tf.Qwen3Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, use_sliding_window=True,
            sliding_window=3, max_window_layers=1, tie_word_embeddings=True, **common,
        ),
        "phi3": tf.Phi3Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=64,
            sliding_window=4, **common,
        ),
        "olmo2": tf.Olmo2Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
        ),
        "smollm3": tf.SmolLM3Config(
            hidden_size=D_MODEL, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, no_rope_layers=[1, 0, 1],
            tie_word_embeddings=True, **common,
        ),
    }


TINY_FAMILIES = list(_tiny_configs())
#: The families added by issue 11 (in TINY_FAMILIES too), for tests that pick them out.
NEW_FAMILIES = ["gemma2", "gemma3_text", "gemma3", "qwen3", "phi3", "olmo2", "smollm3"]


def make_tiny_model(family: str, seed: int = 0):
    """A random-weight model of ``family`` built from a config (no download), in eval mode, float64."""
    config = _tiny_configs()[family]
    torch.manual_seed(seed)
    cls = tf.BertForMaskedLM if family == "bert" else tf.AutoModelForCausalLM
    model = cls.from_config(config) if family != "bert" else cls(config)
    model = model.double().eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 200_000, f"tiny {family} model has {n_params} parameters: a config field is misspelt"
    return model


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request):
    """(family, model, view) for each supported family."""
    model = make_tiny_model(request.param)
    return request.param, model, ModelView(model)


@pytest.fixture(scope="session")
def smollm():
    """The embedded default model (SmolLM2-135M-Instruct) and its tokenizer."""
    return load_model("smollm2-135m")


# ---- quick book build --------------------------------------------------------------------------


def _book_builder():
    """``book/build.py``, the builder behind ``make book`` (tooling, not part of the library)."""
    spec = importlib.util.spec_from_file_location("lmscope_book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


book = _book_builder()

# One quick-profile build of the whole book per test session, shared by test_book.py and
# test_browser.py. LMSCOPE_QUICK_BOOK=DIR reuses (or creates once) a build in DIR instead.


@pytest.fixture(scope="session")
def quick_book(tmp_path_factory):
    """Every available chapter run with ``profile=quick``; a namespace (html, chapters, names)."""
    import os
    from pathlib import Path
    from types import SimpleNamespace

    from lmscope import DEFAULT_MODEL

    reuse = os.environ.get("LMSCOPE_QUICK_BOOK")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("quick_book")
    names = book.available_chapters()
    result = SimpleNamespace(html=root / "html", chapters=root / "chapters", names=names)
    if not (reuse and (result.html / "index.html").exists()):
        book.build(DEFAULT_MODEL, "quick", names=names, chapters=result.chapters, output=result.html)
    return result


# ---- end quick book build -------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma():
    """The second embedded model (Gemma 3 270M, ``gemma3_text``) and its tokenizer; mark users slow."""
    return load_model("gemma-3-270m")
