"""ICL vs GD: tasks and prompts, metrics on hand-built vectors, whole runs on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from lmscope import ModelView
from lmscope.icl.tasks import (
    BUILTIN_TASKS,
    Example,
    PromptBuilder,
    Task,
    get_task,
    load_task_file,
)
from lmscope.icl.study import (
    random_sim_aou,
    rec2ftp,
    record_run,
    run_task,
    sim_am,
    sim_am_delta,
    sim_aou,
    similarity_table,
    untrained_model,
)


class CharTokenizer:
    """A tiny stand-in tokenizer: one token per character (ids 3..96), BOS 1. Empty text -> no tokens."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=False):
        class Out:
            input_ids = [3 + ord(c) % 94 for c in text]

        return Out()


def _small_task(n=30, n_test=10, **kw) -> Task:
    words = ["ab", "cd", "ef", "gh"]
    examples = tuple(Example(f"x{i}", words[i % 4]) for i in range(n))
    return Task("toy", examples, "I:", "\nO:", label_words=tuple(words), n_test=n_test, separator="\n", **kw)


# -- tasks and prompts ------------------------------------------------------------------------


def test_builtin_tasks_have_test_set_and_pool():
    assert len(BUILTIN_TASKS) >= 4
    kinds = set()
    for name in BUILTIN_TASKS:
        task = get_task(name)
        assert len(task.test_set) >= 100 and len(task.pool) >= 32, name
        assert not set(task.test_set) & set(task.pool)
        assert len({e.input for e in task.examples}) == len(task.examples), f"{name}: duplicate inputs"
        kinds.add(task.is_classification)
        opts, answer = task.options(task.test_set[0])
        assert opts[answer] == task.test_set[0].label and len(set(opts)) == len(opts)
    assert kinds == {True, False}


def test_demonstrations_are_seeded_and_bounded():
    task = get_task("antonyms")
    assert task.demonstrations(8, 0) == task.demonstrations(8, 0)
    assert task.demonstrations(8, 0) != task.demonstrations(8, 1)
    with pytest.raises(ValueError, match=r"only \d+ in its demonstration pool"):
        task.demonstrations(len(task.pool) + 1, 0)


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="Unknown task 'nope'.*antonyms"):
        get_task("nope")


def test_prompt_spans_are_exact():
    task = _small_task()
    tok = CharTokenizer()
    b = PromptBuilder(task, tok)
    ex = task.test_set[0]
    demos = task.demonstrations(3, 0)
    p = b.prompt(ex, demos)
    s, e = p.input_span
    assert p.ids[s:e] == tok(" " + ex.input).input_ids
    assert p.ids[: 1] == [1] and p.ids[e:] == tok("\nO:").input_ids
    assert p.options[p.answer] == tok(" " + ex.label).input_ids
    ids, label_pos = b.training_sequence(demos[0])
    assert [ids[i] for i in label_pos] == tok(" " + demos[0].label).input_ids


def test_label_words_that_tokenize_to_nothing():
    task = Task("bad", tuple(Example(f"x{i}", ["yes", " "][i % 2]) for i in range(20)), label_words=("yes", " "),
                n_test=5)
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        PromptBuilder(task, CharTokenizer())


def test_k_too_large_for_the_context_says_how_many_fit():
    task = _small_task()
    b = PromptBuilder(task, CharTokenizer(), max_positions=64)
    ex = task.test_set[0]
    demos = task.demonstrations(8, 0)
    fit = b.max_fitting_k(ex, demos)
    assert 0 < fit < 8
    with pytest.raises(ValueError, match=f"at most {fit} of these demonstrations fit"):
        b.prompt(ex, demos)
    assert len(b.prompt(ex, demos[:fit]).ids) <= 64


