"""Build the lmscope book: run each chapter notebook with papermill, then Jupyter Book.

    python book/build.py --model smollm2-135m --profile full [-p name value ...]

(``make book`` runs this with the project's environment.)

The chapters are the flat list in ``book/_toc.yml`` (``- file: chapters/NAME``); the
source of chapter NAME is ``notebooks/NAME.ipynb``. A listed chapter whose notebook does
not exist yet is skipped with a warning, so the book builds while studies are in progress.

Steps:
1. papermill runs each notebook with ``model``, ``profile`` and any ``-p`` parameters and
   writes the executed copy to ``book/chapters/NAME.ipynb``. A failing cell stops the
   build with a :class:`BookError` naming the notebook and the cell; the executed copy,
   error included, stays in ``book/chapters/`` to read.
2. Jupyter Book 1.x builds HTML from a staged copy of ``book/`` into a temporary folder
   beside the output, with warnings as errors.
3. Only then the new HTML replaces ``book/_build/html``: a failed run leaves the last good
   build in place.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]  # the repository: book/build.py
CONFIG = ROOT / "_config.yml"
BOOK = ROOT / "book"
TOC = BOOK / "_toc.yml"
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = BOOK / "chapters"
HTML = BOOK / "_build" / "html"
KERNEL = "lmscope"  # Jupyter kernel that runs this interpreter (the project's venv)
# Progress bars would show up in the static book as dead widgets; kernels inherit this.
QUIET = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}

log = logging.getLogger("lmscope.book")


class BookError(RuntimeError):
    """A chapter notebook failed, or Jupyter Book could not build the HTML."""


def toc_chapters(toc: Path = TOC) -> list[str]:
    """Chapter names in table-of-contents order: ``chapters/00_model`` -> ``00_model``."""
    entries = yaml.safe_load(toc.read_text()).get("chapters") or []
    return [Path(entry["file"]).name for entry in entries]


def available_chapters(toc: Path = TOC, notebooks: Path = NOTEBOOKS) -> list[str]:
    """The TOC's chapters whose source notebook exists; warns about the others."""
    names = []
    for name in toc_chapters(toc):
        if (notebooks / f"{name}.ipynb").exists():
            names.append(name)
        else:
            log.warning("skipping chapter %s: %s does not exist yet", name, notebooks / f"{name}.ipynb")
    return names


def execution_timeout(config: Path = CONFIG) -> int:
    """Per-cell timeout in seconds, from ``execute.timeout`` in ``_config.yml``."""
    return int(yaml.safe_load(config.read_text())["execute"]["timeout"])


def ensure_kernel(name: str = KERNEL) -> str:
    """Register a Jupyter kernel running this Python (idempotent); returns its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        if KernelSpecManager().get_kernel_spec(name).argv[0] == sys.executable:
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


@contextlib.contextmanager
def reliable_kernel_replies(step: float = 1.0):
    """Poll kernel replies in short slices while papermill runs a notebook.

    With the pinned jupyter_client 8 / pyzmq 27, nbclient's single long wait for a cell's
    ``execute_reply`` can miss the socket's wake-up after a cell that opens many widget
    comms, and then hangs although the kernel is idle (jupyter/nbclient#312; here 3 runs
    in 4 of a widget cell). A fresh poll finds the queued reply, so waiting in ``step``-second
    slices up to the same deadline fixes it. Restores the original method on exit.
    """
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    original = AsyncZMQSocketChannel.get_msg

    async def get_msg(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            try:
                return await original(self, left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    AsyncZMQSocketChannel.get_msg = get_msg
    try:
        yield
    finally:
        AsyncZMQSocketChannel.get_msg = original


def execute(name: str, parameters: dict, *, notebooks: Path = NOTEBOOKS,
            chapters: Path = CHAPTERS, timeout: int | None = None) -> Path:
    """Run ``notebooks/NAME.ipynb`` with papermill into ``chapters/NAME.ipynb``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, target = notebooks / f"{name}.ipynb", chapters / f"{name}.ipynb"
    chapters.mkdir(parents=True, exist_ok=True)
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    try:
        with reliable_kernel_replies():
            papermill.execute_notebook(
                str(source), str(target), parameters=parameters, kernel_name=ensure_kernel(),
                language="python", execution_timeout=timeout or execution_timeout(),
                cwd=str(notebooks), progress_bar=False,
            )
    except PapermillExecutionError as err:
        first_line = err.source.strip().splitlines()[0] if err.source.strip() else ""
        raise BookError(
            f"notebook {source.name} failed in cell {_source_index(target, err.cell_index)} "
            f"(counting from 0; it starts {first_line!r}): {err.ename}: {err.evalue}\n"
            f"executed copy with the error: {target}"
        ) from err
    return target


