"""Chapter 04's study as one call: a JSON round trip gives the same tables, and bad files are refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import make_tiny_model
from icl_helpers import CharTokenizer, small_task

from lmscope import ModelView
from lmscope.core.profiles import settings
from lmscope.icl.ablation import ablation_table, cell_rows
from lmscope.icl.metrics import TaskResult
from lmscope.icl.profiles import PROFILES
from lmscope.icl.report import (accuracy_table, lcgd_wins, sim_am_table, similarity_table, size_table,
                                untrained_control_table)
from lmscope.icl.study import (PARTS, StudyFileError, chapter_study, load_study, mismatch, result_path,
                               run_chapter_study, save_study)

TOY = small_task()
WORDS = dataclasses.replace(small_task(), name="toy_words")


def toy_sizes(**kw) -> dict:
    """The quick profile with toy tasks that fit a tiny model's 64 positions, and a grid to choose from."""
    return settings(PROFILES, "quick", **{
        "tasks": (TOY,), "word_tasks": (WORDS,), "ablation_task": TOY, "control_tasks": (TOY,), "k": 3,
        "seeds": (0,), "n_test": 4, "ablation_seeds": (0,), "ablation_n_test": 4, "word_n_test": 3,
        "control_n_test": 3, "lr_grid": (0.01, 0.05, 0.2), "lr_n_eval": 4,
        "ablation_factors": ("loss_on", "read_at", "lr"), **kw})


@pytest.fixture(scope="module")
def study():
    view = ModelView(make_tiny_model("llama"))
    sizes = toy_sizes()
    run = run_chapter_study(view, CharTokenizer(), sizes, profile="full", model="tiny", progress=None)
    return view, sizes, run


def _arrays(res: TaskResult):
    for s in res.seeds:
        for name in ("correct", "sim_aou", "sim_am_delta", "sim_am", "update_norm", "attn_change"):
            for method, a in getattr(s, name).items():
                yield (s.seed, name, method), a
        yield (s.seed, "random", ""), s.random_sim_aou


def _same_results(a: dict[str, TaskResult], b: dict[str, TaskResult]) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = dict(_arrays(a[name])), dict(_arrays(b[name]))
        assert list(x) == list(y)
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, key
            np.testing.assert_array_equal(x[key], y[key], err_msg=str(key))
        for s, t in zip(a[name].seeds, b[name].seeds):
            assert (s.losses, s.skipped, s.seconds, s.lr, s.k) == (t.losses, t.skipped, t.seconds, t.lr, t.k)


def _tables(run) -> list:
    return [accuracy_table(run.results), similarity_table(run.results), size_table(run.results),
            accuracy_table(run.word_results), similarity_table(run.word_results, with_paper=False),
            untrained_control_table(run.results, run.control), sim_am_table(run.results, run.control),
            ablation_table(run.cells), lcgd_wins(run.results), json.dumps(run.sweep_rows), run.lr_choice, run.best_rate]  # nan != nan


def test_the_study_runs_every_part(study):
    _, _, run = study
    assert run.complete and run.meta["parts"] == list(PARTS)
    assert run.best_rate in run.lr_choice and len(run.lr_choice) == 3
    assert [c.factor for c in run.cells] == ["paper", "loss_on", "read_at", "lr", "lr"]
    assert run.cells[0].result is run.results["toy"]  # the paper cell reuses the main table's run
    assert list(run.word_results) == ["toy_words"] and list(run.control) == ["toy"]
    assert len(run.step["gd"]) == len(run.step["lcgd"]) == 3 and run.step_task == "toy"
    assert run.sizes["tasks"] == ["toy"] and run.meta["threads"] >= 1


def test_json_round_trip_gives_the_same_run_and_tables(study, tmp_path):
    _, _, run = study
    loaded = load_study(save_study(run, tmp_path / "s.json"))
    for name in ("results", "word_results", "control"):
        _same_results(getattr(run, name), getattr(loaded, name))
    _same_results({c.label: c.result for c in run.cells}, {c.label: c.result for c in loaded.cells})
    assert [(c.factor, c.value, c.model) for c in run.cells] == [(c.factor, c.value, c.model) for c in loaded.cells]
    assert loaded.cells[0].result is loaded.results["toy"]
    assert cell_rows(run.cells) == cell_rows(loaded.cells)
    assert _tables(run) == _tables(loaded)
    assert (loaded.step, loaded.seconds, loaded.meta, loaded.sizes) == (run.step, run.seconds, run.meta, run.sizes)


def test_mismatch_names_what_differs(study):
    _, sizes, run = study
    assert mismatch(run, "tiny", "full", sizes) is None
    assert "n_test" in mismatch(run, "tiny", "full", toy_sizes(n_test=5))
    assert "model 'tiny'" in mismatch(run, "smollm2-135m", "full", sizes)
    dropped = dataclasses.replace(run, meta={**run.meta, "dropped": {"n_test": "time"}})
    assert mismatch(dropped, "tiny", "full", toy_sizes(n_test=5)) is None
    partial = dataclasses.replace(run, meta={**run.meta, "parts": ["lr", "main"]})
    assert "incomplete" in mismatch(partial, "tiny", "full", sizes)


