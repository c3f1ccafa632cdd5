"""lmscope.topk.lengths: per-token loss, position bins, keep-first top-k, dropped mass, the length sweep."""

import math

import pytest
import torch
from conftest import make_tiny_model

from lmscope import ModelView, hook_name
from lmscope.topk.dropin import use_topk_attention
from lmscope.topk.lengths import (dropped_mass, keep_first_scores, keep_first_topk, length_sweep, position_bins,
                                  relative_change, token_nll)
from lmscope.topk.patterns import keep_topk_scores


def _blocks(n, length, seed=0):
    return torch.randint(3, 97, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dense_rows_equal_the_models_own_loss_and_k_covering_the_length_equals_dense(family):
    view = ModelView(make_tiny_model(family))
    blocks = {8: _blocks(3, 8), 16: _blocks(2, 16, seed=1)}
    rows = length_sweep(view, blocks, ks=[16, 2])
    for length, ids in blocks.items():
        with torch.no_grad():  # HF's own loss
            own = torch.stack([view.model(input_ids=b[None], labels=b[None]).loss for b in ids]).mean()
        dense = [r for r in rows if r["length"] == length and r["mode"] == "dense"][0]
        assert dense["nll"] == pytest.approx(float(own), rel=1e-6)
        assert dense["ppl"] == pytest.approx(math.exp(float(own)), rel=1e-6)
        full = [r for r in rows if r["length"] == length and r["k"] == 16][0]
        assert full["ppl"] == pytest.approx(dense["ppl"], rel=1e-9)  # k >= length: exact attention
        assert relative_change(rows, length, 16) == pytest.approx(0, abs=1e-9)
        assert relative_change(rows, length, 2) != pytest.approx(0, abs=1e-6)
        assert full["fraction"] == 16 / length
    assert relative_change(rows, 8, 99) is None


def test_position_bins_double_and_average_to_the_whole():
    nll = torch.rand(3, 20, dtype=torch.float64)
    bins = position_bins(nll)
    assert [(b["start"], b["stop"]) for b in bins] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 20)]
    assert sum(b["count"] for b in bins) == nll.numel()
    assert sum(b["nll"] * b["count"] for b in bins) / nll.numel() == pytest.approx(float(nll.mean()))
    assert bins[2]["nll"] == pytest.approx(float(nll[:, 2:4].mean()))


def test_top_k_changes_nothing_before_position_k():
    view = ModelView(make_tiny_model("llama"))
    ids = _blocks(1, 12)
    dense = token_nll(view, ids)
    with use_topk_attention(view, 4):
        topk = token_nll(view, ids)
    torch.testing.assert_close(topk[:, :4], dense[:, :4])  # queries 0..3 have at most 4 keys
    assert not torch.allclose(topk[:, 4:], dense[:, 4:])


def test_keep_first_scores_against_a_brute_force_reference():
    s = torch.randn(2, 3, 5, 9, dtype=torch.float64)
    for k in (1, 2, 4, 9, 12):
        out = keep_first_scores(s, k)
        neg = torch.finfo(s.dtype).min
        for row, ref in zip(out.reshape(-1, 9), s.reshape(-1, 9)):
            kept = {0} | set(torch.argsort(ref[1:], descending=True)[: k - 1].add(1).tolist())
            assert {j for j in range(9) if row[j] != neg} == (set(range(9)) if k >= 9 else kept)
            assert all(row[j] == ref[j] for j in kept)
    with pytest.raises(ValueError, match="k must be at least 1"):
        keep_first_scores(s, 0)


