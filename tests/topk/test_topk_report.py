"""lmscope.topk.report: chapter 03's tables and headline numbers come from the rows they are given."""

import pytest

from lmscope.topk import report


def _rows():
    bins = [{"start": 0, "stop": 1, "count": 1, "nll": 1.0}]
    row = lambda L, mode, k, ppl: {"length": L, "n_blocks": 1, "mode": mode, "k": k, "ppl": ppl, "bins": bins}  # noqa: E731
    return [row(512, "dense", None, 40.0), row(512, "attention", 64, 44.0), row(512, "attention", 256, 40.4),
            row(512, "attention+first", 64, 43.0),
            {"length": 512, "n_blocks": 1, "mode": "dropped mass", "k": 64, "mass": 0.125, "per_layer": [0.1, 0.15]},
            row(8192, "dense", None, 30.0), row(8192, "attention", 64, 36.0)]


def test_length_table_changes_are_against_dense_at_the_same_length():
    headers, rows = report.length_table(_rows())
    assert headers[-2:] == ["change", "dense mass dropped"]
    by = {(r[0], r[2], r[3]): r for r in rows}
    assert by[(512, "attention", 64)][-2:] == ["+10.0%", "0.125"]
    assert by[(512, "attention+first", 64)][-2:] == ["+7.5%", "-"]
    assert by[(8192, "attention", 64)][4:7] == ["1/128", "36.00", "+20.0%"]
    assert len(rows) == 6  # the dropped-mass row is a column, not a line


def test_headline_is_the_longest_length_with_every_k():
    assert report.headline(_rows()) == (512, {64: pytest.approx(0.1), 256: pytest.approx(0.01)})
    assert report.headline(_rows(), ks=(64,)) == (8192, {64: pytest.approx(0.2)})
    assert report.headline(_rows(), ks=(8,)) == (None, {})


def test_smallest_matching_k_and_the_ff_tables():
    rows = [{"mode": "dense", "k": None, "a": 0.5, "b": 0.4}, {"mode": "attention", "k": 4, "a": 0.5, "b": 0.3},
            {"mode": "attention", "k": 8, "a": 0.6, "b": 0.4}, {"mode": "attention", "k": 32, "a": 0.5, "b": 0.4}]
    assert report.smallest_matching_k(rows, ["a", "b"]) == 8
    assert report.smallest_matching_k(rows[:2], ["a", "b"]) is None
    ppl = [{"mode": "dense", "k": None, "ppl": 10.0}, {"mode": "ff", "k": 32, "ppl": 12.0}]
    stats = {"l1_kept": {32: 0.25}, "out_error": {32: 0.5}}
    assert report.ff_table(ppl, stats, 1536)[1] == [[32, "2.1%", "+20.0%", "0.250", "0.500"]]
    paper = report.paper_ff_table()[1]
    assert ["T5-base", 3072, 64, "2.08%", "-0.02"] in paper and ["T5-11B", 65536, 64, "0.10%", "-4.22"] in paper
    assert report.pct(None) == "-" and report.pct(0.146) == "+14.6%"


def test_ff_reading_quotes_the_table_and_the_fraction_plot_draws_each_length():
    ppl = [{"mode": "dense", "k": None, "ppl": 10.0}, {"mode": "ff", "k": 32, "ppl": 11.46},
           {"mode": "ff", "k": 512, "ppl": 11.4951}]
    stats = {"zero": 0.0, "small": 0.3, "effective": 0.31, "l1_kept": {32: 0.2, 512: 0.8}, "out_error": {32: 0.5, 512: 0.1}}
    table = report.ff_table(ppl, stats, 1536)[1]
    reading = report.ff_reading("m", ppl, stats, 1536)
    for row in table:  # every change in the text is the table's, rounded the same way
        assert f"{row[2]} at k={row[0]}" in reading
    assert "+15.0% at k=512" in reading and "nearest k here, 32 (2.1%), costs +14.6%" in reading
    assert report.ff_changes(ppl) == {32: pytest.approx(0.146), 512: pytest.approx(0.14951)}
    fig = report.plot_fraction(_rows())
    assert [line.get_label() for line in fig.axes[0].lines] == ["512 tokens", "8192 tokens"]
    assert report.plot_fraction([r for r in _rows() if r["mode"] == "dense"]) is None


def test_ff_baseline_tables():
    base = [{"model": "relu", "gated": False, "d_ff": 128, "zero": 0.5, "small": 0.55, "effective": 0.3, "ks": [3],
             "l1_kept": {3: 0.1}, "out_error": {3: 0.9}, "ppl_change": {3: 0.5}}]
    pre = {"model": "big", "gated": True, "d_ff": 1536, "zero": 0.0, "small": 0.3, "effective": 0.31}
    assert report.ff_baseline_table(base, pre)[1] == [["relu", "ReLU", 128, "50.0%", "55.0%", "30.0%"],
                                                      ["big", "gated", 1536, "0.0%", "30.0%", "31.0%"]]
    assert report.ff_fraction_table(base)[1] == [["relu", 3, "2.3%", "0.100", "0.900", "+50.0%", "-"]]
    base[0].update(d_ff=3072 // 8, ks=[8], l1_kept={8: 0.1}, out_error={8: 0.9}, ppl_change={8: 0.5})  # 8/384 = 64/3072
    assert report.ff_fraction_table(base)[1][0][-1] == "-0.02 (k=64)"
    with pytest.raises(ValueError, match="one ReLU and one gated"):
        report.ff_baseline_reading(base)
