"""Build the lmscope book: run each chapter notebook with papermill, then Jupyter Book.

    python book/build.py --model smollm2-135m --model gemma-3-270m --profile full [-p name value ...]

(``make book`` runs this with the project's environment.)

The chapters are the flat list in ``book/_toc.yml`` (``- file: chapters/NAME``); the
source of chapter NAME is ``notebooks/NAME.ipynb``. A listed chapter whose notebook does
not exist yet is skipped with a warning, so the book builds while studies are in progress.
Chapters listed in :data:`ONCE` (the two-model comparison) run once, after every model.

Steps:
1. papermill runs each notebook with ``model``, ``profile`` and any ``-p`` parameters and
   writes the executed copy to ``book/chapters/NAME.ipynb`` (first model) or
   ``book/chapters/<model>/NAME.ipynb`` (the others). ``$LMSCOPE_RESULTS`` points at
   ``<chapters>/_results`` so each chapter's headline numbers land in this build's folder.
   A chapter is reused when its cache key (the notebook, every library source, the
   parameters and the model: :func:`chapter_key`) matches the key saved beside the executed
   copy. A failing cell stops the build with a :class:`BookError` naming the notebook and
   the cell; the executed copy, error included, stays to read.
2. The executed copies are tidied for the static page (:func:`tidy_for_static`): runs of
   stream output merge into one block, widget outputs become a one-line note.
3. Jupyter Book 1.x builds HTML from a staged copy of ``book/`` (MathJax copied in from the
   npm package, :func:`mathjax_file`) into a temporary folder beside the output, with
   warnings as errors.
4. Only then the new HTML replaces ``book/_build/html``: a failed run leaves the last good
   build in place. When no executed chapter, results file, ``book/`` source or config changed
   since the last build (:func:`html_key`, saved in the HTML folder), Jupyter Book is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
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
LIBRARY = ROOT / "lib" / "lmscope"
ONCE = ("05_two_models",)  # chapters that read every model's results: run once, last
# MathJax 3 from the npm package (`make mathjax`), served from the book's _static folder.
MATHJAX = ROOT / ".venv" / "mathjax" / "node_modules" / "mathjax" / "es5" / "tex-svg-full.js"
SLOW_CELL = 10.0  # seconds: cells that run longer are logged with their time
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p class='lmscope-widget-note'>(An interactive widget stands here when the notebook runs "
               "in JupyterLab or Voil\u00e0: <code>make lab</code>. In this static page, use the "
               "precomputed explorer of this chapter instead.)</p>")

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


def _cell_progress(name: str):
    """nbclient hooks that log every code cell running longer than :data:`SLOW_CELL` seconds."""
    started: dict[int, float] = {}

    def on_start(cell, cell_index, **_):
        started[cell_index] = time.perf_counter()

    def on_executed(cell, cell_index, **_):
        seconds = time.perf_counter() - started.pop(cell_index, time.perf_counter())
        if seconds >= SLOW_CELL:
            first = (cell.source.strip().splitlines() or [""])[0][:60]
            log.info("    %s: cell %d took %.0f s (%s)", name, cell_index, seconds, first)

    return {"on_cell_start": on_start, "on_cell_executed": on_executed}


def execute(name: str, parameters: dict, *, notebooks: Path = NOTEBOOKS,
            chapters: Path = CHAPTERS, timeout: int | None = None, results: Path | None = None) -> Path:
    """Run ``notebooks/NAME.ipynb`` with papermill into ``chapters/NAME.ipynb``.

    ``results`` (default ``chapters/_results``) becomes ``$LMSCOPE_RESULTS`` for the kernel.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, target = notebooks / f"{name}.ipynb", chapters / f"{name}.ipynb"
    chapters.mkdir(parents=True, exist_ok=True)
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    results = Path(results) if results is not None else chapters / "_results"
    results.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("LMSCOPE_RESULTS")
    os.environ["LMSCOPE_RESULTS"] = str(results.resolve())
    try:
        with reliable_kernel_replies():
            papermill.execute_notebook(
                str(source), str(target), parameters=parameters, kernel_name=ensure_kernel(),
                language="python", execution_timeout=timeout or execution_timeout(),
                cwd=str(notebooks), progress_bar=False, **_cell_progress(name),
            )
    except PapermillExecutionError as err:
        first_line = err.source.strip().splitlines()[0] if err.source.strip() else ""
        raise BookError(
            f"notebook {source.name} failed in cell {_source_index(target, err.cell_index)} "
            f"(counting from 0; it starts {first_line!r}): {err.ename}: {err.evalue}\n"
            f"executed copy with the error: {target}"
        ) from err
    finally:
        if previous is None:
            os.environ.pop("LMSCOPE_RESULTS", None)
        else:
            os.environ["LMSCOPE_RESULTS"] = previous
    return target


