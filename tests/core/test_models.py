"""Model access: embedded models, GGUF files, local folders, dispatch, and clear errors for bad input."""

import gguf
import numpy as np
import pytest
import torch
import transformers as tf
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lmscope import ModelView, load_model
from lmscope.core import models
from lmscope.core.models import EMBEDDED_MODELS, ModelLoadError, embedded_gguf_path


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


def test_device_map_auto_passes_through(tiny_folder):
    folder, original = tiny_folder
    model, tok = load_model(str(folder), device_map="auto")
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # one device here: placed, not split
    ids = tok("hello world", return_tensors="pt").input_ids
    torch.testing.assert_close(model(input_ids=ids).logits, original.eval()(input_ids=ids).logits)
    with pytest.raises(ModelLoadError, match="device= .*device_map="):
        load_model(str(folder), device="cpu", device_map="auto")


# -- bad local input: each names what is missing and the fix -----------------------------------------
def test_pickle_only_folder_is_refused(tiny_folder):
    folder, model = tiny_folder
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match="pickled.*pytorch_model.bin.*Convert them to safetensors"):
        load_model(str(folder))


def test_folder_without_config_is_refused(tiny_folder):
    folder, _ = tiny_folder
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json.*save_pretrained"):
        load_model(str(folder))
    (folder / "model.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"no config.json.*model.gguf: pass that file"):
        load_model(str(folder))


def test_folder_without_weights_is_refused(tiny_folder):
    folder, _ = tiny_folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights \(\*.safetensors\).*save_pretrained"):
        load_model(str(folder))


def test_weights_without_tokenizer_files_are_refused(tiny_folder):
    folder, original = tiny_folder
    tokenizer_folder = folder.parent / "tokenizer-only"
    tokenizer_folder.mkdir()
    for name in models.TOKENIZER_FILES + ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            (folder / name).rename(tokenizer_folder / name)
    with pytest.raises(ModelLoadError, match=r"no tokenizer files \(one of tokenizer.json.*tokenizer="):
        load_model(str(folder))
    model, tok = load_model(str(folder), tokenizer=str(tokenizer_folder))  # the fix the message names
    ids = tok("hello world", return_tensors="pt").input_ids
    torch.testing.assert_close(model(input_ids=ids).logits, original.eval()(input_ids=ids).logits)


def test_unknown_name_offline_points_to_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'no-such/model'.*unreachable.*smollm2-135m"):
        load_model("no-such/model")


def test_unsupported_architecture_lists_families_and_how_to_add_one(tmp_path):
    config = tf.OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, vocab_size=50,
                          word_embed_proj_dim=16)
    config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the architecture is checked first
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"'opt'.*Supported families: bert, .*gpt2, .*llama.*Adding a family"):
        load_model(str(tmp_path))


def test_missing_or_unreadable_gguf_file(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file .*nope.gguf' does not exist"):
        load_model(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="transformers cannot read the GGUF"):
        load_model(str(bad), tokenizer=None)


# -- any GGUF file: dequantized once, cached ---------------------------------------------------------
def _write_llama_gguf(model: tf.LlamaForCausalLM, path) -> None:
    """Write ``model`` as a float32 GGUF (llama.cpp's tensor names and Q/K row order) with a tiny BPE."""
    cfg = model.config
    merges = ["Ġ t", "h e", "Ġ w"]
    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in merges] + ["<|endoftext|>"]
    assert len(tokens) == cfg.vocab_size
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def permute(x: np.ndarray, n: int) -> np.ndarray:  # llama.cpp interleaves the rotary halves
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        for ours, theirs in names.items():
            w.add_tensor(f"blk.{i}.{ours}.weight", sd[p + theirs + ".weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_any_gguf_file_loads_exactly_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    config = tf.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=260, max_position_embeddings=64,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    original = tf.LlamaForCausalLM(config).eval()
    file = tmp_path / "my-model.gguf"
    _write_llama_gguf(original, file)

    model, tok = load_model(str(file))
    ids = tok("hello the world", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "hello the world"
    torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits, rtol=0, atol=1e-6)
    cached = list((tmp_path / "cache" / "models" / "gguf").glob("my-model-*/model.safetensors"))
    assert len(cached) == 1
    assert ModelView(model).name == "my-model.gguf"

    def no_second_dequantization(*args):
        raise AssertionError("the cached folder should have been read")

    monkeypatch.setattr(models, "_dequantize", no_second_dequantization)
    again, _ = load_model(str(file))
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


# -- embedded models -------------------------------------------------------------------------------
def test_embedded_gguf_is_found():
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50e6


def test_chunked_gguf_is_assembled_and_checked(tmp_path):
    entry = EMBEDDED_MODELS["gemma-3-270m"]
    path = embedded_gguf_path("gemma-3-270m", tmp_path / entry.filename)
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size > 200e6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_unknown_embedded_name():
    with pytest.raises(ModelLoadError, match="not an embedded model; embedded: smollm2-135m, gemma-3-270m"):
        embedded_gguf_path("smollm3")


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


@pytest.mark.slow
def test_gemma_is_cached_and_reads_like_its_card(gemma):
    from lmscope.core.models import cache_dir

    model, tok = gemma
    assert (cache_dir() / "models" / "gemma-3-270m" / "model.safetensors").exists()
    assert not list((cache_dir() / "models" / "gemma-3-270m").glob("*.gguf"))  # the joined GGUF is removed
    cfg = ModelView(model).cfg
    assert (cfg.model_type, cfg.n_layers, cfg.d_model, cfg.d_vocab) == ("gemma3_text", 18, 640, 262144)
    assert len(tok) == 262144
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0] == tok.bos_token_id == 2  # Gemma's tokenizer starts with <bos>
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
        back = model(input_ids=tok("Paris is the capital of", return_tensors="pt").input_ids).logits[0, -1]
    assert "Paris" in [tok.decode(int(i)).strip() for i in logits.topk(5).indices]  # 3rd after " the", " a"
    assert tok.decode(int(back.argmax())) == " France"
