"""Headless Chromium opens the report of a small end-to-end run: no console errors, Sankey drawn (SVG
nodes), every table non-empty, a screenshot saved (issue 6)."""


import pytest

from hedonic_neurons.report.html import build_report
from hedonic_neurons.report.sankey import track_and_draw

pytestmark = [
    pytest.mark.browser,
]


def test_report_renders_in_chromium(small_run, tmp_path, chromium):
    rd, _ = small_run
    track_and_draw(rd.root)
    report = build_report(rd.root)
    page, errors, requests = chromium(report)
    page.wait_for_function("typeof Plotly !== 'undefined'")
    # views render when scrolled into view; draw them all, then wait for the Sankey SVG nodes
    page.evaluate("window.drawAllViews()")
    page.wait_for_selector("g.sankey-node", state="attached", timeout=30_000)
    n_views = page.locator("div.plotly-view").count()
    n_drawn = page.locator("div.plotly-view .main-svg").count()
    n_nodes = page.locator("g.sankey-node").count()
    n_links = page.locator("path.sankey-link").count()
    tables = page.locator("table.data")
    n_tables = tables.count()
    row_counts = [tables.nth(i).locator("tbody tr").count() for i in range(n_tables)]
    n_images = page.locator("figure img").count()
    img_ok = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.locator("#tracking").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    page.screenshot(path=str(tmp_path / "report_full.png"), full_page=True)
    print(f"screenshot: {shot}")
    assert not errors, f"console errors: {errors}"
    external = [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))]
    assert not external, f"the report reached for the network: {external[:5]}"
    assert n_views == 6 and n_drawn >= n_views, (n_views, n_drawn)
    assert n_nodes > 20 and n_links > 10
    # config, partitions, 7 tables (accuracy, coalition_sizes, stability, synergy, tracking_events...),
    # per-coalition transitions, and the summary's own table
    assert n_tables >= 8 and all(c > 0 for c in row_counts), row_counts
    assert n_images >= 8 and img_ok
    assert shot.stat().st_size > 10_000
