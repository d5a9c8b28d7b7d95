"""A real browser: Debian's headless Chromium driven by Playwright, against ``app.py`` with the real model.

Install the browser with ``make browser`` (scripts/install-browser.sh: apt-get, never a browser download).
Without /usr/bin/chromium or the playwright package the test skips and names what is missing. Set
ASSISTANT_SCREENSHOT=docs/screenshot.png to refresh the README's screenshot; otherwise it goes to tmp_path.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_ui import OFFSITE, running_app

pytestmark = pytest.mark.e2e

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser build
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSWER = 240_000  # ms: the first answer loads the model on a busy 2-core machine


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: run `make install`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob") or parsed.hostname in ("127.0.0.1", "localhost")


def test_chat_in_a_real_browser(browser, real_index, tmp_path):
    screenshot = Path(os.environ.get("ASSISTANT_SCREENSHOT") or tmp_path / "screenshot.png")
    with running_app(tmp_path, real_index) as url:
        page = browser.new_page(viewport={"width": 1360, "height": 940}, device_scale_factor=1)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        status = page.locator("#index-status")
        status.get_by_text("5 documents").wait_for()

        # ask in Chinese; the answer arrives with a numbered, expandable source
        page.locator("#question textarea").fill("初创公司缺少训练数据怎么办？")
        page.locator("#question textarea").press("Enter")
        source = page.locator("details.source").first
        source.wait_for(timeout=ANSWER)
        answer = page.locator("#chat .message-row.bot-row").last
        assert answer.locator(".cite").first.inner_text() == "[1]"
        assert re.search(r"数据增强", answer.inner_text())
        summary = source.locator("summary")
        assert "000_6d8c0b3cedab2c30.txt" in summary.inner_text() and "line" in summary.inner_text()
        summary.click()
        highlighted = source.locator("mark")
        highlighted.wait_for()
        assert "数据增强" in highlighted.inner_text()

        # upload a document; it is indexed and listed
        upload = tmp_path / "团建安排.md"
        upload.write_text(OFFSITE, "utf-8")
        page.locator("#upload input[type=file]").set_input_files(str(upload))
        page.locator("#upload-report").get_by_text("Added 1 document").wait_for(timeout=ANSWER)
        status.get_by_text("6 documents").wait_for()
        assert "团建安排.md" in page.locator("#upload-report").inner_text()
        source.scroll_into_view_if_needed()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))

        # the new document answers
        page.locator("#question textarea").fill("年度团建去哪里？")
        page.locator("#question textarea").press("Enter")
        page.locator("details.source summary", has_text="团建安排.md").first.wait_for(timeout=ANSWER)
        page.close()
    external = [u for u in requests if not _local(u)]
    assert requests and external == [], f"the page fetched from outside: {external[:5]}"
