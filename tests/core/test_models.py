"""Model access: embedded default, local folders, and clear errors for bad input."""

import pytest
import torch
import transformers as tf

from lmscope import ModelView, load_model
from lmscope.core.models import ModelLoadError, embedded_gguf_path


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny Llama saved as safetensors with a real tokenizer (the embedded model's)."""
    from lmscope.core.models import _embedded_model_path

    tok = tf.AutoTokenizer.from_pretrained(_embedded_model_path("smollm2-135m"))
    config = tf.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                            vocab_size=len(tok), max_position_embeddings=64)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder, model


def test_local_safetensors_folder_loads(tiny_folder):
    folder, original = tiny_folder
    model, tok = load_model(str(folder))
    ids = tok("hello world", return_tensors="pt").input_ids
    torch.testing.assert_close(model(input_ids=ids).logits, original.eval()(input_ids=ids).logits)
    assert not model.training
    assert ModelView(model).name == "tiny-llama"  # the name it was loaded by, made file-safe


def test_pickle_only_folder_is_refused(tiny_folder):
    folder, model = tiny_folder
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match="pickled.*safetensors"):
        load_model(str(folder))


def test_unknown_name_offline_points_to_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'no-such/model'.*unreachable.*smollm2-135m"):
        load_model("no-such/model")


def test_unsupported_architecture_lists_families(tmp_path):
    config = tf.OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, vocab_size=50,
                          word_embed_proj_dim=16)
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'opt'.*Supported families: bert, gpt2, gpt_neox, llama"):
        load_model(str(tmp_path))


def test_embedded_gguf_is_found():
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50e6


@pytest.mark.slow
def test_embedded_model_is_cached_as_safetensors(smollm, tmp_path):
    from lmscope.core.models import cache_dir

    model, tok = smollm
    folder = cache_dir() / "models" / "smollm2-135m"
    assert (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.bin"))
    assert ModelView(model).cfg.n_layers == 30
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
