"""The projection index equals brute-force top-k, is chunk-independent, and round-trips the cache."""

import numpy as np
import pytest
import safetensors.torch
import torch

from lmscope import ModelView
from lmscope.embedding.index import INDEX_GROUPS, ProjectionIndex, blocked_topk, weights_fingerprint
from lmscope.embedding.projection import group_vectors

from conftest import make_tiny_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    return tmp_path


def _brute_force(view, group, k, negative=False):
    W_U = view.W_U.detach().float() * (-1 if negative else 1)
    rows = torch.stack([group_vectors(view, l, group).detach().float() for l in range(view.cfg.n_layers)])
    return torch.topk(rows @ W_U, k, dim=-1)  # (L, d_ff, k)


@pytest.mark.parametrize("group", ["ff_values", "ff_keys"])
def test_index_equals_brute_force(tiny, group):
    _, _, view = tiny
    index = ProjectionIndex.compute(view, k=7, group=group, chunk_size=5)  # chunks that do not divide d_ff
    top = _brute_force(view, group, 7)
    assert index.ids.shape == (view.cfg.n_layers, view.cfg.d_ff, 7)
    assert torch.equal(index.ids, top.indices)
    torch.testing.assert_close(index.scores, top.values)
    ids, scores = index.top_tokens(2, 3)
    assert torch.equal(ids, top.indices[2, 3]) and torch.all(scores[:-1] >= scores[1:])


def test_hand_checked_tiny_case():
    """Two units, three tokens, by hand: value (1, 0) scores the tokens by W_U's first row."""
    model = make_tiny_model("gpt2")
    view = ModelView(model)
    with torch.no_grad():
        view.model.transformer.wte.weight.zero_()
        view.model.transformer.wte.weight[5, 0] = 2.0  # token 5 scores 2 on axis 0
        view.model.transformer.wte.weight[9, 0] = 1.0  # token 9 scores 1 on axis 0
        view.model.transformer.wte.weight[7, 1] = 3.0  # token 7 scores 3 on axis 1
        view.layers[0].ff_values.zero_()
        view.layers[0].ff_values[0, 0] = 1.0
        view.layers[0].ff_values[1, 1] = -1.0
    index = ProjectionIndex.compute(view, k=2)
    ids, scores = index.top_tokens(0, 0)
    assert ids.tolist() == [5, 9] and scores.tolist() == [2.0, 1.0]
    neg = ProjectionIndex.compute(view, k=1, negative=True)
    assert neg.top_tokens(0, 1)[0].tolist() == [7] and neg.top_tokens(0, 1)[1].tolist() == [3.0]


def test_gate_keys_for_gated_models():
    view = ModelView(make_tiny_model("llama"))
    index = ProjectionIndex.compute(view, k=3, group="ff_gate_keys")
    assert torch.equal(index.ids, _brute_force(view, "ff_gate_keys", 3).indices)
    with pytest.raises(ValueError, match="gated MLP"):
        ProjectionIndex.compute(ModelView(make_tiny_model("gpt2")), group="ff_gate_keys")


def test_cache_round_trip(cache):
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(FileNotFoundError, match="ProjectionIndex.build"):
        ProjectionIndex.load(view, k=10)
    built = ProjectionIndex.build(view, k=10)
    path = ProjectionIndex.cache_path(view, k=10)
    assert path.exists() and path.suffix == ".safetensors" and str(path).startswith(str(cache))
    loaded = ProjectionIndex.load(view, k=10)
    assert torch.equal(loaded.ids, built.ids) and torch.equal(loaded.scores, built.scores)
    assert loaded.group == "ff_values" and loaded.negative is False and loaded.fingerprint == built.fingerprint
    # a different k, group or sign is a different file; changed weights a different folder
    assert ProjectionIndex.cache_path(view, k=5) != path
    assert ProjectionIndex.cache_path(view, k=10, negative=True) != path
    other = ModelView(make_tiny_model("llama", seed=1))
    assert weights_fingerprint(other, "ff_values") != weights_fingerprint(view, "ff_values")
    with pytest.raises(FileNotFoundError):
        ProjectionIndex.load(other, k=10)


def test_cache_file_names_and_metadata(cache):
    """One file per group, named by the projection's group names; the metadata says which."""
    view = ModelView(make_tiny_model("llama"))
    paths = {g: ProjectionIndex.cache_path(view, k=3, group=g) for g in INDEX_GROUPS}
    assert [p.name for p in paths.values()] == ["ff_values-k3.safetensors", "ff_keys-k3.safetensors",
                                                "ff_gate_keys-k3.safetensors"]
    assert paths["ff_values"].parent.name.startswith(view.name + "-")
    keys = ProjectionIndex.build(view, k=3, group="ff_keys", negative=True)
    loaded = ProjectionIndex.from_file(ProjectionIndex.cache_path(view, k=3, group="ff_keys", negative=True))
    assert (loaded.group, loaded.negative, loaded.model_name) == ("ff_keys", True, view.name)
    assert torch.equal(loaded.ids, keys.ids)
    old = cache / "old.safetensors"  # an index of the previous format
    safetensors.torch.save_file({"ids": keys.ids.int(), "scores": keys.scores}, str(old),
                                metadata={"format_version": "1", "kind": "keys", "negative": "true"})
    with pytest.raises(ValueError, match="rebuild it"):
        ProjectionIndex.from_file(old)


def test_build_reuses_the_cache(cache, monkeypatch):
    view = ModelView(make_tiny_model("gpt2"))
    ProjectionIndex.build(view, k=4)
    monkeypatch.setattr(ProjectionIndex, "compute", classmethod(lambda *a, **kw: pytest.fail("recomputed")))
    assert ProjectionIndex.build(view, k=4).k == 4


def test_units_with_token():
    view = ModelView(make_tiny_model("gpt2"))
    index = ProjectionIndex.compute(view, k=5)
    token = int(index.ids[1, 2, 0])
    hits = index.units_with_token(token)
    assert [1, 2, 0] in hits.tolist()
    assert all(int(index.ids[l, u, r]) == token for l, u, r in hits.tolist())
    assert torch.all(hits[:-1, 2] <= hits[1:, 2]), "sorted by rank"


def test_bad_input():
    view = ModelView(make_tiny_model("gpt2"))
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        ProjectionIndex.compute(view, k=view.cfg.d_vocab + 1)
    with pytest.raises(ValueError, match="Unknown index group"):
        ProjectionIndex.compute(view, group="W_Q")
    index = ProjectionIndex.compute(view, k=3)
    with pytest.raises(IndexError, match="Layer 3 does not exist"):
        index.top_tokens(3, 0)
    with pytest.raises(IndexError, match="Unit 999 does not exist"):
        index.top_tokens(0, 999)
    with pytest.raises(ValueError, match="top 3 tokens"):
        index.top_tokens(0, 0, k=4)
    assert index.top_tokens(np.int64(1), torch.tensor(2))[0].shape == (3,)


@pytest.mark.parametrize("m", [50, 97, 1000, 4099])
def test_blocked_topk_is_exact(m):
    S = torch.randn(33, m, generator=torch.Generator().manual_seed(m))
    vals, ids = blocked_topk(S, 7, block=8)
    top = torch.topk(S, 7, dim=1)
    assert torch.equal(vals, top.values) and torch.equal(ids, top.indices)
