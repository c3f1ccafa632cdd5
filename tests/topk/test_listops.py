"""lmscope.topk.listops: the synthetic task and its classifier."""

import torch


def test_listops_values_and_training_step():
    import random

    from lmscope.topk import listops

    rng = random.Random(0)
    for _ in range(100):
        tokens, value = listops.random_expression(rng, 4, 5)
        assert listops.evaluate(tokens) == value
    assert listops.evaluate(["[MED", "3", "9", "1", "]"]) == 3
    assert listops.evaluate(["[SM", "7", "[MAX", "2", "8", "]", "]"]) == 5
    data = listops.make_dataset(64, max_len=32)
    assert data.tokens.shape == (64, 32) and (data.tokens[:, 0] == listops.CLS).all()
    for k in (None, 4):
        torch.manual_seed(0)
        net = listops.ListOpsModel(max_len=32, d_model=16, n_heads=2, n_layers=1, topk=k)
        hist = listops.train(net, data, data, steps=2, batch_size=8, eval_every=1)
        assert len(hist) == 2 and 0 <= hist[-1]["test_acc"] <= 1


def test_vanilla_vs_topk_trains_both_and_reads_them_back(tmp_path, monkeypatch):
    """The chapter's two runs: trained once, then read from the cache, or from a saved run, with the same curves."""
    import shutil

    from lmscope.topk import listops

    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    sizes = dict(max_len=24, n_train=64, n_test=32, steps=4, topk=4)
    first = listops.vanilla_vs_topk(**sizes, folders=[])
    assert first.source == "trained" and set(first.curves) == {"vanilla", "top-4"}
    assert [r["step"] for r in first.curves["top-4"]] == [1, 2, 3, 4]
    assert all(0 <= r["test_acc"] <= 1 for h in first.curves.values() for r in h) and 0 < first.majority <= 1
    again = listops.vanilla_vs_topk(**sizes, folders=[])
    assert again.source == "cache" and again.curves == first.curves and again.seconds == first.seconds
    key = listops.runs_key(sizes)
    (tmp_path / "results").mkdir()
    shutil.move(tmp_path / "cache" / "listops" / f"{key}.json", tmp_path / "results" / f"listops_{key}.json")
    saved = listops.vanilla_vs_topk(**sizes, folders=[tmp_path / "results"])
    assert saved.source == f"saved run listops_{key}.json" and saved.curves == first.curves
    assert listops.vanilla_vs_topk(**sizes, folders=[tmp_path / "results"], saved=False, cache=False).curves == first.curves
    other = listops.vanilla_vs_topk(**{**sizes, "steps": 2}, folders=[tmp_path / "results"])
    assert other.source == "trained" and len(other.curves["vanilla"]) == 2 and listops.runs_key({**sizes, "steps": 2}) != key
