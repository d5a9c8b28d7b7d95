"""App start to the first answer in a real browser (issue 17's target: <= 6 s).

Starts ``python app.py`` as a new process on a free loopback port over the configured index (the
default corpus's, ``ASSISTANT_INDEX``), with headless Chromium already running (Debian's, driven by
Playwright, as tests/test_browser.py does: ``make browser``), opens the page as soon as the port
accepts connections, asks one question and waits for its first cited source. Reports, from the
process start: the port open, the page loaded, the first answer shown; best and all of ``--runs``.

Usage: python -m bench.app_start [--runs 3] [--question "…"]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(browser, question: str, timeout: float = 300) -> dict:
    port = _free_port()
    env = {**os.environ, "ASSISTANT_HOST": "127.0.0.1", "ASSISTANT_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    process = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"app.py exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() - t0 > timeout:
                    raise SystemExit(f"app.py did not listen in {timeout:.0f} s") from None
                time.sleep(0.05)
        listening = time.monotonic() - t0
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#question textarea").wait_for()
        loaded = time.monotonic() - t0
        page.locator("#question textarea").fill(question)
        page.locator("#question textarea").press("Enter")
        page.locator("details.source").first.wait_for(timeout=timeout * 1000)
        answered = time.monotonic() - t0
        page.close()
        return {"listening_s": listening, "page_s": loaded, "first_answer_s": answered}
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--question", default="GAN 的损失函数是什么？")
    args = ap.parse_args(argv)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing: run `make browser`", file=sys.stderr)
        return 2
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        runs = [one_run(browser, args.question) for _ in range(args.runs)]
        browser.close()
    for run in runs:
        print(json.dumps({k: round(v, 2) for k, v in run.items()}))
    best = min(runs, key=lambda r: r["first_answer_s"])
    print(f"app start to first answer in the browser: best {best['first_answer_s']:.1f} s (port open "
          f"{best['listening_s']:.1f} s, page {best['page_s']:.1f} s); all: "
          + ", ".join(f"{r['first_answer_s']:.1f} s" for r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
