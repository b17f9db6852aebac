"""Headless Chromium opens the report of every `study` run (the planted control and a tiny model of each tested
architecture): the coalition explorer shows its cards, filters by layer, and the page logs no error and makes no
request outside the file."""

import json
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.heavy(60),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="Debian chromium is not installed at /usr/bin/chromium (`make browser` installs it)"),
]


def test_every_study_report_opens_its_explorer(planted_run, arch_runs):
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    runs = {"planted": planted_run.rd.root, **{a: r[1] for a, r in arch_runs.items()}}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for name, root in runs.items():
            cards = json.loads((root / "cards.json").read_text())["cards"]
            errors: list[str] = []
            foreign: list[str] = []
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.on("request", lambda r, foreign=foreign: None if r.url.startswith(("file:", "data:", "about:"))
                    else foreign.append(r.url))
            page.goto(Path(root / "report.html").resolve().as_uri(), wait_until="load")
            box = page.locator("#cards-explorer")
            shown = box.locator("div.card")
            assert shown.count() == min(len(cards), 60), name  # the explorer pages 60 cards at a time
            layers = sorted({c["layer"] for c in cards})
            box.locator("#cards-layer").select_option(layers[-1])
            assert {shown.nth(i).get_attribute("data-layer") for i in range(shown.count())} == {layers[-1]}, name
            assert not errors, (name, errors)
            assert not foreign, (name, foreign)
            page.close()
        browser.close()