def test_csv_and_jsonl_give_the_same_task(tmp_path):
    rows = [{"text": f"sentence {i}", "y": i % 2} for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.csv").write_text("text,y\n" + "\n".join(f"{r['text']},{r['y']}" for r in rows))
    kw = dict(input_fields="text", label_field="y", label_words=("bad", "good"), n_test=20, name="d")
    a, b = load_task_file(tmp_path / "d.jsonl", **kw), load_task_file(tmp_path / "d.csv", **kw)
    assert a == b and a.label_words == ("bad", "good") and a.examples[1].label == "good"
    with pytest.raises(ValueError, match="no field"):
        load_task_file(tmp_path / "d.csv", input_fields="sentence", label_field="y")
    with pytest.raises(ValueError, match="does not exist"):
        load_task_file(tmp_path / "missing.csv")


def test_hf_tasks_need_datasets_or_say_so():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install datasets"):
            get_task("sst2")


# -- metrics ----------------------------------------------------------------------------------


def test_sim_aou_on_hand_built_vectors():
    e1, e2, e3 = torch.eye(3)
    assert sim_aou(e1, e2, e2).item() == pytest.approx(1.0)
    assert sim_aou(e1, e2, 5 * e2).item() == pytest.approx(1.0)  # outputs are L2-normalised first
    assert sim_aou(e1, e2, e3).item() == pytest.approx(0.5)  # updates (-1, 1, 0) and (-1, 0, 1)
    assert sim_aou(e1, e2, -e2).item() == pytest.approx(0.0)  # updates (-1, 1, 0) and (-1, -1, 0)
    assert sim_aou(e1, e2, e1).item() == 0.0  # no finetuning update: 0, not nan
    # brute force: normalise, subtract, cosine
    g = torch.Generator().manual_seed(0)
    z, i, f = (torch.randn(4, 7, generator=g, dtype=torch.float64) for _ in range(3))
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    a, b = n(i) - n(z), n(f) - n(z)
    torch.testing.assert_close(sim_aou(z, i, f), (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))


def test_random_baseline_is_small_for_zero_mean_updates():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(2000, 576, generator=g)
    icl = zs + 0.1 * torch.randn(2000, 576, generator=g)
    r = random_sim_aou(zs, icl, torch.Generator().manual_seed(1))
    assert r.shape == (2000,) and abs(r.mean().item()) < 0.01


def test_sim_am_delta_and_sim_am_average_over_heads():
    zs = torch.zeros(2, 3)  # (heads, input tokens)
    icl = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ft = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # head 0 aligned (1), head 1 orthogonal (0)
    assert sim_am_delta(zs, icl, ft).item() == pytest.approx(0.5)
    assert sim_am(icl, ft).item() == pytest.approx(0.5)
    assert sim_am_delta(zs + 3, icl + 3, ft + 3).item() == pytest.approx(0.5)  # only differences count


def test_rec2ftp_counts_by_hand():
    zs = [1, 0, 0, 0, 0]
    icl = [1, 1, 0, 1, 0]
    ft = [0, 1, 1, 1, 0]  # FT fixes examples 1, 2, 3; ICL also gets 1 and 3 right
    assert rec2ftp(zs, icl, ft) == pytest.approx(2 / 3)
    assert math.isnan(rec2ftp([1, 1], [1, 1], [1, 0]))


# -- whole runs on a tiny model ---------------------------------------------------------------


def _tiny_run(view, seeds=(0,), lr=0.05, **kw):
    return run_task(view, CharTokenizer(), _small_task(), k=3, seeds=seeds, lr=lr, n_test=4, **kw)


def test_run_task_records_and_restores_weights():
    view = ModelView(make_tiny_model("llama"))
    state = {k: v.clone() for k, v in view.model.state_dict().items()}
    res = _tiny_run(view, seeds=(0, 1))
    for k, v in view.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    s = res.seeds[0]
    L = view.cfg.n_layers
    for m in ("gd", "lcgd"):
        assert s.sim_aou[m].shape == (4, L) and s.sim_am_delta[m].shape == (4, L)
        assert np.all(np.abs(s.sim_aou[m]) <= 1 + 1e-9)
        assert len(s.losses[m]) == 3
    assert s.random_sim_aou.shape == (4, L)
    assert set(s.correct) == {"zs", "icl", "gd", "lcgd"}
    assert "toy (ours)" in similarity_table({"toy": res})
    assert view.model.config._attn_implementation != "lmscope_eager"


def test_runs_repeat_exactly_with_the_same_seed():
    view = ModelView(make_tiny_model("llama"))
    a, b = _tiny_run(view), _tiny_run(view)
    for m in ("gd", "lcgd"):
        np.testing.assert_array_equal(a.seeds[0].sim_aou[m], b.seeds[0].sim_aou[m])
        np.testing.assert_array_equal(a.seeds[0].sim_am_delta[m], b.seeds[0].sim_am_delta[m])
    np.testing.assert_array_equal(a.seeds[0].random_sim_aou, b.seeds[0].random_sim_aou)


def test_record_run_scores_only_cover_the_test_input():
    view = ModelView(make_tiny_model("llama"))
    task = _small_task()
    b = PromptBuilder(task, CharTokenizer())
    p = b.prompt(task.test_set[0], task.demonstrations(2, 0))
    rec = record_run(view, p)
    s, e = p.input_span
    assert rec.scores.shape == (view.cfg.n_layers, view.cfg.n_heads, e - s)
    assert rec.attn_out.shape == (view.cfg.n_layers, view.cfg.d_model)
    names = [f"blocks.{l}.attn_out" for l in range(view.cfg.n_layers)]
    _, cache = view.run_with_cache(torch.tensor([p.ids]), names)
    for l, n in enumerate(names):
        torch.testing.assert_close(rec.attn_out[l], cache[n][0, -1].float())
    # option scores: mean label log-probability by brute force
    for i, opt in enumerate(p.options):
        with torch.no_grad():
            logp = view.model(input_ids=torch.tensor([p.ids + opt])).logits[0].log_softmax(-1)
        ref = torch.stack([logp[len(p.ids) - 1 + j, t] for j, t in enumerate(opt)]).mean()
        assert rec.logprobs[i].item() == pytest.approx(ref.item(), abs=1e-6)


def test_non_finite_loss_is_a_reported_skip():
    view = ModelView(make_tiny_model("llama"))
    res = _tiny_run(view, lr=1e200)
    assert set(res.seeds[0].skipped) == {"gd", "lcgd"}
    assert "Lower the learning rate" in res.skipped[0]
    assert math.isnan(res.summary("sim_aou", "gd")[0])


def test_bad_study_input():
    view = ModelView(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="loss_on"):
        _tiny_run(view, loss_on="everything")
    with pytest.raises(ValueError, match="Unknown methods"):
        _tiny_run(view, methods=("adam",))
    with pytest.raises(ValueError, match="at most"):
        run_task(view, CharTokenizer(), _small_task(), k=15, seeds=(0,), n_test=2)  # context is 64


def test_untrained_control_keeps_embeddings_and_norms():
    model = make_tiny_model("llama")
    rand = untrained_model(model, seed=0)
    a, b = model.state_dict(), rand.state_dict()
    for k in a:
        same = torch.equal(a[k], b[k])
        if "norm" in k or "embed" in k or "lm_head" in k:
            assert same, k
        elif k.endswith("weight") and "layers" in k:
            assert not same, k
    assert model.model.layers[0].self_attn.k_proj.weight.std() != rand.model.layers[0].self_attn.k_proj.weight.std()


@pytest.mark.slow
def test_embedded_model_learns_antonyms_in_context(smollm):
    model, tok = smollm
    view = ModelView(model)
    res = run_task(view, tok, "antonyms", k=8, seeds=(0,), n_test=12, methods=("gd",))
    assert res.accuracy("icl")[0] >= 0.8
    assert res.accuracy("icl")[0] >= res.accuracy("zs")[0]


def test_widget_layer_similarities_and_explorer():
    import matplotlib

    matplotlib.use("Agg")
    from lmscope.icl.widgets import icl_vs_gd_explorer, layer_similarities

    view = ModelView(make_tiny_model("llama"))
    res = _tiny_run(view)
    sims = layer_similarities(res, 1)
    assert sims["sim_aou"]["gd"] == pytest.approx(res.seeds[0].sim_aou["gd"][:, 1].mean())
    assert sims["sim_am_delta"]["lcgd"] == pytest.approx(res.seeds[0].sim_am_delta["lcgd"][:, 1].mean())
    box = icl_vs_gd_explorer(view, CharTokenizer(), {"toy": res}, tasks=[_small_task()], ks=(3,))
    assert len(box.children) == 2
