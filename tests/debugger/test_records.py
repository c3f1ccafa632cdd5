"""The records a trace returns, and the table a trace shows."""

from lmscope.debugger.interventions import Intervention
from lmscope.debugger.records import HeadUpdate, LayerTrace, SubUpdate, Trace, ValueDetails


def _layer(layer, tokens, annotation=None):
    lens = [(t, 0.5 / (i + 1)) for i, t in enumerate(tokens)]
    ups = [SubUpdate(layer, 10 + i, 1.0, 2.0 - i, [f"v{i}", "x"], annotation if i == 0 else None) for i in range(4)]
    heads = [HeadUpdate(layer, 2, 3.0, ["h", "y"]), HeadUpdate(layer, 0, 1.0, [])]
    return LayerTrace(layer, lens, lens[::-1], lens[::-1], lens, ups, heads)


def test_trace_table_shows_three_tokens_three_updates_and_the_heads():
    trace = Trace(["a", "b"], 1, [_layer(0, ["p", "q", "r", "s"], "sports"), _layer(1, ["t"])], [("p", 0.9)],
                  [Intervention(0, 10, "off")])
    rows = trace.table()
    assert rows[0] == {
        "layer": 0,
        "before attn": "p q r",
        "after attn": "s r q",
        "after FF": "p q r",
        "top sub-updates": "L0D10=sports(v0), L0D11(v1), L0D12(v2)",
        "top heads": "H2(h), H0()",
    }
    assert rows[1]["before attn"] == "t" and rows[1]["top sub-updates"].startswith("L1D10(v0)")


def test_names_of_updates_and_details():
    assert SubUpdate(3, 7, 0.0, 0.0, []).name == "L3D7"
    assert ValueDetails(12, 34, ["a"], [5], [1.0], 2.0).name == "L12D34"
    assert Trace([], 0, [], []).interventions == []
