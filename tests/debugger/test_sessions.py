"""Sessions save and load back to the same trace; exports; clear errors for files that do not fit."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import make_tiny_model
from debugger_helpers import WordTokenizer

from lmscope import ModelView
from lmscope.debugger.dla import direct_logit_attribution
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention
from lmscope.debugger.patching import activation_patching
from lmscope.debugger.sessions import Session, SessionError, export, load_session, save_session


@pytest.fixture
def dbg():
    view = ModelView(make_tiny_model("llama"))
    tok = WordTokenizer(["<pad>", "<s>", "</s>"] + [f" w{i}" for i in range(view.cfg.d_vocab - 3)])
    return LMDebugger(view, tok)


def test_session_round_trip_gives_the_same_trace(dbg, tmp_path):
    ivs = [Intervention(1, 3, "off"), Intervention(2, 5, "on", 0.5), Intervention(0, 7, "set", -2.0, enabled=False)]
    trace = dbg.trace(" w1 w2 w3 w4", 2, ivs)
    session = Session(dbg.view.name, " w1 w2 w3 w4", 2, ivs, {"L1D3": "numbers"}, trace)
    path = save_session(session, tmp_path / "s.json")
    back = load_session(path, model=dbg.view.name, n_layers=dbg.view.cfg.n_layers, d_ff=dbg.view.cfg.d_ff)
    assert back == session
    assert dbg.trace(back.prompt, back.position, back.interventions) == back.trace  # the same trace, rerun


def test_files_that_do_not_fit_raise_clear_errors(dbg, tmp_path):
    path = save_session(Session(dbg.view.name, " w1", -1, [Intervention(1, 3, "off")]), tmp_path / "s.json")
    with pytest.raises(SessionError, match="session of model .* not of 'gpt2'"):
        load_session(path, model="gpt2")
    data = json.loads(path.read_text())
    (tmp_path / "new.json").write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(SessionError, match="newer .* update lmscope"):
        load_session(tmp_path / "new.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:40])
    with pytest.raises(SessionError, match="damaged"):
        load_session(tmp_path / "cut.json")
    (tmp_path / "bad.json").write_text(json.dumps({**data, "interventions": [{"layer": 1, "unit": 3, "mode": "max"}]}))
    with pytest.raises(SessionError, match="damaged .*mode"):
        load_session(tmp_path / "bad.json")
    (tmp_path / "big.json").write_text(json.dumps({**data, "value_names": {"L9D1": "x"}}))
    with pytest.raises(SessionError, match="layer 9 does not exist"):
        load_session(tmp_path / "big.json", n_layers=3)
    (tmp_path / "other.json").write_text(json.dumps([1, 2]))
    with pytest.raises(SessionError, match="not an lmscope debugger session"):
        load_session(tmp_path / "other.json")
    with pytest.raises(SessionError, match="No session file"):
        load_session(tmp_path / "missing.json")


def test_exports_to_json_and_csv(dbg, tmp_path):
    trace = dbg.trace(" w1 w2 w3")
    export(trace, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["position"] == 2
    export(trace, tmp_path / "t.csv")
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == dbg.view.cfg.n_layers * dbg.n_updates and rows[0]["value"].startswith("L0D")
    ids = dbg.encode(" w1 w2 w3")[0]
    attr = direct_logit_attribution(dbg.view, ids, target=5, positions=[-1])
    export(attr, tmp_path / "a.csv")
    a_rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert {r["component"] for r in a_rows} >= {"embed", "head", "value", "final bias"}
    corrupted = ids.clone()
    corrupted[0] = 9
    grids = activation_patching(dbg.view, ids, corrupted, target=5, components=["resid_pre", "mlp_out"])
    export(grids, tmp_path / "g.json")
    g_rows = json.loads((tmp_path / "g.json").read_text())
    assert len(g_rows) == 2 * dbg.view.cfg.n_layers * 3
    with pytest.raises(ValueError, match=r"\.json or \.csv"):
        export(trace, tmp_path / "t.xlsx")
