"""The app's attribution, patching and session panels, driven from Python."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_model
from debugger_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.debugger.annotations import Annotations
from lmscope.debugger.app import DebuggerApp

pytest.importorskip("ipywidgets")


@pytest.fixture
def app(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    view = ModelView(make_tiny_model("gpt2"))
    tok = WordTokenizer(["<pad>", "<s>", "</s>"] + [f" w{i}" for i in range(view.cfg.d_vocab - 3)])
    a = DebuggerApp(view, tok, annotations=Annotations("tiny", tmp_path / "names.json", 3, view.cfg.d_ff),
                    prompt=" w1 w2 w3 w4")
    a.sessions.path.value = str(tmp_path / "s.json")
    return a


def test_attribution_view(app):
    app.position.value = 2
    app.attribution.button.click()
    assert "Traceback" not in app.message.value and app.message.value == ""
    attr = app.attribution.last
    assert attr.positions == [2] and "sum of the parts" in app.attribution.summary.value
    assert abs(float(attr.total()[0] - attr.logit[0])) < 1e-9
    assert len(app.attribution.plot.children) == 2  # the bar charts and the logit-lens curve
    app.attribution.target.value, app.attribution.foil.value = " w5", " w6"
    app.attribution.button.click()
    assert app.attribution.last.targets == [8] and app.attribution.last.foils == [9]
    app.attribution.target.value = " w5 w6"
    app.attribution.button.click()
    assert "token box" in app.message.value and "not one" in app.message.value
    app.attribution.target.value, app.position.value = "", 9
    app.attribution.button.click()
    assert "outside the prompt" in app.message.value


def test_patching_view(app):
    app.patching.corrupted.value = " w1 w9 w3 w4"
    app.patching.button.click()
    assert app.message.value == ""
    grids = app.patching.last
    assert set(grids) == {"resid_pre", "attn_out", "mlp_out"} and len(app.patching.plot.children) == 1
    app.patching.corrupted.value = " w1 w9 w3"
    app.patching.button.click()
    assert "same length" in app.message.value
    app.patching.corrupted.value = " "
    app.patching.button.click()
    assert "corrupted prompt is empty" in app.message.value
    app.prompt.value = ""
    app.patching.corrupted.value = " w1"
    app.patching.button.click()
    assert "prompt is empty" in app.message.value


def test_session_save_load_and_bad_files(app, tmp_path):
    app.trace_button.click()
    app.add_intervention("L1D3", "off")
    app.annotations.set("L1D3", "numbers")
    app.sessions.save_button.click()
    assert "Saved" in app.message.value
    saved_trace = app.last_trace
    app.prompt.value, app.position.value = " w7 w8", 0
    app.remove_intervention("L1D3")
    # a damaged file and a file of another model change nothing
    path = tmp_path / "s.json"
    good = path.read_text()
    path.write_text(good[:30])
    app.sessions.load_button.click()
    assert "damaged" in app.message.value and app.prompt.value == " w7 w8" and app.interventions == []
    path.write_text(json.dumps({**json.loads(good), "model": "other"}))
    app.sessions.load_button.click()
    assert "not of" in app.message.value and app.prompt.value == " w7 w8"
    path.write_text(good)
    app.sessions.load_button.click()
    assert app.prompt.value == " w1 w2 w3 w4" and [iv.describe() for iv in app.interventions] == ["L1D3=off"]
    assert app.last_trace == saved_trace
    app.attribution.button.click()
    app.sessions.path.value = str(tmp_path / "out.csv")
    app.sessions.export_button.click()
    assert (tmp_path / "out-trace.csv").exists() and (tmp_path / "out-attribution.csv").exists()
