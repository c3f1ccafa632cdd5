"""The book pipeline: the quick build renders every chapter; a failure is loud and keeps the last build."""

import logging
import re
from pathlib import Path

import nbformat
import pytest

from conftest import book

CHAPTERS = book.available_chapters()
PNG = re.compile(r'<img[^>]*\ssrc="([^"]*\.png|data:image/png[^"]*)"')


def error_outputs(notebook) -> list[str]:
    """Errors and tracebacks in a notebook's outputs, except in cells tagged ``raises-exception``."""
    found = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                found.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and "Traceback" in out.text:
                found.append(f"cell {i}: traceback on {out.name}")
    return found


def write_notebook(path: Path, *sources: str, markdown: str = "# A chapter") -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown)])
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


# -- the real book, quick profile ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_quick_book_renders_chapter(quick_book, name):
    page = quick_book.html / "chapters" / f"{name}.html"
    assert page.exists(), f"{name}: no HTML page"
    assert f'href="chapters/{name}.html"' in (quick_book.html / "intro.html").read_text()

    figures = PNG.findall(page.read_text())
    assert figures, f"{name}: no rendered figure (<img> with a PNG) in {page}"
    for src in figures:
        assert src.startswith("data:") or (page.parent / src).resolve().stat().st_size > 0, src

    executed = nbformat.read(quick_book.chapters / f"{name}.ipynb", as_version=4)
    assert error_outputs(executed) == []


def test_every_notebook_is_in_the_table_of_contents():
    """Every notebook is a chapter, except Voila apps (``*_app.ipynb``), which are not in the book."""
    notebooks = sorted(p.stem for p in book.NOTEBOOKS.glob("*.ipynb") if not p.stem.endswith("_app"))
    assert set(notebooks) <= set(book.toc_chapters()), "add new notebooks to book/_toc.yml"


@pytest.mark.parametrize("path", sorted(book.NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert dirty == [], f"{path.name}: strip the outputs of cells {dirty}"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "profile" in tagged[0].source and "model" in tagged[0].source


# -- the builder ----------------------------------------------------------------------------------

def test_failing_notebook_names_notebook_and_cell_and_keeps_previous_build(tmp_path):
    write_notebook(tmp_path / "nb" / "broken.ipynb", "x = 1", "raise ValueError('boom')")
    previous = tmp_path / "html"
    previous.mkdir()
    (previous / "index.html").write_text("last good build")

    with pytest.raises(book.BookError, match=r"broken\.ipynb failed in cell 2 .*ValueError: boom"):
        book.build("smollm2-135m", "quick", names=["broken"], notebooks=tmp_path / "nb",
                   chapters=tmp_path / "chapters", output=previous)

    assert (previous / "index.html").read_text() == "last good build"
    executed = nbformat.read(tmp_path / "chapters" / "broken.ipynb", as_version=4)
    assert "ValueError: boom" in error_outputs(executed)[0]


def test_build_swaps_in_new_html_only_on_success(tmp_path):
    chapters, output = tmp_path / "chapters", tmp_path / "out" / "html"
    write_notebook(chapters / "good.ipynb", markdown="# Good\n\nSee {ref}`good-label`.\n\n(good-label)=\n## Here")
    write_notebook(chapters / "bad.ipynb", markdown="# Bad\n\nSee {ref}`no-such-label`.")

    book.build_html(["good"], output, chapters=chapters)
    assert (output / "chapters" / "good.html").exists()

    with pytest.raises(book.BookError, match="jupyter-book build failed"):
        book.build_html(["bad"], output, chapters=chapters)  # a warning is an error
    assert (output / "chapters" / "good.html").exists(), "the last good build must stay"
    assert not (output / "chapters" / "bad.html").exists()
    assert sorted(p.name for p in output.parent.iterdir()) == ["html"], "temporary folders left behind"


def test_missing_chapter_notebook_is_skipped_with_a_warning(tmp_path, caplog):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n- file: chapters/a\n- file: chapters/b\n")
    write_notebook(tmp_path / "a.ipynb")
    with caplog.at_level(logging.WARNING, logger="lmscope.book"):
        assert book.available_chapters(toc, tmp_path) == ["a"]
    assert "skipping chapter b" in caplog.text
    with pytest.raises(book.BookError, match="no notebook for chapter"):
        book.build("m", "quick", names=["b"], notebooks=tmp_path, chapters=tmp_path / "out")


@pytest.mark.parametrize("text, value", [("20", 20), ("0.5", 0.5), ("True", True), ("None", None),
                                         ("gpt2-medium", "gpt2-medium")])
def test_parameter_values_are_read_like_papermill(text, value):
    assert book.parse_value(text) == value


def test_reliable_kernel_replies_restores_the_client():
    from jupyter_client.channels import AsyncZMQSocketChannel

    original = AsyncZMQSocketChannel.get_msg
    with book.reliable_kernel_replies():
        assert AsyncZMQSocketChannel.get_msg is not original
    assert AsyncZMQSocketChannel.get_msg is original
