"""The debugger app (DebuggerApp) driven from Python: type, click, read what it shows."""

import pytest
from debugger_helpers import WordTokenizer, n_hooks

from lmscope import ModelView
from lmscope.debugger.annotations import Annotations
from lmscope.debugger.app import DebuggerApp
from lmscope.embedding.index import ProjectionIndex

pytest.importorskip("ipywidgets")


@pytest.fixture
def tiny_app(tmp_path, monkeypatch):
    from conftest import make_tiny_model

    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    model = make_tiny_model("llama")
    view = ModelView(model)
    index = ProjectionIndex.build(view, k=50)
    app = DebuggerApp(view, None, index=index, annotations=Annotations("tiny", tmp_path / "a.json", 3, view.cfg.d_ff))
    app.prompt.value = "ignored"  # no tokenizer: traces take token ids, set below
    return app


def test_tiny_app_reports_errors_as_messages(tiny_app):
    app = tiny_app
    app.trace_button.click()  # text without a tokenizer
    assert "no tokenizer" in app.message.value and "Traceback" not in app.message.value
    assert not app.trace_button.disabled
    app.add_name.value, app.add_coeff.value = "L99D1", "on"
    app.add_button.click()
    assert "layer 99 does not exist" in app.message.value and app.interventions == []
    app.add_name.value, app.add_coeff.value = "L1D2", "nan"
    app.add_button.click()
    assert "finite" in app.message.value and app.interventions == []
    app.add_name.value = "L1 2"
    app.add_button.click()
    assert "L&lt;layer&gt;D&lt;unit&gt;" in app.message.value


def test_tiny_app_traces_shows_values_intervenes_searches_and_names(tmp_path, monkeypatch):
    from conftest import make_tiny_model

    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    model = make_tiny_model("llama")
    view = ModelView(model)
    tok = WordTokenizer(["<pad>", "<s>", "</s>", " good", " great"] + [f" w{i}" for i in range(view.cfg.d_vocab - 5)])
    app = DebuggerApp.from_model(view, tok, prompt=" w1 w2 w3")
    assert app.annotations.path == tmp_path / "annotations.json"
    app.trace_button.click()
    assert app.message.value == "" and "Prediction" in app.prediction.value
    assert len(app.table.children) == view.cfg.n_layers and len(app.table_rows()) == view.cfg.n_layers
    first = app.last_trace.layers[0].ff_updates[0]
    app.table.children[0].children[1].children[0].click()  # layer 0's first sub-update
    assert app.selected == first.name and app.details_tokens.value.count("<code>") == 50
    app.details_off.click()
    assert [iv.describe() for iv in app.interventions] == [f"{first.name}=off"]
    assert f"{first.name}=off" in app.prediction.value
    assert app.last_trace.interventions == app.interventions
    app.remove_intervention(first.name)
    assert app.interventions == [] and "No interventions" in app.interventions_box.children[0].value
    app.search_box.value = "good"
    app.search_button.click()
    assert app.search_results.children and "values for 'good'" in app.message.value
    app.n_tokens.value = 5
    app.generate_button.click()
    assert app.last_generation == tok.decode(app.debugger.generate(" w1 w2 w3", 5))
    app.annotation_box.value = f"{first.name} = first"
    app.annotation_button.click()
    assert "first" in app.annotation_list.value and app.annotations.get(first.name) == "first"
    assert app.last_trace.layers[0].ff_updates[0].annotation == "first"  # the trace reran with the name
    assert n_hooks(model) == 0


@pytest.mark.slow
def test_embedded_app_trace_details_intervene_search_annotate(smollm, tmp_path):
    model, tok = smollm
    view = ModelView(model)
    index = ProjectionIndex.build(view, k=50)
    notes = Annotations.for_model(view, tmp_path / "annotations.json")
    app = DebuggerApp(view, tok, index=index, annotations=notes)

    app.prompt.value = "The capital of France is"
    app.trace_button.click()
    assert "Paris" in app.prediction.value, app.message.value
    rows = app.table_rows()
    assert len(rows) == 30 and rows[-1]["after FF"].startswith("\u2423Paris")
    assert len(app.table.children) == 30

    # click the first sub-update of the last layer: its details appear
    last_row = app.table.children[-1]
    button = last_row.children[1].children[0]
    button.click()
    name = app.selected
    assert name.startswith("L29D") and name in app.details_title.value
    assert app.details_tokens.value.count("<code>") == 50

    # switch it off from the details panel: an intervention row appears and the trace reruns
    app.details_off.click()
    assert [iv.describe() for iv in app.interventions] == [f"{name}=off"]
    assert f"{name}=off" in app.prediction.value
    assert len(app.interventions_box.children) == 1

    # a large coefficient on a searched value changes the prediction
    app.search_box.value = "football"
    app.search_button.click()
    hits = app.search_results.children[0].children
    assert hits and "football" in hits[0].description.lower()
    hits[0].click()
    football = app.selected
    app.add_name.value, app.add_coeff.value = football, "200"
    app.add_button.click()
    assert app.last_trace.prediction[0][0] != "\u2423Paris", app.message.value
    # bad coefficient in the row's field: a message, the intervention keeps its value
    row = app.interventions_box.children[-1]
    row.children[2].value = "lots"
    assert "not 'off', 'on' or a number" in app.message.value
    assert app.interventions[-1].value == 200.0
    # disable it with its checkbox: Paris is back
    row.children[0].value = False
    assert app.last_trace.prediction[0][0] == "\u2423Paris"

    # generation with the remaining intervention, then nothing leaks
    app.n_tokens.value = 5
    app.generate_button.click()
    assert app.last_generation and "Greedy continuation" in app.generation.value
    assert n_hooks(model) == 0

    # annotations show in the trace and survive a restart
    app.annotation_box.value = f"{football} = football"
    app.annotation_button.click()
    assert "football" in app.annotation_list.value
    assert Annotations.for_model(view, tmp_path / "annotations.json").get(football) == "football"

    # bad input: messages, app keeps working
    app.prompt.value = "   "
    app.trace_button.click()
    assert "empty" in app.message.value
    app.search_box.value = "qwzxqwzx"
    app.search_button.click()
    assert "No token of this vocabulary" in app.message.value
    app.prompt.value = "The capital of France is"
    app.trace_button.click()
    assert app.message.value == ""
