"""The debugger as a web app: Voilà serves it, Playwright drives Debian's Chromium.

Marked ``browser`` and ``slow``. Never downloads a browser: it needs /usr/bin/chromium
(`make chromium` installs Debian's package).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "notebooks" / "02_lm_debugger_app.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until Voilà listens. (A GET of the page would start a kernel that runs the notebook:
    polling it would start one per try, and the browser's visit one more.)"""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"Voilà exited with code {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Voilà did not listen at {url} within {timeout} s")


@pytest.fixture
def voila_url(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (make chromium)")
    port = _free_port()
    voila = Path(sys.executable).with_name("voila")
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen(
        [str(voila), str(APP), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--ServerApp.open_browser=False"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_http(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_browser_trace_and_intervene(voila_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.goto(voila_url, timeout=180_000)  # Voilà runs the notebook before it answers
            prompt = page.locator(".lmscope-prompt textarea")
            prompt.wait_for(timeout=180_000)
            prompt.fill("The capital of France is")
            page.locator("button.lmscope-trace").click()
            prediction = page.locator(".lmscope-prediction")
            expect(prediction).to_contain_text("Paris", timeout=60_000)
            expect(page.locator(".lmscope-row")).to_have_count(30, timeout=30_000)
            assert re.search(r"Prediction.*Paris", prediction.inner_text(), re.S)
            first = prediction.locator("code").nth(1).inner_text()  # code 0 is the traced token
            assert "Paris" in first

            # find a value by search, then give it a large coefficient
            page.locator(".lmscope-search input").fill("football")
            page.locator("button.lmscope-search-button").click()
            hit = page.locator("button.lmscope-hit").first
            expect(hit).to_be_visible(timeout=30_000)
            name = re.match(r"L\d+D\d+", hit.inner_text().strip())[0]
            hit.click()
            expect(page.locator(".lmscope-details-title")).to_contain_text(name, timeout=30_000)
            page.locator(".lmscope-add-name input").fill(name)
            page.locator(".lmscope-add-coeff input").fill("200")
            page.locator("button.lmscope-add").click()
            expect(prediction).to_contain_text(f"{name}=200", timeout=60_000)
            expect(page.locator(".lmscope-intervention")).to_have_count(1)
            changed = prediction.locator("code").nth(1).inner_text()
            assert "Paris" not in changed, changed

            # bad input shows a message, not a traceback
            page.locator(".lmscope-add-name input").fill("L99D1")
            page.locator("button.lmscope-add").click()
            message = page.locator(".lmscope-message")
            expect(message).to_contain_text("layer 99 does not exist", timeout=30_000)
            assert "Traceback" not in page.content()
            page.screenshot(path=str(tmp_path / "debugger.png"), full_page=False)
            assert (tmp_path / "debugger.png").stat().st_size > 10_000
        finally:
            browser.close()


def test_browser_attribution_patching_and_bad_input(voila_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.goto(voila_url, timeout=180_000)
            prompt = page.locator(".lmscope-prompt textarea")
            prompt.wait_for(timeout=180_000)
            prompt.fill("The capital of France is")
            message = page.locator(".lmscope-message")

            # attribution of the prediction at the last position: two figures and the exact sum
            page.locator("button.lmscope-attribute").click()
            summary = page.locator(".lmscope-attribution")
            expect(summary).to_contain_text("Paris", timeout=120_000)
            expect(summary).to_contain_text("sum of the parts")
            expect(page.locator(".lmscope-attribution-plot img")).to_have_count(2, timeout=30_000)
            m = re.search(r"= (-?[\d.]+) \(sum of the parts (-?[\d.]+)\)", summary.inner_text())
            assert m and abs(float(m[1]) - float(m[2])) < 1e-2, summary.inner_text()

            # a target that is not one token: a message naming the box
            page.locator(".lmscope-dla-target input").fill(" Parisian capital")
            page.locator("button.lmscope-attribute").click()
            expect(message).to_contain_text("token box", timeout=60_000)

            # patching with a corrupted prompt of another length, then of the same length
            corrupted = page.locator(".lmscope-corrupted input")
            corrupted.fill("The capital city of Italy is")
            page.locator("button.lmscope-patch").click()
            expect(message).to_contain_text("same length", timeout=60_000)
            corrupted.fill("The capital of Italy is")
            page.locator("button.lmscope-patch").click()
            expect(page.locator(".lmscope-patching-plot img")).to_have_count(1, timeout=300_000)
            expect(page.locator(".lmscope-patching")).to_contain_text("clean")
            assert "Traceback" not in page.content()
            page.screenshot(path=str(tmp_path / "attribution.png"), full_page=True)
            assert (tmp_path / "attribution.png").stat().st_size > 10_000
        finally:
            browser.close()
