"""axe-core (from its npm package, node_modules/axe-core) on every dashboard page, in light and in dark
mode (prefers-color-scheme emulated through the DevTools protocol): no violation of impact serious or
critical. The pages hold what a real server shows: jobs in every state, a job still running with a chunk
that failed for good, a paused, capped and scheduled job, an open chunk panel, usage by key, the kinds
with one paused, a not-found page and a login form."""

from __future__ import annotations

import datetime
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from support.polling import eventually

import jobpulse
from jobpulse_server.services import keys

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


def _seed(srv: Any, alice: str, worker_key: str) -> dict[str, str]:
    """Jobs in every state, owned by alice; returns some ids by what they show."""
    with (
        jobpulse.Client(srv.address, api_key=alice) as sdk,
        jobpulse.Client(srv.address, api_key=worker_key) as worker,
    ):
        sdk.create_job(kind="thumbs", total_items=4, chunk_size=2, display_name="Thumbnails")
        for claim in worker.claim_chunks("w1", ["thumbs"], max_chunks=2):
            worker.complete_chunk(claim.chunk.id, claim.lease_token)
        failed = sdk.create_job(kind="ocr", total_items=1, max_attempts=1, display_name="Scans")
        claim = worker.claim_chunks("w1", ["ocr"], max_chunks=1)[0]
        worker.fail_chunk(claim.chunk.id, claim.lease_token, reason="DECODE", message="bad", retryable=False)
        running = sdk.create_job(
            kind="render",
            total_items=40,
            chunk_size=4,
            max_attempts=1,
            display_name="Render with a failed chunk",
            labels={"team": "media"},
            metadata={"scene": 4},
        )
        claims = worker.claim_chunks("w1", ["render"], max_chunks=4)
        worker.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
        worker.fail_chunk(
            claims[1].chunk.id,
            claims[1].lease_token,
            reason="OOM",
            message="out of memory",
            retryable=False,
            details='Traceback (most recent call last):\n  File "render.py", line 40\nMemoryError',
        )
        cancelled = sdk.create_job(kind="idle", total_items=2, display_name="Not needed")
        sdk.cancel_job(cancelled.id, reason="wrong input")
        sdk.create_job(kind="idle", total_items=2, display_name="Waiting")
        # Paused, capped and scheduled: the job page's notes and the list's tags for each.
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        held = sdk.create_job(
            kind="idle",
            total_items=6,
            chunk_size=2,
            display_name="Held",
            schedule_time=later,
            max_running_chunks=2,
        )
        sdk.pause_job(held.id)
        # A pipeline: a stage waiting for another (a long name, links both ways) with a finalize chunk.
        stage1 = sdk.create_job(
            kind="idle", total_items=3, chunk_size=1, display_name="Stage one of the scene"
        )
        stage2 = sdk.create_job(
            kind="idle",
            total_items=3,
            chunk_size=1,
            display_name="Stage two: colour grading of every scene of the long trailer cut " * 2,
            after=[stage1.id],
            after_mode="per_chunk",
            finalize_kind="compose",
        )
        # Schedules: one with a job made (triggered), one paused.
        nightly = sdk.create_schedule(
            "0 3 * * *",
            {"kind": "report", "total_items": 1},
            display_name="Nightly report",
            time_zone="Europe/Berlin",
        )
        sdk.trigger_schedule(nightly.name)
        sdk.create_schedule("*/5 * * * *", {"kind": "poll", "total_items": 1}, paused=True)
    return {
        "running": running.id,
        "failed": failed.id,
        "held": held.id,
        "stage1": stage1.id,
        "stage2": stage2.id,
    }


def _axe(browser: Any) -> list[dict[str, Any]]:
    browser.execute_script(AXE.read_text(encoding="utf-8"))
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify({error: String(e)})));"
    )
    found = json.loads(result)
    assert not isinstance(found, dict), found
    return [v for v in found if v.get("impact") in BLOCKING]