def test_damaged_or_newer_files_raise(study, tmp_path):
    _, _, run = study
    path = save_study(run, tmp_path / "s.json")
    text = path.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(StudyFileError, match="not a readable study file"):
        load_study(bad)
    d = json.loads(text)
    bad.write_text(json.dumps({**d, "version": d["version"] + 1}))
    with pytest.raises(StudyFileError, match="newer"):
        load_study(bad)
    del d["results"]["toy"]  # the ablation's paper cell points to it
    bad.write_text(json.dumps(d))
    with pytest.raises(StudyFileError, match="damaged"):
        load_study(bad)
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(StudyFileError, match="not a study file"):
        load_study(bad)


def test_chapter_reads_a_matching_saved_run_and_runs_live_otherwise(study, tmp_path):
    view, sizes, run = study
    save_study(run, result_path("tiny", "full", tmp_path))
    got, line = chapter_study(view, CharTokenizer(), sizes, "tiny", "full", folder=tmp_path, progress=None)
    assert line.startswith("Read the saved run icl_study_tiny_full.json") and _tables(got) == _tables(run)
    smaller = toy_sizes(word_n_test=2, lr_grid=None, lr=0.05, ablation_factors=("loss_on",))
    got, line = chapter_study(view, CharTokenizer(), smaller, "tiny", "full", folder=tmp_path, progress=None)
    assert "not used: its run sizes differ" in line and "word_n_test" in line
    assert got.sizes["word_n_test"] == 2 and got.complete
    assert "quick profile" in chapter_study(view, CharTokenizer(), smaller, "tiny", "quick", folder=tmp_path,
                                            progress=None)[1]
    result_path("tiny", "full", tmp_path).write_text("{")
    with pytest.raises(StudyFileError):
        chapter_study(view, CharTokenizer(), sizes, "tiny", "full", folder=tmp_path, progress=None)


def test_an_interrupted_run_resumes_with_its_finished_parts(study, tmp_path):
    view, _, _ = study
    sizes = toy_sizes(lr_grid=None, lr=0.05, ablation_factors=("loss_on",))
    path = tmp_path / "partial.json"

    def save_then_stop(run):
        save_study(run, path)
        if run.meta["parts"][-1] == "main":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_chapter_study(view, CharTokenizer(), sizes, on_part=save_then_stop, progress=None)
    partial = load_study(path)
    assert partial.meta["parts"] == ["lr", "main"] and not partial.complete
    said = []
    done = run_chapter_study(view, CharTokenizer(), sizes, resume=partial, progress=said.append)
    assert done.complete and "main: kept from the saved partial run" in said
    _same_results(done.results, load_study(path).results)
    with pytest.raises(ValueError, match="finished parts"):
        run_chapter_study(view, CharTokenizer(), {**sizes, "n_test": 3}, resume=load_study(path), progress=None)
    later = run_chapter_study(view, CharTokenizer(), {**sizes, "word_n_test": 2}, resume=load_study(path),
                              progress=None, dropped={"word_n_test": "time"})
    assert later.sizes["word_n_test"] == 2 and later.meta["dropped"] == {"word_n_test": "time"}


def test_an_ablation_on_fewer_seeds_reuses_the_main_tables_runs_of_those_seeds(study, tmp_path):
    view, _, _ = study
    sizes = toy_sizes(seeds=(0, 1), ablation_seeds=(1,), lr_grid=None, lr=0.05, ablation_factors=("loss_on",))
    run = run_chapter_study(view, CharTokenizer(), sizes, progress=None)
    assert [s.seed for s in run.cells[0].result.seeds] == [1] and [s.seed for s in run.cells[1].result.seeds] == [1]
    assert run.cells[0].result.seeds[0] is run.results["toy"].seeds[1]
    loaded = load_study(save_study(run, tmp_path / "s.json"))
    assert ablation_table(loaded.cells) == ablation_table(run.cells)


def test_a_half_done_ablation_keeps_its_cells_when_a_factor_is_cut(study, tmp_path):
    view, _, _ = study
    sizes = toy_sizes(lr_grid=None, lr=0.05, ablation_factors=("loss_on", "read_at"))
    path = tmp_path / "partial.json"

    def save_then_stop(run):
        save_study(run, path)
        if [c.factor for c in run.cells] == ["paper", "loss_on"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_chapter_study(view, CharTokenizer(), sizes, on_part=save_then_stop, progress=None)
    partial = load_study(path)
    assert "ablation" in partial.meta["partial"] and "ablation" not in partial.meta["parts"]
    said = []
    done = run_chapter_study(view, CharTokenizer(), {**sizes, "ablation_factors": ("loss_on",)}, resume=partial,
                             progress=said.append, dropped={"ablation_factors": "time"})
    assert "ablation: loss_on kept from the saved partial run" in said and done.meta["partial"] == {}
    assert [c.factor for c in done.cells] == ["paper", "loss_on"] and done.complete
    assert ablation_table(done.cells) == ablation_table(partial.cells)
    assert set(done.seconds) == set(PARTS)
