"""The built book in a real browser: Debian's Chromium driven by Playwright.

Chromium comes from apt (``make chromium``, run by ``make test``), never ``playwright install``.
Every request that is not to the local book is blocked (the book must be self-contained), and
a page may show no console error and no failed request. Screenshots are kept as test artifacts
in ``$LMSCOPE_SCREENSHOTS`` (default ``book/_build/screenshots``).
"""

import functools
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import book

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("LMSCOPE_SCREENSHOTS") or book.ROOT / "book" / "_build" / "screenshots")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(quick_book):
    """Base URL of the quick book served over HTTP on 127.0.0.1."""
    handler = functools.partial(QuietHandler, directory=str(quick_book.html))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.mark.parametrize("name", book.available_chapters())
def test_chapter_figure_is_displayed(site, browser, name, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{site}/index.html")  # redirects to the intro
    page.wait_for_url("**/intro.html")

    page.locator(f"nav a[href='chapters/{name}.html']").first.click()
    page.wait_for_url(f"**/chapters/{name}.html")
    page.wait_for_load_state("load")

    figure = page.locator("article img[src$='.png'], article img[src^='data:image/png']").first
    figure.scroll_into_view_if_needed()
    assert figure.is_visible(), f"{name}: the first figure is not visible"
    assert figure.evaluate("img => img.complete && img.naturalWidth > 0"), f"{name}: figure did not load"

    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


# -- self-contained, explorable, nothing cut off ------------------------------------------------------

def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def open_page(browser, site: str, path: str):
    """A page at ``site/path`` with every non-local request blocked; returns (page, problems)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def route(r):
        if r.request.url.startswith(site) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"blocked request to {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.goto(f"{site}/{path}")
    page.wait_for_load_state("networkidle")
    return page, problems


# Elements wider than the article column, outside any box that scrolls or clips them.
OVERFLOW_JS = """() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('article');
  const right = article.getBoundingClientRect().right + 2;
  const clipped = el => { for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  return Array.from(article.querySelectorAll('*')).filter(el => {
      const r = el.getBoundingClientRect(); return r.width > 0 && r.right > right && !clipped(el); })
    .slice(0, 5).map(el => el.tagName + '.' + el.className + ' right=' + Math.round(el.getBoundingClientRect().right));
}"""


@pytest.mark.parametrize("name", ["intro"] + book.available_chapters())
def test_page_is_self_contained_and_nothing_overflows(site, browser, name):
    path = "intro.html" if name == "intro" else f"chapters/{name}.html"
    page, problems = open_page(browser, site, path)
    if page.locator("article .math").count():
        page.wait_for_selector("mjx-container", timeout=20_000)  # MathJax, served by the book, typeset it
    assert problems == [], f"{name}: {problems}"
    assert page.evaluate(OVERFLOW_JS) == [], f"{name}: elements wider than the page column"
    html = page.content()
    remote = re.findall(r"<(?:script|link|img|iframe)[^>]*(?:src|href)=\"(https?://[^\"]+)", html)
    assert remote == [], f"{name}: remote resources {remote[:5]}"
    page.screenshot(path=str(screenshot_path(name)), full_page=True)
    page.close()


@pytest.mark.parametrize("name", book.available_chapters())
def test_static_explorer_responds_to_its_controls(site, browser, name):
    page, problems = open_page(browser, site, f"chapters/{name}.html")
    explorers = page.locator("div.lmx")
    if explorers.count() == 0:
        pytest.skip(f"{name} has no static explorer")
    for i in range(explorers.count()):
        explorer = explorers.nth(i)
        explorer.scroll_into_view_if_needed()
        shown = explorer.locator(".lmx-panel:not([hidden])")
        assert shown.count() == 1, f"{name}: one panel must be shown at load"
        first = shown.get_attribute("data-key"), shown.inner_html()
        select = explorer.locator("select").first
        values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
        if len(values) > 1:
            select.select_option(values[1])
            now = explorer.locator(".lmx-panel:not([hidden])")
            changed = now.count() == 1 and (now.get_attribute("data-key"), now.inner_html()) != first
            assert changed or explorer.locator(".lmx-missing:not([hidden])").count() == 1, \
                f"{name}: the view did not change with the control"
            select.select_option(values[0])
        tip = explorer.locator(".lmx-panel:not([hidden]) [data-tip]").first
        if tip.count():
            before = explorer.locator(".lmx-info").text_content()
            tip.hover()
            info = explorer.locator(".lmx-info").text_content()
            assert info == tip.get_attribute("data-tip") and info != before, f"{name}: hover shows no details"
        search = explorer.locator("input[data-lmx-search]")
        if search.count():
            rows = explorer.locator(".lmx-panel:not([hidden]) [data-search]")
            word = rows.first.get_attribute("data-search").split()[0]
            search.fill(word)
            visible = rows.evaluate_all("rs => rs.filter(r => r.style.display !== 'none').length")
            assert 1 <= visible <= rows.count(), f"{name}: search for {word!r} kept {visible} rows"
            search.fill("")
        explorer.screenshot(path=str(screenshot_path(f"{name}-explorer-{i}")))
    assert problems == [], f"{name}: {problems}"
    page.close()
