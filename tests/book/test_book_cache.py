"""The builder's cache of executed chapters, the per-build results folder and the two-model layout.

Tiny fake chapters (a cell or two) stand in for the real notebooks, so these run in seconds.
"""

import json
from pathlib import Path

import nbformat
import pytest

from conftest import book

PARAMS = {"model": "m1", "profile": "quick"}


def fake_chapter(folder: Path, name: str, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}")])
    notebook.cells.append(nbformat.v4.new_code_cell('model = "m"\nprofile = "quick"',
                                                    metadata={"tags": ["parameters"]}))
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / f"{name}.ipynb")
    return folder / f"{name}.ipynb"


def run_all(names, notebooks, chapters, params=PARAMS, library="lib-1"):
    return [book.execute_cached(name, params, notebooks=notebooks, chapters=chapters, library=library)
            for name in names]


def test_unchanged_rebuild_executes_nothing_and_a_touched_notebook_only_itself(tmp_path):
    notebooks, chapters = tmp_path / "nb", tmp_path / "chapters"
    for name in ("a", "b"):
        fake_chapter(notebooks, name, "x = 1 + 1\nprint(x)")
    assert run_all(["a", "b"], notebooks, chapters) == [True, True]
    assert run_all(["a", "b"], notebooks, chapters) == [False, False]

    fake_chapter(notebooks, "b", "x = 2 + 2\nprint(x)")  # edit one notebook
    assert run_all(["a", "b"], notebooks, chapters) == [False, True]
    executed = nbformat.read(chapters / "b.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0].text == "4\n"

    # the library, the parameters and the model are in the key too
    assert run_all(["a", "b"], notebooks, chapters, library="lib-2") == [True, True]
    assert run_all(["a"], notebooks, chapters, params={**PARAMS, "profile": "full"}, library="lib-2") == [True]
    assert run_all(["a"], notebooks, chapters, params={**PARAMS, "model": "m2"}, library="lib-2") == [True]


def test_library_digest_follows_the_sources(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("A = 1\n")
    first = book.library_digest(tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "m.cpython-313.pyc").write_bytes(b"\0")
    assert book.library_digest(tmp_path) == first, "bytecode must not invalidate the cache"
    (tmp_path / "pkg" / "m.py").write_text("A = 2\n")
    assert book.library_digest(tmp_path) != first


def test_failed_chapter_is_not_cached(tmp_path):
    notebooks, chapters = tmp_path / "nb", tmp_path / "chapters"
    fake_chapter(notebooks, "bad", "raise ValueError('boom')")
    for _ in range(2):  # the second attempt runs again: a failure leaves no key behind
        with pytest.raises(book.BookError, match="bad.ipynb failed"):
            run_all(["bad"], notebooks, chapters)


def test_chapter_sees_this_builds_results_folder(tmp_path):
    notebooks, chapters = tmp_path / "nb", tmp_path / "chapters"
    fake_chapter(notebooks, "r", "from lmscope.core.results import save_results\n"
                                 "save_results('r', model, {'x': 1.5})")
    run_all(["r"], notebooks, chapters)
    saved = json.loads((chapters / "_results" / "m1" / "r.json").read_text())
    assert saved["numbers"] == {"x": 1.5}


def test_tidy_merges_streams_and_replaces_widgets(tmp_path):
    path = fake_chapter(tmp_path, "t", "print(1)")
    notebook = nbformat.read(path, as_version=4)
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "w", "version_major": 2,
                                                           "version_minor": 0}, "text/plain": "VBox()"}
    notebook.cells[-1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="step 1\n"),
        nbformat.v4.new_output("stream", name="stdout", text="step 2\n"),
        nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
        nbformat.v4.new_output("display_data", data=widget),
        nbformat.v4.new_output("display_data", data=widget),
    ]
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(notebook, path)
    book.tidy_for_static(path)
    assert "widgets" not in nbformat.read(path, as_version=4).metadata
    outputs = nbformat.read(path, as_version=4).cells[-1].outputs
    assert [(o.output_type, o.get("name")) for o in outputs] == [
        ("stream", "stdout"), ("stream", "stderr"), ("display_data", None)]
    assert outputs[0].text == "step 1\nstep 2\n"
    assert book.WIDGET_MIME not in outputs[2].data and "make lab" in outputs[2].data["text/html"]


@pytest.mark.slow
def test_two_models_get_a_part_each_and_the_comparison_runs_once_last(tmp_path):
    notebooks, chapters, html = tmp_path / "nb", tmp_path / "chapters", tmp_path / "html"
    fake_chapter(notebooks, "a", "from lmscope.core.results import save_results\n"
                                 "save_results('a', model, {'n': len(model)})")
    once = book.ONCE[0]
    fake_chapter(notebooks, once, "from lmscope.core.results import load_results\n"
                                  "print(sorted(load_results()))")
    book.build(["m1", "m22"], "quick", names=["a", once], notebooks=notebooks, chapters=chapters,
               output=html, library="lib")
    assert (html / "chapters" / "a.html").exists() and (html / "chapters" / "m22" / "a.html").exists()
    intro = (html / "intro.html").read_text()
    assert "The studies on m1" in intro and "The studies on m22" in intro
    compared = nbformat.read(chapters / f"{once}.ipynb", as_version=4)
    assert compared.cells[-1].outputs[0].text == "['m1', 'm22']\n"
    timings = json.loads((chapters / "_timings.json").read_text())
    assert all(timings[page]["executed"] for page in ("a", "m22/a", once)) and timings["html"]["built"]

    book.build(["m1", "m22"], "quick", names=["a", once], notebooks=notebooks, chapters=chapters,
               output=html, library="lib")
    timings = json.loads((chapters / "_timings.json").read_text())
    assert not any(timings[page]["executed"] for page in ("a", "m22/a", once))
    assert timings["html"]["built"] is False, "nothing changed: the HTML is kept as it is"