def _say(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        targets = [
            " ".join(n["target"]) + ": " + n.get("failureSummary", "").replace("\n", " ") for n in v["nodes"]
        ]
        lines.append(f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements): " + "; ".join(targets[:5]))
    return "\n".join(lines)


# The dark scheme's walk (11 s) is left to make test-slow; the light one runs by default.
@pytest.mark.parametrize("scheme", ["light", pytest.param("dark", marks=pytest.mark.slow)])
def test_no_serious_or_critical_axe_violation_on_any_page(
    make_server: Any, browser: Any, scheme: str, screenshots: Path
) -> None:
    assert AXE.is_file(), "axe-core is missing: npm install (package.json devDependencies)"
    srv = make_server(key_refresh_interval=0.1)
    made = {
        n: srv.call(keys.create_key(srv.app.db, n, r))
        for n, r in (("alice", "client"), ("root", "admin"), ("w", "worker"))
    }
    srv.call(srv.app.auth.refresh())
    ids = _seed(srv, made["alice"], made["w"])
    base = str(srv.app.http_url)
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    )

    found: dict[str, list[dict[str, Any]]] = {}

    def check(name: str, ready: Any = None) -> None:
        if ready is not None:
            eventually(ready, timeout=15, what=f"the {name} page ready")
        dark = browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        assert dark == (scheme == "dark"), "the colour scheme is not emulated"
        found[name] = _axe(browser)
        browser.save_screenshot(str(screenshots / f"a11y-{scheme}-{name}.png"))

    browser.get(base + "/login")
    check("login")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="login-key"]').send_keys("jp_wrong")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="login-submit"]').click()
    check("login error", lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="login-error"]'))
    browser.find_element(By.CSS_SELECTOR, '[data-testid="login-key"]').send_keys(made["root"])
    browser.find_element(By.CSS_SELECTOR, '[data-testid="login-submit"]').click()
    eventually(lambda: urllib.parse.urlsplit(browser.current_url).path == "/", timeout=10, what="/")

    live = lambda: browser.find_element(By.CSS_SELECTOR, "#live").get_attribute("data-state") == "on"  # noqa: E731
    check("jobs", live)
    browser.get(f"{base}/jobs/{ids['running']}")
    grid = lambda: browser.find_element(By.CSS_SELECTOR, '[data-testid="chunk-grid"]').get_attribute(  # noqa: E731
        "data-draw-ms"
    )
    check("job", grid)
    browser.find_element(By.CSS_SELECTOR, "a[data-chunk]").click()
    check(
        "job with a chunk open",
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="chunk-detail"]'),
    )
    browser.find_element(By.CSS_SELECTOR, '[data-testid="cancel-job"]').click()
    check("job, confirm dialog", lambda: browser.find_element(By.ID, "confirm-dialog").is_displayed())
    browser.find_element(By.CSS_SELECTOR, '[data-testid="confirm-no"]').click()
    browser.get(f"{base}/jobs/{ids['failed']}")
    check("failed job", grid)
    browser.get(f"{base}/jobs/{ids['held']}")
    check("paused, capped and scheduled job", grid)
    browser.get(f"{base}/jobs/{ids['stage2']}")
    check("job waiting for another", grid)
    browser.get(f"{base}/jobs/{ids['stage1']}")
    check("job others wait for", grid)
    browser.get(f"{base}/jobs/{ids['running']}/chunks/1")
    check("chunk")
    browser.get(base + "/stats")
    check("stats", lambda: browser.find_element(By.CSS_SELECTOR, ".chart-note").text)
    browser.get(base + "/failures")
    check("failures")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="failure-group"] th a').click()
    check(
        "failures of one reason",
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="affected-jobs"]'),
    )
    browser.get(base + "/health")
    check("health")
    browser.get(base + "/kinds")
    check("kinds")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="pause-kind"]').click()
    paused = lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="resume-kind"]')  # noqa: E731
    check("kinds, one paused", paused)
    browser.get(base + "/schedules")
    check("schedules", lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="schedule-job"]'))
    browser.get(base + "/jobs/no-such-job")
    check("error")
    browser.get(base + "/?kind=none")
    check("jobs, none match")
    # Every job matching a filter, retried: the count and the question, then the operation's progress.
    browser.get(base + "/?state=FAILED")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="bulk-filter-retry"]').click()
    check(
        "bulk by filter, the question",
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="bulk-confirm"]'),
    )
    browser.find_element(By.CSS_SELECTOR, '[data-testid="bulk-confirm"]').click()
    check("bulk operation", lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="bulk-progress"]'))
    browser.get(base + "/operations")
    check("bulk operations", lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="operation-row"]'))
    browser.set_window_size(390, 844)  # a phone: the jobs as cards, the filters folded
    browser.get(base + "/")
    check("jobs on a phone", live)
    browser.get(f"{base}/jobs/{ids['running']}")
    check("job on a phone", grid)
    browser.get(f"{base}/jobs/{ids['stage2']}")
    check("job waiting for another, on a phone", grid)

    bad = {name: _say(v) for name, v in found.items() if v}
    assert not bad, "axe-core found serious or critical violations:\n" + "\n".join(
        f"[{name}]\n{text}" for name, text in bad.items()
    )
