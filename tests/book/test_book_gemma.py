"""The quick book on the second embedded model (Gemma 3 270M): every chapter runs without an error.

One quick build per test session for this module (LMSCOPE_QUICK_BOOK_GEMMA=DIR reuses one).
Skipped when the Gemma 3 package is not installed (``make setup`` installs it).

``LMSCOPE_BOOK_GEMMA=0`` skips it (it adds about ten minutes on 2 cores).
"""

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from conftest import book
from test_book import error_outputs

pytestmark = pytest.mark.slow
GEMMA = "gemma-3-270m"


@pytest.fixture(scope="module")
def gemma_book(tmp_path_factory):
    from lmscope.core.models import EMBEDDED_MODELS

    if os.environ.get("LMSCOPE_BOOK_GEMMA") == "0":
        pytest.skip("LMSCOPE_BOOK_GEMMA=0: the quick book on Gemma 3 is skipped")

    if GEMMA not in EMBEDDED_MODELS or importlib.util.find_spec(EMBEDDED_MODELS[GEMMA].package) is None:
        pytest.skip(f"{GEMMA} is not installed: run `make setup`")
    reuse = os.environ.get("LMSCOPE_QUICK_BOOK_GEMMA")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("quick_book_gemma")
    names = book.available_chapters()
    result = SimpleNamespace(html=root / "html", chapters=root / "chapters", names=names)
    if not (reuse and (result.html / "index.html").exists()):
        book.build(GEMMA, "quick", names=names, chapters=result.chapters, output=result.html)
    return result


@pytest.mark.parametrize("name", book.available_chapters())
def test_quick_book_on_gemma_renders_chapter(gemma_book, name):
    assert (gemma_book.html / "chapters" / f"{name}.html").exists(), f"{name}: no HTML page on {GEMMA}"
    executed = nbformat.read(gemma_book.chapters / f"{name}.ipynb", as_version=4)
    assert error_outputs(executed) == []
    injected = [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and GEMMA in injected[0], f"{name} did not run on {GEMMA}"
