"""The built book in a real browser: Debian's Chromium driven by Playwright.

Chromium comes from apt (``make chromium``, run by ``make test``), never ``playwright install``.
"""

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import book

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
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
