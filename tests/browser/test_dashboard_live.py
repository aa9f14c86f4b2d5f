"""The dashboard's live parts and layout in headless Chromium against a real server: a burst of 1,000 new
jobs costs the jobs page no request (rows come from the feed events), under a client key's default rate
limit; the stats page follows the feed; the ETA keeps moving between events and says "stalled" when
nothing runs; the jobs table fits 1280 px; on a phone the first job shows on the first screen and the
chunk grid stays inside it."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from support.polling import eventually

import jobpulse
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services import keys
from jobpulse_server.services.jobs import NewJob

BURST = 1000


def _testid(browser: Any, name: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def _text(browser: Any, css: str) -> str:
    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except WebDriverException:
        return ""


def _live(browser: Any) -> bool:
    return browser.find_element(By.CSS_SELECTOR, "#live").get_attribute("data-state") == "on"


def _requests(browser: Any) -> list[str]:
    """The URLs the page asked for since the last call (the DevTools network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _severe(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _log_in(browser: Any, base: str, key: str, path: str = "/") -> None:
    browser.get(base + "/login?" + urllib.parse.urlencode({"next": path}))
    _testid(browser, "login-key").send_keys(key)
    _testid(browser, "login-submit").click()
    eventually(lambda: urllib.parse.urlsplit(browser.current_url).path == path, timeout=10, what=path)


def _cells(row: Any) -> dict[str, str]:
    """A row's cells by label, bar the times (they read 'just now' or '5 s ago' by when they were drawn)."""
    found = {}
    for td in row.find_elements(By.CSS_SELECTOR, "td"):
        label = td.get_attribute("data-label") or td.get_attribute("class")
        if label not in ("Created", "Updated", "sel"):
            found[label] = td.text
    return found


@pytest.mark.slow  # 11 s: make test-slow
def test_a_burst_of_1000_jobs_costs_the_jobs_page_no_request(make_server: Any, browser: Any) -> None:
    """The viewer logs in with a client key at the default rate limit (50 calls/s, bursts of 100). The
    jobs are created on the server's own loop, all at once, for the same owner (through the services,
    so the creator's calls do not spend the viewer's key's budget): what is measured is the page."""
    srv = make_server(key_refresh_interval=0.1, watch_min_interval=0.05)
    assert srv.config.rate_limit_client == 50.0
    alice = srv.call(keys.create_key(srv.app.db, "alice", "client"))
    srv.call(srv.app.auth.refresh())
    base = str(srv.app.http_url)
    _log_in(browser, base, alice)
    eventually(lambda: _live(browser), timeout=10, what="live")
    assert "No jobs yet" in _testid(browser, "empty").text
    browser.execute_script("window.__stayed = true")
    loaded = _requests(browser)  # what loading the page took: the log sees the page's requests
    assert any("/v1/events" in url for url in loaded), loaded
    _severe(browser)

    who = Principal("alice", sees_all=False, role="client")

    async def burst() -> None:
        await asyncio.gather(
            *(
                srv.app.jobs.create_job(
                    who,
                    NewJob(
                        kind="burst",
                        total_items=10,
                        chunk_size=5,
                        max_attempts=3,
                        priority=i % 11,
                        display_name=f"Burst job {i}",
                    ),
                )
                for i in range(BURST)
            )
        )

    srv.call(burst(), timeout=120)
    eventually(lambda: _text(browser, '[data-testid="total"]') == f"{BURST:,}", timeout=60, what="the count")
    eventually(
        lambda: _text(browser, '[data-testid="page-count"]') == f"20 of {BURST:,}", timeout=10, what="pager"
    )
    made = _requests(browser)
    print(f"\njobs page requests while {BURST} jobs were created at once: {len(made)} {made[:5]}")
    assert made == [], f"the page made {len(made)} requests for {BURST} new jobs: {made[:10]}"
    assert browser.execute_script("return window.__stayed === true"), "the page reloaded"
    assert _severe(browser) == [], "the page logged errors (a 429?)"
    assert "429" not in browser.find_element(By.TAG_NAME, "body").text

    # A row built from an event shows what the server's own row shows.
    rows = browser.find_elements(By.CSS_SELECTOR, '[data-testid="job-row"]')
    assert len(rows) == 20
    live = {r.get_attribute("data-job-id"): _cells(r) for r in rows}
    browser.refresh()
    eventually(lambda: _live(browser), timeout=10, what="live again")
    served = {
        r.get_attribute("data-job-id"): _cells(r)
        for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="job-row"]')
    }
    both = live.keys() & served.keys()
    assert len(both) >= 10, (list(live), list(served))
    for job_id in both:
        assert live[job_id] == served[job_id], job_id


def test_the_stats_page_follows_the_feed(make_server: Any, browser: Any) -> None:
    srv = make_server(watch_min_interval=0.05)
    base = str(srv.app.http_url)
    with jobpulse.Client(srv.address) as sdk:
        sdk.create_job(kind="stats", total_items=2)
        browser.get(base + "/stats")
        eventually(lambda: _live(browser), timeout=10, what="live")
        assert _text(browser, '[data-testid="stat-total"]') == "1"
        browser.execute_script("window.__stayed = true")
        for _ in range(3):
            sdk.create_job(kind="stats", total_items=2)
        eventually(
            lambda: _text(browser, '[data-testid="stat-total"]') == "4", timeout=15, what="4 jobs, live"
        )
    assert browser.execute_script("return window.__stayed === true"), "the page reloaded"
    assert _severe(browser) == []


def test_the_eta_moves_between_events_and_says_stalled(make_server: Any, browser: Any) -> None:
    """No event comes while no worker runs: the page recomputes the ETA by the server's rule as time
    passes. The job's times are moved back in the page (a real wait would take a minute)."""
    srv = make_server(watch_min_interval=0.05)
    base = str(srv.app.http_url)
    with jobpulse.Client(srv.address) as sdk:
        job = sdk.create_job(kind="eta", total_items=100, chunk_size=10)
        claim = sdk.claim_chunks("w", ["eta"], max_chunks=1)[0]
        sdk.complete_chunk(claim.chunk.id, claim.lease_token)
    browser.get(f"{base}/jobs/{job.id}")
    eventually(lambda: _live(browser), timeout=10, what="live")
    eta = browser.find_element(By.CSS_SELECTOR, '[data-field="eta"] [data-eta]')
    # 10 of 100 items in the first 100 s: 900 s left by the server's rule ("15 min").
    browser.execute_script(
        "const e = arguments[0]; e.dataset.start = new Date(Date.now() - 100000).toISOString();"
        "e.dataset.updated = new Date().toISOString();",
        eta,
    )
    eventually(lambda: eta.text == "15 min", timeout=10, what="the ETA recomputed")
    # Nothing runs and nothing changed for two minutes: stalled, not a number frozen in time.
    browser.execute_script("arguments[0].dataset.updated = new Date(Date.now() - 120000).toISOString();", eta)
    eventually(lambda: eta.text == "stalled", timeout=10, what="stalled")
    assert "worker" in (eta.get_attribute("title") or "")
    browser.get(base + "/")
    cell = browser.find_element(By.CSS_SELECTOR, '[data-field="eta"] [data-eta]')
    assert cell.text not in ("", "stalled")  # the server's row: it changed seconds ago


def test_the_jobs_table_fits_1280_px(make_server: Any, browser: Any, screenshots: Path) -> None:
    srv = make_server()
    base = str(srv.app.http_url)
    with jobpulse.Client(srv.address) as sdk:
        for n in range(5):
            job = sdk.create_job(
                kind="transcode-video",
                total_items=123_456,
                chunk_size=100,
                display_name=f"Transcode the spring catalogue, part {n}",
                labels={"team": "media"},
            )
        claim = sdk.claim_chunks("w", ["transcode-video"], max_chunks=1)[0]
        sdk.complete_chunk(claim.chunk.id, claim.lease_token)
    browser.set_window_size(1280, 900)
    browser.get(base + "/")
    wrap = browser.find_element(By.CSS_SELECTOR, ".table-wrap")
    sizes = browser.execute_script("return [arguments[0].scrollWidth, arguments[0].clientWidth]", wrap)
    browser.save_screenshot(str(screenshots / "jobs-1280.png"))
    assert sizes[0] <= sizes[1], f"the jobs table is cut at 1280 px: {sizes[0]} px in {sizes[1]} px"
    eta = browser.find_element(By.CSS_SELECTOR, f'[data-job-id="{job.id}"] [data-field="eta"]')
    right = browser.execute_script("return arguments[0].getBoundingClientRect().right", eta)
    assert right <= 1280


def test_on_a_phone_the_jobs_come_first_and_the_grid_fits(
    make_server: Any, browser: Any, screenshots: Path
) -> None:
    srv = make_server()
    base = str(srv.app.http_url)
    with jobpulse.Client(srv.address) as sdk:
        job = sdk.create_job(kind="phone", total_items=5000, chunk_size=1, display_name="Five thousand")
    browser.set_window_size(390, 844)
    browser.get(base + "/")
    height = browser.execute_script("return window.innerHeight")
    first = browser.find_element(By.CSS_SELECTOR, '[data-testid="job-row"]')
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", first)
    browser.save_screenshot(str(screenshots / "phone-jobs-first-screen.png"))
    assert top < height * 0.75, f"the first job starts at {top:.0f} px of a {height} px screen"
    # The filters are one tap away.
    browser.find_element(By.CSS_SELECTOR, ".filters summary").click()
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="search"]').is_displayed()

    browser.get(f"{base}/jobs/{job.id}")
    grid = _testid(browser, "chunk-grid")
    eventually(lambda: grid.get_attribute("data-draw-ms"), timeout=10, what="the grid")
    box = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right]", grid
    )
    width = browser.execute_script("return document.documentElement.clientWidth")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
    browser.save_screenshot(str(screenshots / "phone-grid.png"))
    assert box[0] >= 0 and box[1] <= width, f"the grid runs past the edge: {box} in {width} px"
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width


