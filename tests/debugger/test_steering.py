"""Case study 3: steering with searched values against random controls, and its figure."""

import numpy as np
import pytest
import torch
from debugger_helpers import WordTokenizer, n_hooks

from lmscope import ModelView
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention
from lmscope.debugger.search import ValueSearch
from lmscope.debugger.steering import (
    concept_ids,
    dose_response,
    lexicon_score,
    neutral_prompts,
    paired_effect,
    plot_steering,
    steering_experiment,
)
from lmscope.embedding.index import ProjectionIndex

WORDS = [" good", " great", " happy", " joy", " bad", " awful", " sad", " hate"]


def test_steering_helpers():
    assert len(neutral_prompts()) >= 50 and len(set(neutral_prompts())) == len(neutral_prompts())
    assert neutral_prompts(3) == neutral_prompts()[:3]
    with pytest.raises(ValueError, match="between 1 and 60"):
        neutral_prompts(61)
    assert lexicon_score("Great, a GREAT day; sadly the food was awful.") == 1
    assert lexicon_score("joy joy", positive=["joy"], negative=[]) == 2
    eff = paired_effect([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])
    assert eff["mean_diff"] == pytest.approx(2.0) and eff["ci_low"] <= 2.0 <= eff["ci_high"]
    assert eff["n"] == 4 and 0 < eff["p_wilcoxon"] <= 1
    assert paired_effect([1.0, 2.0], [1.0, 2.0])["p_wilcoxon"] == 1.0


@pytest.fixture
def steered(monkeypatch, tmp_path):
    """A tiny llama, a tokenizer whose first ids are sentiment words, and a search over its index."""
    from conftest import make_tiny_model

    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    model = make_tiny_model("llama")
    view = ModelView(model)
    tok = WordTokenizer(["<pad>", "<s>", "</s>"] + WORDS + [f" w{i}" for i in range(view.cfg.d_vocab - 3 - len(WORDS))])
    search = ValueSearch(ProjectionIndex.build(view, k=50), tok)
    return LMDebugger(view, tok), search


PROMPTS = [[12, 13, 14, 15], [20, 21], [30, 31, 32], [40, 41, 42, 43, 44]]
QUERY = "good, great, happy, joy"


def _mass(dbg, prompt, interventions, ids):
    return float(dbg.logits(prompt, interventions)[-1].softmax(-1)[ids].sum())


def test_steering_experiment_matches_single_prompt_runs(steered):
    dbg, search = steered
    pos = ["good", "great", "happy", "joy"]
    neg = ["bad", "awful", "sad", "hate"]
    result = steering_experiment(dbg, search, PROMPTS, QUERY, concept_words=pos, opposite_words=neg, n_values=3,
                                 n_random=2, n_tokens=3, scale=0.5, batch_size=3)
    assert result.conditions == ["clean", "searched", "random0", "random1"]
    assert result.values == [Intervention(h.layer, h.unit, "on", 0.5) for h in search.search(QUERY, limit=3)]
    for rnd in result.random_sets:
        assert [iv.layer for iv in rnd] == [iv.layer for iv in result.values]
        assert not {(iv.layer, iv.unit) for iv in rnd} & {(iv.layer, iv.unit) for iv in result.values}
    pos_ids, neg_ids = concept_ids(search, pos), concept_ids(search, neg)
    assert pos_ids == [3, 4, 5, 6] and neg_ids == [7, 8, 9, 10]
    conditions = {"clean": [], "searched": result.values, "random0": result.random_sets[0],
                  "random1": result.random_sets[1]}
    for name, ivs in conditions.items():
        for i, prompt in enumerate(PROMPTS):  # batches of 3 and 1, left-padded, against each prompt alone
            assert result.mass[name][i] == pytest.approx(_mass(dbg, prompt, ivs, pos_ids), rel=1e-6)
            assert result.opposite_mass[name][i] == pytest.approx(_mass(dbg, prompt, ivs, neg_ids), rel=1e-6)
    assert set(result.continuations) == set(result.score) == {"clean", "searched", "random0"}
    for name in result.continuations:
        for i, prompt in enumerate(PROMPTS):
            text = dbg.tokenizer.decode(dbg.generate(prompt, 3, conditions[name], stop_at_eos=False))
            assert result.continuations[name][i] == text
            assert result.score[name][i] == lexicon_score(text, pos, neg)
    assert result.mass["searched"].mean() != pytest.approx(result.mass["clean"].mean())
    effects = result.effects()
    assert set(effects) == {f"{m}: {c}" for m in ("mass", "score")
                            for c in ("searched - clean", "searched - random", "random - clean")}
    d = result.mass["searched"] - result.random_mean(result.mass)
    assert effects["mass: searched - random"]["mean_diff"] == pytest.approx(d.mean())
    assert result.scale == 0.5 and result.n_tokens == 3
    assert n_hooks(dbg.model) == 0
    with pytest.raises(ValueError, match="found only"):
        steering_experiment(dbg, search, PROMPTS, "joy", n_values=10_000)


def test_dose_response_and_the_steering_figure(steered):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbg, search = steered
    scales = [0.1, 1.0]
    dose = dose_response(dbg, search, PROMPTS, QUERY, scales, concept_words=["good", "great"], n_values=3,
                         batch_size=2)
    ids = concept_ids(search, ["good", "great"])
    hits = search.search(QUERY, limit=3)
    assert dose["scale"].tolist() == scales
    assert dose["clean"].tolist() == pytest.approx([np.mean([_mass(dbg, p, [], ids) for p in PROMPTS])] * 2, rel=1e-6)
    for j, s in enumerate(scales):
        ivs = [Intervention(h.layer, h.unit, "on", s) for h in hits]
        assert dose["searched"][j] == pytest.approx(np.mean([_mass(dbg, p, ivs, ids) for p in PROMPTS]), rel=1e-6)
    assert dose["random"].shape == (2,)

    result = steering_experiment(dbg, search, PROMPTS, QUERY, n_values=3, n_random=1, n_tokens=2, scale=0.25)
    fig = plot_steering(result, dose)
    ax, bx, cx = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "searched", "random0"]
    assert [b.get_height() for b in ax.patches] == pytest.approx([result.mass[c].mean() for c in result.conditions])
    assert [b.get_height() for b in bx.patches] == pytest.approx([result.score[c].mean() for c in result.score])
    assert "on x 0.25" in ax.get_title() and "2 tokens" in bx.get_title()
    assert [list(line.get_ydata()) for line in cx.lines[:2]] == [dose["searched"].tolist(), dose["random"].tolist()]
    assert len(plot_steering(result).axes) == 2  # without a dose-response
    plt.close("all")
