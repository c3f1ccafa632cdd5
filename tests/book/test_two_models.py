"""The two-model chapter's table and the landing page's findings, from saved results files."""

from conftest import book
from lmscope.core.results import load_results, save_results
from lmscope.two_models import comparison_markdown, comparison_rows, findings_markdown, reading


def saved(tmp_path):
    save_results("00_model", "small", {"first layer": 20, "n_layers": 30, "finding": "leads at layer 20"}, tmp_path)
    save_results("00_model", "big", {"first layer": 12, "n_layers": 18}, tmp_path)
    save_results("03_topk_attention", "small", {"ppl change": {"k=64": 0.01, "k=256": 0.001}}, tmp_path)
    return load_results(tmp_path)


def test_rows_join_models_and_flatten_nested_numbers(tmp_path):
    rows = comparison_rows(saved(tmp_path), ["small", "big"])
    assert [(r["chapter"], r["name"]) for r in rows] == [
        ("00_model", "first layer"), ("00_model", "n_layers"),
        ("03_topk_attention", "ppl change / k=64"), ("03_topk_attention", "ppl change / k=256")]
    assert rows[0]["values"] == {"small": 20, "big": 12}
    assert rows[2]["values"] == {"small": 0.01, "big": None}


def test_table_has_a_column_per_model_and_a_reading(tmp_path):
    table = comparison_markdown(saved(tmp_path), ["small", "big"])
    assert table.splitlines()[0] == "| chapter | number | small | big | reading |"
    assert "higher on small (20 vs 12)" in table and "| – |" in table
    assert reading({"a": 1.0, "b": 1.01}) == "about equal (within 5%)"
    # values that are not one number (pairs, recipes) are compared as they are, never "one model only"
    assert reading({"a": "0.1 / 0.2", "b": "0.1 / 0.2"}) == "the same on both"
    assert reading({"a": "0.1 / 0.2", "b": "0.3 / 0.2"}) == "see the columns (not one number)"
    assert reading({"a": "0.1 / 0.2", "b": None}) == "one model only"
    assert "No results" in comparison_markdown({})


def test_findings_use_the_saved_sentence_or_the_numbers(tmp_path):
    text = findings_markdown(saved(tmp_path))
    assert "on small: leads at layer 20" in text and "on big: first layer 12; n_layers 18" in text


def test_build_writes_the_findings_into_the_landing_page(tmp_path):
    intro = tmp_path / "intro.md"
    intro.write_text(f"# Book\n\n{book.FINDINGS}\n")
    saved(tmp_path / "results")
    book.write_findings(intro, tmp_path / "results")
    assert book.FINDINGS not in intro.read_text() and "leads at layer 20" in intro.read_text()
