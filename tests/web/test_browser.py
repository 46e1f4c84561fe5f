"""End to end in a real browser: Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser) driven by
Playwright, **with JavaScript disabled**, against a real uvicorn server on a populated SQLite database.

Load the leaderboard, filter by family, sort by a column (twice: the order flips), open a job and check that its
plots loaded, tick two jobs and compare them. Screenshots go to ``test-output/screenshots/`` and their paths are in
the assertion messages. Without Chromium or Playwright the test is skipped, but in CI (``CI`` set) it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import PLOTTED, Site

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHROMIUM = Path(os.environ.get("ROBUSTLAB_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
LAPTOP = {"width": 1366, "height": 800}


def browser_unavailable(reason: str) -> None:
    """Skip on a developer machine; in CI (``CI`` set) a missing browser is a failure (as a missing service is)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium and Playwright, or a skip (a failure in CI). Session scope, listed first by the test: it
    is checked before the (session-scoped) site is built."""
    if not CHROMIUM.exists():
        browser_unavailable(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        browser_unavailable("playwright is not installed: pip install -e '.[dev]'")
    return CHROMIUM


@pytest.fixture
def browser_page(chromium: Path, tmp_path: Path) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),  # a fresh profile for every run
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            java_script_enabled=False,  # the pages must work without JavaScript
            viewport=LAPTOP,
            timeout=60_000,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()


def shot(page, screenshots: Path, name: str) -> str:
    path = screenshots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return str(path)


def column(page, selector: str, attribute: str | None = None) -> list[str]:
    cells = page.locator(selector)
    return [cells.nth(i).get_attribute(attribute) if attribute else cells.nth(i).inner_text() for i in
            range(cells.count())]  # fmt: skip


def images_loaded(page) -> list[tuple[str, int]]:
    """``(src, naturalWidth)`` of every image, once each has finished loading."""
    images = page.locator("img")
    out = []
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        deadline = time.monotonic() + 20
        while not image.evaluate("img => img.complete") and time.monotonic() < deadline:
            time.sleep(0.1)
        out.append((image.get_attribute("src"), image.evaluate("img => img.naturalWidth")))
    return out


def test_leaderboard_filter_sort_job_and_compare_in_chromium(
    chromium: Path, web_site: Site, browser_page, screenshots: Path, record_property
) -> None:
    page = browser_page
    started = time.perf_counter()
    # 1. the leaderboard
    page.goto(web_site.base_url + "/")
    where = shot(page, screenshots, "01-leaderboard")
    assert page.title().startswith("Leaderboard"), where
    assert page.locator("#leaderboard tbody tr").count() == 25, where  # a full first page
    assert page.locator("#next-page").is_visible(), where

    # 2. filter by family with the GET form
    page.select_option("#f-family", "implicit")
    page.click("#apply")
    page.wait_for_url("**family=implicit**")
    where = shot(page, screenshots, "02-filtered-implicit")
    families = column(page, "#leaderboard td.family")
    assert families and set(families) == {"implicit"}, f"{families} — see {where}"

    # 3. sort by a column: PGD L∞ at ε = 0.1, highest first; then again: lowest first
    before = column(page, "#leaderboard tbody tr", "data-job-id")
    page.click('th a[data-metric="pgd_linf_acc@0.1"]')
    page.wait_for_url("**metric=pgd_linf_acc%400.1**")
    where = shot(page, screenshots, "03-sorted-pgd-desc")
    descending = column(page, "#leaderboard tbody tr", "data-job-id")
    values = [float(v) for v in column(page, '#leaderboard td[data-metric="pgd_linf_acc@0.1"]', "data-value")]
    assert values == sorted(values, reverse=True) and len(values) == len(before), f"{values} — see {where}"
    assert descending != before, f"sorting by PGD L∞ did not change the order — see {where}"
    assert set(column(page, "#leaderboard td.family")) == {"implicit"}, f"the filter was lost — see {where}"
    page.click('th a[data-metric="pgd_linf_acc@0.1"]')
    page.wait_for_url("**order=asc**")
    where = shot(page, screenshots, "04-sorted-pgd-asc")
    values = [float(v) for v in column(page, '#leaderboard td[data-metric="pgd_linf_acc@0.1"]', "data-value")]
    assert values == sorted(values) and values, f"{values} — see {where}"
    assert column(page, "#leaderboard tbody tr", "data-job-id") != descending, where

    # 4. open a job from its row: status, metrics, and the worker's plots loaded
    job_id = web_site.data.ids["web-real"]
    page.goto(web_site.base_url + "/?metric=clean_acc&limit=100")
    page.click(f'tr[data-job-id="{job_id}"] td.name a')
    page.wait_for_url(f"**/jobs/{job_id}")
    loaded = images_loaded(page)
    where = shot(page, screenshots, "05-job")
    assert page.locator("#status").inner_text() == "succeeded", where
    assert page.locator("#metrics tbody tr").count() >= 8, where
    assert len(loaded) >= 2 and all(width > 0 for _, width in loaded), f"plots not loaded: {loaded} — see {where}"

    # 5. tick two jobs on the leaderboard and compare them
    a, b = web_site.data.ids["web-explicit"], web_site.data.ids["web-implicit"]
    page.goto(web_site.base_url + "/?dataset=spirals&limit=100")
    page.check(f'tr[data-job-id="{a}"] input[type=checkbox]')
    page.check(f'tr[data-job-id="{b}"] input[type=checkbox]')
    page.click("#compare-selected")
    page.wait_for_url("**/compare?**")
    loaded = images_loaded(page)
    where = shot(page, screenshots, "06-compare")
    headers = column(page, "#compare-table thead th")
    assert len(headers) == 3 and any("web-explicit" in h for h in headers), f"{headers} — see {where}"
    assert any("web-implicit" in h for h in headers), f"{headers} — see {where}"
    assert len(loaded) == 4 and all(width > 0 for _, width in loaded), f"curves not loaded: {loaded} — see {where}"

    # 6. a running job's page refreshes itself (no JavaScript: a meta refresh)
    page.goto(f"{web_site.base_url}/jobs/{web_site.data.ids['web-running']}")
    where = shot(page, screenshots, "07-running-job")
    assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "3", where
    assert "Epoch 12 / 30" in page.locator("#progress").inner_text(), where
    assert len(PLOTTED) == 3
    record_property("browser_seconds", round(time.perf_counter() - started, 2))
    record_property("site_timings", {k: round(v, 2) for k, v in web_site.timings.items()})