def _source_index(executed: Path, index: int) -> int:
    """Index in the source notebook of cell ``index`` of papermill's output, which adds a cell."""
    import nbformat

    cells = nbformat.read(executed, as_version=4).cells
    injected = [i for i, cell in enumerate(cells) if "injected-parameters" in cell.metadata.get("tags", [])]
    return index - sum(i < index for i in injected)


def build_html(names: list[str], output: Path = HTML, *, chapters: Path = CHAPTERS,
               book: Path = BOOK, config: Path = CONFIG, strict: bool = True) -> Path:
    """Build HTML for ``intro`` plus the executed ``chapters/NAME.ipynb``, then swap it into ``output``.

    The build runs from a staged copy of ``book/`` whose TOC lists exactly ``names``;
    ``output`` is replaced only after Jupyter Book succeeds.
    """
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as tmp:
        source = Path(tmp) / "source"
        shutil.copytree(book, source, ignore=shutil.ignore_patterns("_build*", "chapters", "_toc.yml", "*.py",
                                                                    "__pycache__"))
        (source / "chapters").mkdir()
        for name in names:
            shutil.copy2(chapters / f"{name}.ipynb", source / "chapters")
        toc = {"format": "jb-book", "root": "intro"}
        if names:
            toc["chapters"] = [{"file": f"chapters/{name}"} for name in names]
        (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))

        jupyter_book = Path(sys.executable).parent / "jupyter-book"
        command = [str(jupyter_book), "build", str(source), "--config", str(config),
                   "--toc", str(source / "_toc.yml"), "--path-output", tmp]
        if strict:
            command += ["-W", "--keep-going"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise BookError(f"jupyter-book build failed (exit {result.returncode}):\n{tail}")
        _swap(Path(tmp) / "_build" / "html", output)
    return output


def _swap(new: Path, output: Path) -> None:
    """Replace folder ``output`` by ``new`` (same file system), removing the old one last."""
    old = output.with_name(output.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    new.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def build(model: str, profile: str, params: dict | None = None, *, names: list[str] | None = None,
          notebooks: Path = NOTEBOOKS, chapters: Path = CHAPTERS, output: Path = HTML,
          timeout: int | None = None, strict: bool = True) -> Path:
    """Execute the chapters (all available ones unless ``names``), then build the HTML book.

    Returns the HTML folder. Raises :class:`BookError` on the first failing notebook or a
    failed Jupyter Book build; ``output`` is then left as it was.
    """
    names = available_chapters(notebooks=notebooks) if names is None else list(names)
    missing = [name for name in names if not (notebooks / f"{name}.ipynb").exists()]
    if missing:
        raise BookError(f"no notebook for chapter(s) {', '.join(missing)} in {notebooks}")
    parameters = {"model": model, "profile": profile, **(params or {})}
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        log.info("[%d/%d] running %s with %s", i, len(names), name, parameters)
        execute(name, parameters, notebooks=notebooks, chapters=chapters, timeout=timeout)
        log.info("[%d/%d] %s done in %.0f s", i, len(names), name, time.perf_counter() - start)
    start = time.perf_counter()
    html = build_html(names, output, chapters=chapters, strict=strict)
    log.info("built %s in %.0f s", html, time.perf_counter() - start)
    return html


def parse_value(text: str):
    """Read a ``-p`` value as papermill's CLI does: bool, None, int, float, else the string."""
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python book/build.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model name passed to every notebook")
    parser.add_argument("--profile", default="full", help="'full' for the book, 'quick' for tests")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="extra papermill parameter (repeatable)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these chapters, e.g. 00_model")
    parser.add_argument("--output", type=Path, default=HTML, help=f"HTML folder (default {HTML})")
    parser.add_argument("--chapters", type=Path, default=CHAPTERS, help="where executed notebooks go")
    parser.add_argument("--timeout", type=int, help="per-cell timeout in seconds (default: _config.yml)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="do not turn Sphinx warnings into errors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="book: %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    params = {name: parse_value(value) for name, value in args.parameter}
    try:
        html = build(args.model, args.profile, params, names=args.only, chapters=args.chapters,
                     output=args.output, timeout=args.timeout, strict=args.strict)
    except BookError as err:
        print(f"book: error: {err}", file=sys.stderr)
        return 1
    print(f"book: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
