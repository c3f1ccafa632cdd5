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