# -- the cache of executed chapters ---------------------------------------------------------------

def library_digest(library: Path = LIBRARY) -> str:
    """sha256 over every file of the library (paths and bytes), caches and bytecode left out."""
    digest = hashlib.sha256()
    for path in sorted(library.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}:
            digest.update(str(path.relative_to(library)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def chapter_key(name: str, parameters: dict, *, notebooks: Path = NOTEBOOKS, library: str | None = None) -> str:
    """Cache key of one execution: the notebook's bytes, the library, the parameters (model included)."""
    digest = hashlib.sha256((notebooks / f"{name}.ipynb").read_bytes())
    digest.update((library if library is not None else library_digest()).encode())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _key_file(chapters: Path, name: str) -> Path:
    return chapters / f".{name}.key"


def is_cached(name: str, key: str, chapters: Path) -> bool:
    """True when ``chapters/NAME.ipynb`` was executed with cache key ``key``."""
    path = _key_file(chapters, name)
    return (chapters / f"{name}.ipynb").exists() and path.exists() and path.read_text().strip() == key


def execute_cached(name: str, parameters: dict, *, notebooks: Path = NOTEBOOKS, chapters: Path = CHAPTERS,
                   timeout: int | None = None, results: Path | None = None,
                   library: str | None = None) -> bool:
    """Execute chapter ``name`` unless its executed copy is current; True when it ran."""
    key = chapter_key(name, parameters, notebooks=notebooks, library=library)
    if is_cached(name, key, chapters):
        return False
    _key_file(chapters, name).unlink(missing_ok=True)
    execute(name, parameters, notebooks=notebooks, chapters=chapters, timeout=timeout, results=results)
    tidy_for_static(chapters / f"{name}.ipynb")
    _key_file(chapters, name).write_text(key + "\n")
    return True


# -- the executed notebook, tidied for a page without a kernel ------------------------------------

def tidy_for_static(path: Path) -> None:
    """Merge runs of stream output of one cell into one block; widget outputs become a short note.

    (A widget saved without its state renders as an empty box in a static page.) The notebook's
    widget state goes too, so the page loads no widget manager from a CDN.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if out.output_type in ("display_data", "execute_result") and WIDGET_MIME in data:
                out = nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE,
                                                                   "text/plain": "(interactive widget)"})
                if outputs and outputs[-1].get("data", {}).get("text/html") == WIDGET_NOTE:
                    continue
            if (out.output_type == "stream" and outputs and outputs[-1].output_type == "stream"
                    and outputs[-1].name == out.name):
                outputs[-1].text += out.text
                continue
            outputs.append(out)
        cell.outputs = outputs
    # without widget state, myst-nb loads no widget manager (require.js and the html-manager from a CDN)
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def _source_index(executed: Path, index: int) -> int:
    """Index in the source notebook of cell ``index`` of papermill's output, which adds a cell."""
    import nbformat

    cells = nbformat.read(executed, as_version=4).cells
    injected = [i for i, cell in enumerate(cells) if "injected-parameters" in cell.metadata.get("tags", [])]
    return index - sum(i < index for i in injected)


FINDINGS = "<!-- findings: book/build.py puts each chapter's saved numbers here -->"


def write_findings(intro: Path, results: Path) -> None:
    """Replace the findings placeholder in the staged ``intro.md`` by the saved headline numbers."""
    if not intro.exists() or FINDINGS not in intro.read_text():
        return
    from lmscope.core.results import load_results
    from lmscope.two_models import findings_markdown

    found = findings_markdown(load_results(results)) if results.exists() else ""
    text = found or "*(The numbers appear here once the chapters have been built with `make book`.)*"
    intro.write_text(intro.read_text().replace(FINDINGS, text))


def mathjax_file(path: Path = MATHJAX) -> Path:
    """MathJax's single-file SVG build from the npm package, or a BookError saying how to get it."""
    if not path.exists():
        raise BookError(f"MathJax is missing ({path}): run `make mathjax` "
                        "(npm install --prefix .venv/mathjax mathjax@3)")
    return path


def build_html(names: list[str], output: Path = HTML, *, chapters: Path = CHAPTERS,
               book: Path = BOOK, config: Path = CONFIG, strict: bool = True,
               parts: list[tuple[str, list[str]]] | None = None) -> Path:
    """Build HTML for ``intro`` plus the executed ``chapters/NAME.ipynb``, then swap it into ``output``.

    The build runs from a staged copy of ``book/`` whose TOC lists exactly ``names`` (names
    may hold a folder: ``gemma-3-270m/00_model``), grouped in captioned ``parts`` when given;
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
            (source / "chapters" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(chapters / f"{name}.ipynb", source / "chapters" / f"{name}.ipynb")
        write_findings(source / "intro.md", chapters / "_results")
        (source / "_static" / "mathjax").mkdir(parents=True, exist_ok=True)
        shutil.copy2(mathjax_file(), source / "_static" / "mathjax" / MATHJAX.name)
        toc = {"format": "jb-book", "root": "intro"}
        if parts:
            toc["parts"] = [{"caption": caption, "chapters": [{"file": f"chapters/{n}"} for n in part]}
                            for caption, part in parts]
        elif names:
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
        tidy_html(Path(tmp) / "_build" / "html")
        _swap(Path(tmp) / "_build" / "html", output)
    return output


_SCRIPT_TAG = re.compile(r"[ \t]*<script\b[^>]*>.*?</script>\n?", re.S)
_SRC = re.compile(r"""\ssrc=["']([^"'?]+)""")


def tidy_html(html: Path) -> None:
    """Fix two Jupyter Book 1.x page defects that show as errors in a browser console.

    Some extensions add their scripts once per page built so far (sphinx-thebe's inline
    ``const THEBE_JS_URL``, MathJax), so later pages load them twice: a second ``const`` is a
    SyntaxError, a second MathJax breaks the first. Keep the first ``<script>`` of each source
    (or inline text). The theme's mode defaults to ``""`` without a saved choice, which the
    theme reports as an error: default it to ``"light"``.
    """
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        seen: set[str] = set()

        def first_only(match: re.Match) -> str:
            tag = match.group(0)
            src = _SRC.search(tag.split(">", 1)[0])
            key = src.group(1) if src else tag.strip()
            if key in seen:
                return ""
            seen.add(key)
            return tag

        head, sep, body = text.partition("</head>")
        head = _SCRIPT_TAG.sub(first_only, head)
        head = head.replace('localStorage.getItem("mode") || ""', 'localStorage.getItem("mode") || "light"')
        page.write_text(head + sep + body, encoding="utf-8")


def _swap(new: Path, output: Path) -> None:
    """Replace folder ``output`` by ``new`` (same file system), removing the old one last."""
    old = output.with_name(output.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    new.rename(output)
    shutil.rmtree(old, ignore_errors=True)


MODEL_TITLES = {"smollm2-135m": "SmolLM2-135M-Instruct", "gemma-3-270m": "Gemma 3 270M"}


def model_folder(model: str) -> str:
    """File-safe folder name for a model (a Hugging Face id ``org/name`` becomes ``org--name``)."""
    return model.replace("/", "--").replace("\\", "--")


def build(model: str | list[str], profile: str, params: dict | None = None, *,
          names: list[str] | None = None, notebooks: Path = NOTEBOOKS, chapters: Path = CHAPTERS,
          output: Path = HTML, timeout: int | None = None, strict: bool = True,
          library: str | None = None) -> Path:
    """Execute the chapters (all available ones unless ``names``) for each model, then build the HTML.

    ``model`` is one name or a list: the first model's chapters are ``chapters/NAME``, each
    other model's ``chapters/<model>/NAME`` in a part of its own; chapters in :data:`ONCE`
    run once, after all models, and read every model's results. A chapter whose cache key
    is unchanged is not executed again. ``library`` overrides the library digest (tests).
    Returns the HTML folder. Raises :class:`BookError` on the first failing notebook or a
    failed Jupyter Book build; ``output`` is then left as it was.
    """
    models = [model] if isinstance(model, str) else list(model)
    if not models:
        raise BookError("no model to build the book with: pass at least one --model")
    names = available_chapters(notebooks=notebooks) if names is None else list(names)
    missing = [name for name in names if not (notebooks / f"{name}.ipynb").exists()]
    if missing:
        raise BookError(f"no notebook for chapter(s) {', '.join(missing)} in {notebooks}")
    per_model = [name for name in names if name not in ONCE]
    once = [name for name in names if name in ONCE]
    library = library or library_digest()
    results = chapters / "_results"
    jobs = []  # (page name, folder, chapter, parameters)
    for m, model_name in enumerate(models):
        folder = chapters if m == 0 else chapters / model_folder(model_name)
        prefix = "" if m == 0 else f"{model_folder(model_name)}/"
        parameters = {"model": model_name, "profile": profile, **(params or {})}
        jobs += [(prefix + name, folder, name, parameters) for name in per_model]
    jobs += [(name, chapters, name, {"model": models[0], "profile": profile, **(params or {})}) for name in once]

    timings = {}
    for i, (page, folder, name, parameters) in enumerate(jobs, 1):
        start = time.perf_counter()
        log.info("[%d/%d] %s (%s, %s)", i, len(jobs), page, parameters["model"], profile)
        ran = execute_cached(name, parameters, notebooks=notebooks, chapters=folder, timeout=timeout,
                             results=results, library=library)
        timings[page] = {"seconds": round(time.perf_counter() - start, 1), "executed": ran}
        log.info("[%d/%d] %s %s in %.0f s", i, len(jobs), page, "done" if ran else "unchanged, reused",
                 time.perf_counter() - start)
    start = time.perf_counter()
    pages = [page for page, *_ in jobs]
    parts = None
    if len(models) > 1:
        parts = [(f"The studies on {MODEL_TITLES.get(m, m)}", [p for p, f, n, q in jobs if q["model"] == m
                                                               and n not in ONCE]) for m in models]
        if once:
            parts.append(("Comparing the models", once))
    key = html_key(pages, parts, chapters, strict)
    stamp = Path(output) / ".lmscope-html.key"
    built = not (stamp.exists() and stamp.read_text().strip() == key)
    if built:
        html = build_html(pages, output, chapters=chapters, strict=strict, parts=parts)
        (html / ".lmscope-html.key").write_text(key + "\n")
        log.info("built %s in %.0f s", html, time.perf_counter() - start)
    else:
        html = Path(output).resolve()
        log.info("HTML unchanged (no chapter, book source or config changed): %s kept", html)
    timings["html"] = {"seconds": round(time.perf_counter() - start, 1), "built": built}
    (chapters / "_timings.json").write_text(json.dumps(timings, indent=1))
    return html


def html_key(pages: list[str], parts, chapters: Path, strict: bool, book: Path = BOOK,
             config: Path = CONFIG) -> str:
    """What the HTML is made of: the executed chapters (their bytes), the TOC, book/ sources, the config."""
    digest = hashlib.sha256(json.dumps([pages, parts, strict]).encode())
    for page in pages:
        digest.update((chapters / f"{page}.ipynb").read_bytes())
    for path in sorted((chapters / "_results").rglob("*.json")):  # the landing page's numbers
        digest.update(path.read_bytes())
    for path in sorted(book.rglob("*")):
        if path.is_file() and not {"_build", "chapters", "__pycache__"} & set(path.relative_to(book).parts):
            digest.update(str(path.relative_to(book)).encode() + path.read_bytes())
    digest.update(config.read_bytes())
    digest.update(mathjax_file().read_bytes()[:4096])
    return digest.hexdigest()


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
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="model the chapters run on (repeatable; default smollm2-135m); the first "
                             "model's chapters come first, each other model gets a part of its own")
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
        html = build(args.models or ["smollm2-135m"], args.profile, params, names=args.only, chapters=args.chapters,
                     output=args.output, timeout=args.timeout, strict=args.strict)
    except BookError as err:
        print(f"book: error: {err}", file=sys.stderr)
        return 1
    print(f"book: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