def test_keep_first_top_k_is_top_k_when_key_0_is_already_chosen_and_attends_to_key_0_alone_at_k_1():
    view = ModelView(make_tiny_model("llama"))
    ids = _blocks(1, 10)
    with keep_first_topk(view, 10):  # everything kept
        torch.testing.assert_close(token_nll(view, ids), token_nll(view, ids.clone()))
    only_first = {hook_name(l, "attn_scores"): (lambda s: keep_first_scores(s, 1))
                  for l in range(view.cfg.n_layers)}
    masked = {hook_name(l, "attn_scores"): (lambda s: torch.cat(
        [s[..., :1], torch.full_like(s[..., 1:], torch.finfo(s.dtype).min)], -1)) for l in range(view.cfg.n_layers)}
    with view.overwrite(masked):
        ref = token_nll(view, ids)
    with keep_first_topk(view, 1):
        torch.testing.assert_close(token_nll(view, ids), ref)
    with view.overwrite(only_first):
        torch.testing.assert_close(token_nll(view, ids), ref)
    with pytest.raises(ValueError, match="positive int"):
        keep_first_topk(view, 0).__enter__()


def test_keep_first_differs_from_plain_top_k_only_by_key_0():
    s = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    s[..., 0] = 10.0  # key 0 is always among the best: keep-first = plain top-k
    assert torch.equal(keep_first_scores(s, 3), keep_topk_scores(s, 3))


def test_dropped_mass_against_the_captured_pattern():
    view = ModelView(make_tiny_model("gpt2"))
    ids = _blocks(2, 10)
    mass = dropped_mass(view, ids, [1, 3, 10])
    assert mass[10] == pytest.approx([0.0] * view.cfg.n_layers, abs=1e-12)
    for layer in range(view.cfg.n_layers):
        name = hook_name(layer, "attn_scores")
        drops = []
        for b in ids:
            with view.capture([name]) as cache:
                view.model(input_ids=b[None])
            p = torch.softmax(cache[name].double(), -1)  # (1, H, T, T)
            drops.append(1 - p.max(-1).values)
        assert mass[1][layer] == pytest.approx(float(torch.cat(drops).mean()), rel=1e-6)
        assert 0 < mass[3][layer] < mass[1][layer]
    with pytest.raises(ValueError, match="ks must be positive"):
        dropped_mass(view, ids, [])


def test_sweep_rows_keep_first_and_mass_only_up_to_their_lengths_and_call_on_row():
    view = ModelView(make_tiny_model("llama"))
    seen = []
    rows = length_sweep(view, {6: _blocks(1, 6), 12: _blocks(1, 12)}, ks=[2], first_ks=[2], first_max_len=6,
                        mass_ks=[2], mass_max_len=6, on_row=seen.append)
    assert [(r["length"], r["mode"], r["k"]) for r in rows] == [
        (6, "dense", None), (6, "attention", 2), (6, "attention+first", 2), (6, "dropped mass", 2),
        (12, "dense", None), (12, "attention", 2)]
    assert seen == rows
    with pytest.raises(ValueError, match="need"):
        length_sweep(view, {6: _blocks(1, 7)}, ks=[2])
    only = length_sweep(view, {6: _blocks(1, 6), 12: _blocks(1, 12)}, ks=[2], first_ks=[2], first_max_len=6,
                        mass_ks=[2], mass_max_len=6, loss=False)  # mass rows alone, as the full run gave them
    assert [(r["mode"], r["k"]) for r in only] == [("dropped mass", 2)]
    assert only[0]["per_layer"] == rows[3]["per_layer"]


@pytest.mark.slow
def test_main_writes_every_row_and_appends(smollm, tmp_path):
    import json

    from lmscope.topk.lengths import main

    out = tmp_path / "sweep.json"
    main(["--lengths", "16", "--tokens", "32", "--ks", "4", "--first-ks", "4", "--mass-ks", "4", "--out", str(out)])
    first = json.loads(out.read_text())
    assert [(r["length"], r["n_blocks"], r["mode"], r["k"]) for r in first["rows"]] == [
        (16, 2, "dense", None), (16, 2, "attention", 4), (16, 2, "attention+first", 4), (16, 2, "dropped mass", 4)]
    assert first["model"] == ModelView(smollm[0]).name
    main(["--lengths", "8", "--tokens", "8", "--ks", "", "--first-ks", "", "--mass-ks", "", "--out", str(out), "--append"])
    rows = json.loads(out.read_text())["rows"]
    assert rows[:4] == first["rows"] and [(r["length"], r["mode"]) for r in rows[4:]] == [(8, "dense")]