def _statuses(browser: Any) -> list[tuple[str, int]]:
    """(URL, status) of the responses the page got since the last call (the DevTools network log)."""
    found = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            found.append((response["url"], int(response["status"])))
    return found


def test_the_pages_own_fetches_wait_out_a_429(make_server: Any, browser: Any) -> None:
    """A key at 1 call/s (bursts of 2): logging in and loading the job page spend it, so the page's
    fetch of the grid is refused with 429. The page waits the Retry-After and draws the grid; it never
    says the grid could not be loaded. (A page load refused the same way reloads itself.)"""
    srv = make_server(key_refresh_interval=0.1, rate_limit_client=1.0)
    alice = srv.call(keys.create_key(srv.app.db, "alice", "client"))
    srv.call(srv.app.auth.refresh())
    base = str(srv.app.http_url)
    with jobpulse.Client(srv.address, api_key=alice, timeout=20) as sdk:
        job = eventually(lambda: sdk.create_job(kind="limited", total_items=10, chunk_size=1), timeout=10)
    refused = []
    for _ in range(5):  # until one load of the page meets the limit on its grid fetch
        _log_in(browser, base, alice, f"/jobs/{job.id}")
        # The page itself may meet the limit: then it says it loads again by itself, and does.
        eventually(
            lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="chunk-grid"][data-draw-ms]'),
            timeout=20,
            what="the grid drawn",
        )
        assert "cannot be loaded" not in _text(browser, ".grid-status")
        assert "429" not in browser.find_element(By.TAG_NAME, "body").text
        got = _statuses(browser)
        refused = [url for url, status in got if status == 429 and url.endswith("/grid")]
        if refused:
            assert sum(1 for url, status in got if status == 200 and url.endswith("/grid")) == 1
            break
        browser.delete_all_cookies()
    assert refused, "the rate limit never met the grid's fetch"
