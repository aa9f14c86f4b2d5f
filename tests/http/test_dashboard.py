"""The dashboard over real HTTP against real servers (SQLite and PostgreSQL): login and sessions,
ownership, every page, the actions and their cross-site guard, paging, the grid's data and the
throughput rollup. tests/browser/test_dashboard_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.polling import eventually
from support.sse import read

import jobpulse
from jobpulse.v1 import job_pb2
from jobpulse_server.services import keys

ROW = re.compile(r'data-testid="job-row" data-job-id="([^"]+)"')


def _state(job: Any) -> str:
    return job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def _base(srv: Any) -> str:
    return str(srv.app.http_url)


def _next_link(html: str, testid: str) -> str | None:
    found = re.search(r'href="([^"]+)"[^>]*data-testid="' + testid + '"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def _post(client: httpx.Client, path: str, data: dict[str, Any] | list[tuple[str, str]]) -> httpx.Response:
    """A form post as a browser on the dashboard's own page sends it."""
    headers = {
        "origin": str(client.base_url).rstrip("/"),
        "content-type": "application/x-www-form-urlencoded",
    }
    return client.post(path, content=urllib.parse.urlencode(data), headers=headers)


@pytest.fixture
def keyed(make_server) -> Any:
    """A server with API keys: alice and bob (clients), root (admin), w (worker); a job each."""
    srv = make_server(key_refresh_interval=0.1)
    made = {
        name: srv.call(keys.create_key(srv.app.db, name, role))
        for name, role in (("alice", "client"), ("bob", "client"), ("root", "admin"), ("w", "worker"))
    }
    srv.call(srv.app.auth.refresh())
    with jobpulse.Client(srv.address, api_key=made["alice"]) as alice:
        a_job = alice.create_job(kind="k", total_items=10, chunk_size=2, display_name="alice's job")
    with jobpulse.Client(srv.address, api_key=made["bob"]) as bob:
        b_job = bob.create_job(kind="k", total_items=1, display_name="bob's job")
    return srv, made, a_job.id, b_job.id


@contextlib.contextmanager
def _login(srv: Any, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=_base(srv), timeout=20) as client:
        response = _post(client, "/login", {"key": key, "next": "/"})
        assert response.status_code == 303, response.text
        yield client


def test_login_session_cookie_and_ownership(keyed: Any) -> None:
    srv, made, a_job, b_job = keyed
    with httpx.Client(base_url=_base(srv), timeout=20) as anonymous:
        first = anonymous.get("/?state=PENDING")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2F%3Fstate%3DPENDING"
        assert anonymous.get("/login").status_code == 200
        bad = _post(anonymous, "/login", {"key": "jp_not_a_key", "next": "/"})
        assert bad.status_code == 401 and "not known" in bad.text
        worker = _post(anonymous, "/login", {"key": made["w"], "next": "/"})
        assert worker.status_code == 403 and "worker key" in worker.text
        assert "set-cookie" not in worker.headers
        # The events paths want credentials too.
        assert anonymous.get("/v1/events").status_code == 401

    with httpx.Client(base_url=_base(srv), timeout=20) as client:
        response = _post(client, "/login", {"key": made["alice"], "next": "/?state=PENDING"})
        assert response.status_code == 303 and response.headers["location"] == "/?state=PENDING"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
        assert made["alice"] not in cookie, "the cookie names the key, it does not hold it"
        page = client.get("/")
        assert page.status_code == 200
        assert ROW.findall(page.text) == [a_job]
        assert "bob&#39;s job" not in page.text
        # Another owner's job is not found, exactly as over gRPC.
        assert client.get(f"/jobs/{b_job}").status_code == 404
        assert client.get(f"/jobs/{b_job}/grid").status_code == 404
        assert _post(client, f"/jobs/{b_job}/cancel", {}).status_code == 404
        assert client.get(f"/jobs/{a_job}").status_code == 200
        # The session also opens the events paths (the pages' EventSources send the cookie).
        cookie = {"cookie": f"jobpulse_session={client.cookies['jobpulse_session']}"}
        stream = read(f"{_base(srv)}/v1/jobs/{a_job}/events", headers=cookie, until=lambda e, es: True)
        assert stream.status == 200 and stream.events[0].event == "snapshot"
        # Revoking the key ends the session on its next request.
        srv.call(keys.revoke_key(srv.app.db, "alice"))
        srv.call(srv.app.auth.refresh())
        gone = client.get("/")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
        # Logging out clears the cookie.
        out = _post(client, "/logout", {})
        assert out.status_code == 303 and 'jobpulse_session=""' in out.headers["set-cookie"]

    # An admin sees every owner's jobs, and the usage per key.
    with _login(srv, made["root"]) as root:
        assert set(ROW.findall(root.get("/").text)) == {a_job, b_job}
        stats = root.get("/stats")
        assert stats.status_code == 200 and 'data-testid="usage"' in stats.text and ">alice<" in stats.text
    with _login(srv, made["bob"]) as bob:
        assert 'data-testid="usage"' not in bob.get("/stats").text


def test_a_cross_site_post_is_refused(keyed: Any) -> None:
    srv, made, a_job, _ = keyed
    with _login(srv, made["alice"]) as client:
        for headers in ({"origin": "http://evil.example"}, {"referer": "http://evil.example/page"}, {}):
            refused = client.post(f"/jobs/{a_job}/cancel", data={"reason": "x"}, headers=headers)
            assert refused.status_code == 403, headers
            assert "Traceback" not in refused.text
        with jobpulse.Client(srv.address, api_key=made["alice"]) as alice:
            assert _state(alice.get_job(a_job)) == "PENDING"
        # The login form is guarded too (login CSRF).
        assert (
            client.post(
                "/login", data={"key": made["bob"]}, headers={"origin": "http://evil.example"}
            ).status_code
            == 403
        )


def test_actions_go_through_the_services(make_server) -> None:
    srv = make_server()
    base = _base(srv)
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=base, timeout=20) as client:
        job = sdk.create_job(kind="act", total_items=4, chunk_size=1, max_attempts=1)
        # cancel, with its reason; the redirect's page says so once
        done = _post(client, f"/jobs/{job.id}/cancel", {"reason": "wrong input"})
        assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job.id}"
        assert _state(sdk.get_job(job.id)) == "CANCELLED"
        assert sdk.get_job(job.id).cancel_reason == "wrong input"
        page = client.get(f"/jobs/{job.id}")
        assert "Cancel requested" in page.text and 'data-testid="retry-job"' in page.text
        assert "Cancel requested" not in client.get(f"/jobs/{job.id}").text, "a message shows once"
        # retry, then priority
        assert _post(client, f"/jobs/{job.id}/retry", {}).status_code == 303
        assert _state(sdk.get_job(job.id)) == "PENDING"
        assert _post(client, f"/jobs/{job.id}/priority", {"priority": "9"}).status_code == 303
        assert sdk.get_job(job.id).priority == 9
        bad = _post(client, f"/jobs/{job.id}/priority", {"priority": "11"})
        assert bad.status_code == 400 and "priority" in bad.text and "Traceback" not in bad.text
        # one failed chunk retried from its panel
        claim = sdk.claim_chunks("w1", ["act"], max_chunks=1)[0]
        sdk.fail_chunk(claim.chunk.id, claim.lease_token, reason="BOOM", message="it broke", retryable=False)
        panel = client.get(f"/jobs/{job.id}/chunks/{claim.chunk.index}", headers={"x-fragment": "1"})
        assert (
            panel.status_code == 200
            and "it broke" in panel.text
            and 'data-testid="retry-chunk"' in panel.text
        )
        assert "<html" not in panel.text, "the panel asks for a fragment"
        assert "<html" in client.get(f"/jobs/{job.id}/chunks/{claim.chunk.index}").text
        assert _post(client, f"/jobs/{job.id}/chunks/{claim.chunk.id}/retry", {}).status_code == 303
        assert sdk.get_job(job.id).chunks_summary.failed == 0
        # a running job cannot be deleted without force; the page says why instead of failing
        refused = _post(client, f"/jobs/{job.id}/delete", {})
        assert refused.status_code == 400 and "cancel it first" in refused.text
        assert _post(client, f"/jobs/{job.id}/delete", {"force": "1"}).status_code == 303
        assert client.get(f"/jobs/{job.id}").status_code == 404

        # bulk: cancel three, one of which is already finished
        jobs = [sdk.create_job(kind="bulk", total_items=1) for _ in range(3)]
        claim = sdk.claim_chunks("w1", ["bulk"], max_chunks=1)[0]
        sdk.complete_chunk(claim.chunk.id, claim.lease_token)
        form = [("action", "cancel"), ("back", "/?kind=bulk")] + [("job_id", j.id) for j in jobs]
        answer = _post(client, "/actions/bulk", form)
        assert answer.status_code == 303 and answer.headers["location"] == "/?kind=bulk"
        states = sorted(_state(sdk.get_job(j.id)) for j in jobs)
        assert states == ["CANCELLED", "CANCELLED", "COMPLETED"]
        assert "Cancel requested for 2 jobs. 1 not:" in client.get("/?kind=bulk").text


def test_paging_visits_each_job_once_both_ways(make_server) -> None:
    srv = make_server()
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=_base(srv), timeout=20) as client:
        made = {sdk.create_job(kind="page", total_items=1, priority=i % 11).id for i in range(250)}
        sdk.create_job(kind="other", total_items=1)
        for order in ("create_time desc", "priority desc", "update_time"):
            seen: list[str] = []
            pages: list[list[str]] = []
            url: str | None = f"/?kind=page&page_size=100&order_by={order.replace(' ', '+')}"
            while url:
                page = client.get(url)
                assert page.status_code == 200
                pages.append(ROW.findall(page.text))
                seen += pages[-1]
                url = _next_link(page.text, "next-page")
            assert len(seen) == 250 and set(seen) == made, order
            assert [len(p) for p in pages] == [100, 100, 50]
            # and back again from the last page
            back: list[list[str]] = [pages[-1]]
            url = _next_link(page.text, "prev-page")
            while url:
                page = client.get(url)
                back.insert(0, ROW.findall(page.text))
                url = _next_link(page.text, "prev-page")
            assert back == pages, order


def test_pages_read_filters_from_the_url_and_say_what_is_wrong(make_server) -> None:
    srv = make_server()
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=_base(srv), timeout=20) as client:
        empty = client.get("/")
        assert "No jobs yet" in empty.text
        a = sdk.create_job(
            kind="render", total_items=1, labels={"team": "media"}, priority=8, display_name="scene one"
        )
        b = sdk.create_job(kind="audio", total_items=1, priority=2)
        assert ROW.findall(client.get("/?kind=render").text) == [a.id]
        assert ROW.findall(client.get("/?label=team%3Dmedia").text) == [a.id]
        assert ROW.findall(client.get("/?min_priority=5").text) == [a.id]
        assert ROW.findall(client.get("/?search=scene").text) == [a.id]
        assert ROW.findall(client.get("/?order_by=priority").text) == [b.id, a.id]
        assert ROW.findall(client.get("/?state=PENDING&state=FAILED").text) == [b.id, a.id]
        assert ROW.findall(client.get("/?created_after=2000-01-01&created_before=2001-01-01").text) == []
        assert "No jobs match these filters" in client.get("/?kind=none").text
        bad = client.get("/?min_priority=x&state=NOPE&created_after=yesterday&order_by=size")
        assert bad.status_code == 400
        for field in ("min_priority", "state", "created_after", "order_by"):
            assert f"<strong>{field}</strong>" in bad.text, field
        missing = client.get("/jobs/nope")
        assert missing.status_code == 404 and "not found" in missing.text.lower() and "<html" in missing.text
        assert client.get("/jobs/" + "x" * 200).status_code == 400
        assert client.get("/nowhere").status_code == 404


def test_static_files_are_versioned_and_pages_carry_a_strict_policy(server) -> None:
    with httpx.Client(base_url=_base(server), timeout=20) as client:
        page = client.get("/")
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
            path = re.search(r'"(/static/[0-9a-f]{12}/' + re.escape(name) + ')"', page.text).group(1)
            response = client.get(path)
            assert response.status_code == 200 and "immutable" in response.headers["cache-control"]
        assert client.get("/static/000000000000/dashboard.js").headers["cache-control"] == "no-cache"
        assert client.get("/static/x/nothing.js").status_code == 404


def test_grid_data_stats_and_health(make_server) -> None:
    srv = make_server()
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=_base(srv), timeout=20) as client:
        job = sdk.create_job(kind="grid", total_items=30, chunk_size=3, max_attempts=1)
        for claim in sdk.claim_chunks("w-grid", ["grid"], max_chunks=3):
            if claim.chunk.index == 1:
                sdk.fail_chunk(claim.chunk.id, claim.lease_token, reason="X", message="x", retryable=False)
            elif claim.chunk.index == 2:
                sdk.complete_chunk(claim.chunk.id, claim.lease_token)
        grid = client.get(f"/jobs/{job.id}/grid").json()
        current = sdk.get_job(job.id)
        assert grid["revision"] == current.revision
        assert grid["states"] == "2" + "4" + "3" + "1" * 7
        health = client.get("/health")
        assert health.status_code == 200
        assert re.search(r'<span class="big">1</span> leases in flight', health.text)
        assert "w-grid" in health.text
        stats = client.get("/stats")
        assert stats.status_code == 200 and 'data-testid="stat-total">1<' in stats.text
        # The throughput rollup counts the completed chunk: unflushed counts are included.
        points = eventually(
            lambda: [p for p in client.get("/stats/throughput?hours=1").json()["points"] if p[1]],
            what="a point",
        )
        assert sum(p[1] for p in points) == 1 and sum(p[2] for p in points) == 3


def test_the_empty_pages_command_runs_as_shown(server) -> None:
    """The first thing a new user sees is a command to paste: run exactly what the page shows (the
    server address comes from JOBPULSE_TARGET, as in a shell), and the job it makes is on the page."""
    with httpx.Client(base_url=_base(server), timeout=20) as client:
        page = client.get("/")
        assert page.status_code == 200 and "No jobs yet" in page.text
        found = re.search(r'<code data-testid="first-command">([^<]+)</code>', page.text)
        assert found, "the empty jobs page shows no command"
        command = html.unescape(found.group(1))
        words = shlex.split(command)
        assert words[0] == "jobpulse", command
        cli = shutil.which("jobpulse", path=str(Path(sys.executable).parent))
        assert cli is not None, "the jobpulse CLI is not installed beside this Python"
        env = {**os.environ, "JOBPULSE_TARGET": server.address}
        env.pop("JOBPULSE_API_KEY", None)
        done = subprocess.run([cli, *words[1:]], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, f"{command!r} exited {done.returncode}: {done.stderr.strip()}"
        after = client.get("/")
        assert len(ROW.findall(after.text)) == 1 and "No jobs yet" not in after.text


def test_a_running_job_with_a_failed_chunk_is_not_called_failed_and_attempts_agree(make_server) -> None:
    """One chunk fails for good while the others still wait: the job page says the job is processing
    with a failed chunk (no red "Failed" alert). After a retry of that chunk, the job's facts and the
    chunk's panel count attempts the same way."""
    srv = make_server(retry_backoff=0.0)
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=_base(srv), timeout=20) as client:
        job = sdk.create_job(kind="flaky", total_items=3, chunk_size=1, max_attempts=2)

        def fail_twice() -> Any:
            for _ in range(2):
                claim = eventually(
                    lambda: sdk.claim_chunks("w1", ["flaky"], max_chunks=1), timeout=10, what="a claim"
                )[0]
                assert claim.chunk.index == 0
                sdk.fail_chunk(claim.chunk.id, claim.lease_token, reason="TIMEOUT", message="slow")
            return claim.chunk

        # Claims go in index order: chunk 0 uses up its two attempts, chunks 1 and 2 still wait.
        chunk = fail_twice()
        assert _state(sdk.get_job(job.id)) == "PROCESSING"
        page = client.get(f"/jobs/{job.id}").text
        banner = re.search(
            r'<section class="problem[^"]*"[^>]*data-testid="job-error">(.*?)</section>', page, re.S
        )
        assert banner, "the failed chunk is not mentioned"
        assert "Processing, with" in banner.group(1) and "chunk failed for good" in banner.group(1)
        assert "Failed:" not in banner.group(1) and 'role="alert"' not in banner.group(0)
        assert "up to 2 attempts each" in page

        sdk.retry_chunk(job.id, chunk.id)
        chunk = fail_twice()
        assert sdk.get_job(job.id).chunks_summary.failed == 1
        panel = client.get(f"/jobs/{job.id}/chunks/0", headers={"x-fragment": "1"}).text
        attempts = re.search(r'data-testid="chunk-attempts">([^<]+)<', panel)
        assert attempts and attempts.group(1) == "2 of 2 since the last retry (4 in all)", panel
        page = client.get(f"/jobs/{job.id}").text
        assert "up to 2 attempts each" in page and "4 of 4" not in page and "4/4" not in page


def test_the_eta_the_pages_render_follows_the_servers_rule_and_says_stalled() -> None:
    """present.eta (what a page shows before its script runs): the server's estimate at the moment of
    rendering, "stalled" once a started job has had no chunk running and no change for a minute, and a
    dash with nothing to estimate."""
    from jobpulse_server.domain.model import Job, JobState, Summary
    from jobpulse_server.http import present

    s = 1_000_000
    job = Job(id="j", owner="o", kind="k", state=JobState.PROCESSING, total_items=100, items_done=10)
    job.start_time, job.update_time = 0, 100 * s
    job.summary = Summary(pending=9, processing=1)
    assert present.eta(job, 100 * s) == "15 min"  # 10 items in 100 s: 90 more take 900 s
    assert present.eta(job, 200 * s) == "30 min"  # no progress since: the estimate grows
    job.summary = Summary(pending=9, completed=1)
    assert present.eta(job, 159 * s) != "stalled"
    assert present.eta(job, 160 * s) == "stalled"  # nothing running, no change for 60 s
    job.start_time = None
    assert present.eta(job, 160 * s) == "\u2014"  # never started: nothing to estimate
    job.state = JobState.COMPLETED
    assert present.eta(job, 160 * s) == "\u2014"


def test_a_page_over_the_keys_rate_limit_reloads_itself(make_server) -> None:
    srv = make_server(key_refresh_interval=0.1, rate_limit_client=1.0)
    alice = srv.call(keys.create_key(srv.app.db, "alice", "client"))
    srv.call(srv.app.auth.refresh())
    with _login(srv, alice) as client:
        pages = [client.get("/health") for _ in range(4)]  # bursts of 2: some of these are refused
        refused = [p for p in pages if p.status_code == 429]
        assert refused, [p.status_code for p in pages]
        page = refused[0]
        wait = int(page.headers["retry-after"])
        assert 1 <= wait <= 2
        assert f'data-reload-after="{wait}"' in page.text  # the page's script reloads it then
        assert "loads again by itself" in page.text and "Traceback" not in page.text


def test_a_scheduled_job_says_when_it_starts_on_its_page_and_in_the_list(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        year = datetime.now(timezone.utc).year + 1
        at = f"{year}-01-01T00:00:00Z"
        later = sdk.create_job("dash-later", 1, schedule_time=at, display_name="later")
        now = sdk.create_job("dash-later", 1, display_name="now")

        page = client.get(f"/jobs/{later.id}").text
        note = re.search(r'<p class="note" data-testid="scheduled">(.*?)</p>', page, re.S)
        assert note and f"{year}-01-01" in note.group(1), page
        assert 'data-testid="scheduled"' not in client.get(f"/jobs/{now.id}").text
        listing = client.get("/", params={"kind": "dash-later"}).text
        rows = dict(re.findall(r'data-job-id="([^"]+)".*?<td class="state"[^>]*>(.*?)</td>', listing, re.S))
        assert "scheduled" in rows[later.id] and "scheduled" not in rows[now.id]


def test_a_pipeline_shows_its_chain_what_it_waits_for_and_its_result(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        first = sdk.create_job("dash-stage1", 1, display_name="stage one")
        second = sdk.create_job("dash-stage2", 1, after=[first.id], finalize_kind="dash-final")

        page = client.get(f"/jobs/{second.id}").text
        note = re.search(r'<p class="note" data-testid="after">(.*?)</p>', page, re.S)
        assert (
            note
            and note.group(1).startswith("Waiting: runs after")
            and f'href="/jobs/{first.id}" class="id">stage one</a>' in note.group(1)
        )
        assert 'data-testid="finalize"' in page and "<code>dash-final</code>" in page
        assert 'data-testid="scheduled"' not in page
        listing = client.get("/", params={"kind": "dash-stage2"}).text
        assert re.search(r'<td class="state"[^>]*>.*?data-testid="waiting"', listing, re.S)
        upstream = client.get(f"/jobs/{first.id}").text
        assert re.search(rf'data-testid="dependants">Runs before <a href="/jobs/{second.id}"', upstream)

        for kind in ("dash-stage1", "dash-stage2", "dash-final"):
            [c] = sdk.claim_chunks("w1", kinds=[kind])
            result = [{"name": "out", "uri": "https://example.com/out.mp4", "role": "ARTIFACT_ROLE_RESULT"}]
            sdk.complete_chunk(c.chunk.id, c.lease_token, result if kind == "dash-final" else None)
        page = client.get(f"/jobs/{second.id}").text
        assert "Waiting:" not in page
        assert re.search(r'data-testid="result">Result: <a href="https://example.com/out.mp4"', page)


def test_the_job_page_states_the_job_s_failure_policy_and_timeouts(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        job = sdk.create_job("dash-limits", 3, max_failed_chunks=1, attempt_timeout=90, job_timeout=3600)
        page = client.get(f"/jobs/{job.id}").text
        note = re.search(r'data-testid="limits">(.*?)</p>', page, re.S)
        assert note is not None
        text = re.sub(r"<[^>]+>", "", note.group(1))
        assert "Fails at once when 1 chunk has failed for good." in text
        assert "An attempt may run at most 90 s." in text and "Fails if not ended by" in text
        plain = sdk.create_job("dash-limits", 3)
        assert 'data-testid="limits"' not in client.get(f"/jobs/{plain.id}").text


def test_pause_and_resume_from_the_job_page(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        job = sdk.create_job("dash-pause", 3, chunk_size=1, max_running_chunks=2)
        page = client.get(f"/jobs/{job.id}").text
        assert 'data-testid="pause-job"' in page and 'data-testid="resume-job"' not in page
        assert re.search(r'data-testid="max-running">At most 2 of its chunks run at once', page)

        done = _post(client, f"/jobs/{job.id}/pause", {})
        assert done.status_code == 303 and sdk.get_job(job.id).paused
        page = client.get(f"/jobs/{job.id}").text
        assert "Paused: no chunk of the job is claimed" in page  # the action's message, once
        assert 'data-testid="paused"' in page and 'data-testid="resume-job"' in page
        listing = client.get("/", params={"kind": "dash-pause"}).text
        assert re.search(r'<td class="state"[^>]*>.*?data-testid="paused"', listing, re.S)
        assert sdk.claim_chunks("w1", ["dash-pause"], max_chunks=3) == []

        assert _post(client, f"/jobs/{job.id}/resume", {}).status_code == 303
        assert not sdk.get_job(job.id).paused
        assert len(sdk.claim_chunks("w1", ["dash-pause"], max_chunks=3)) == 2


KIND_ROW = re.compile(r'<tr data-testid="kind-row" data-kind="([^"]+)">(.*?)</tr>', re.S)


def _kind_rows(page: str) -> dict[str, str]:
    return dict(KIND_ROW.findall(page))


def _cell(row: str, field: str) -> str:
    found = re.search(rf'data-field="{field}">(.*?)</td>', row, re.S)
    assert found, field
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_the_failures_page_groups_failures_by_reason_and_retries_one(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        first = sdk.create_job("dash-fail", 3, chunk_size=1, max_attempts=1)
        second = sdk.create_job("dash-fail", 2, chunk_size=1, max_attempts=1)
        for claim in sdk.claim_chunks("w", kinds=["dash-fail"], max_chunks=5):
            reason = "DECODE" if claim.chunk.index < 2 else "<OOM>"
            sdk.fail_chunk(claim.chunk.id, claim.lease_token, reason, "bad <frame>", retryable=False)
        page = client.get("/failures", params={"kind": "dash-fail"}).text
        rows = re.findall(r'data-testid="failure-group" data-reason="([^"]*)"', page)
        assert sorted(rows) == ["&lt;OOM&gt;", "DECODE"]  # escaped, never markup
        assert "bad &lt;frame&gt;" in page and "<frame>" not in page
        decode = re.search(
            r'data-reason="DECODE".*?data-field="chunks">(\d+)<.*?data-field="jobs">(\d+)<', page, re.S
        )
        assert decode is not None and decode.groups() == ("4", "2")

        one = client.get("/failures", params={"kind": "dash-fail", "reason": "DECODE"}).text
        jobs = re.findall(r'data-testid="affected-job" data-job="([^"]+)"', one)
        assert jobs == [second.id, first.id]  # newest first

        done = _post(client, "/failures/retry", {"reason": "DECODE", "kind": "dash-fail"})
        assert done.status_code == 303 and done.headers["location"] == "/failures?kind=dash-fail"
        assert sdk.get_job(first.id).chunks_summary.pending == 2
        left = client.get("/failures", params={"kind": "dash-fail"}).text
        assert "Retried 4 chunks that failed with DECODE." in left  # the action's message, once
        assert re.findall(r'data-testid="failure-group" data-reason="([^"]*)"', left) == ["&lt;OOM&gt;"]
        assert 'data-testid="no-failures"' in client.get("/failures", params={"kind": "nothing-here"}).text


def test_the_kinds_page_lists_kinds_and_pauses_and_resumes_them(server) -> None:
    with jobpulse.Client(server.address) as sdk, httpx.Client(base_url=_base(server), timeout=20) as client:
        empty = client.get("/kinds")
        assert empty.status_code == 200 and 'data-testid="no-kinds"' in empty.text
        assert '<a href="/kinds" aria-current="page">Kinds</a>' in empty.text
        assert '<a href="/kinds"' in client.get("/").text, "the nav links to it from every page"
        sdk.create_job("dash-kind", 3, chunk_size=1)
        sdk.claim_chunks("w1", ["dash-kind"], max_chunks=1)
        sdk.update_kind("dash-capped", max_running_chunks=4)

        rows = _kind_rows(client.get("/kinds").text)
        assert set(rows) == {"dash-kind", "dash-capped"}
        row = rows["dash-kind"]
        cells = [_cell(row, f) for f in ("paused", "cap", "pending", "running")]
        assert cells == ["claimed", "none", "2", "1"]
        assert _cell(rows["dash-capped"], "cap") == "4"
        assert 'data-testid="pause-kind" aria-label="Pause dash-kind"' in row

        done = _post(client, "/kinds/pause", {"kind": "dash-kind", "back": "/kinds"})
        assert done.status_code == 303 and done.headers["location"] == "/kinds"
        [listed] = [k for k in sdk.list_kinds() if k.kind == "dash-kind"]
        assert listed.paused and listed.max_running_chunks == 0
        page = client.get("/kinds").text
        assert "Paused dash-kind: no chunk of it is claimed" in page  # the action's message, once
        row = _kind_rows(page)["dash-kind"]
        assert 'data-testid="paused"' in row and 'data-testid="resume-kind"' in row

        assert _post(client, "/kinds/resume", {"kind": "dash-kind"}).status_code == 303
        assert not next(k for k in sdk.list_kinds() if k.kind == "dash-kind").paused
        # A kind with no chunks may be paused ahead of time from the page's form.
        assert _post(client, "/kinds/pause", {"kind": "dash-later"}).status_code == 303
        assert 'data-testid="paused"' in _kind_rows(client.get("/kinds").text)["dash-later"]
        bad = _post(client, "/kinds/pause", {"kind": ""})
        assert bad.status_code == 400 and "kind" in bad.text and "Traceback" not in bad.text
        # The page posts back only to itself.
        assert (
            _post(client, "/kinds/resume", {"kind": "dash-later", "back": "//evil.example"}).headers[
                "location"
            ]
            == "/kinds"
        )


def test_only_an_admin_pauses_a_kind_from_the_page(keyed: Any) -> None:
    srv, made, _, _ = keyed
    with _login(srv, made["alice"]) as alice:
        page = alice.get("/kinds")
        # alice's own chunks of the kind, and no buttons: her key may not change a kind.
        assert _cell(_kind_rows(page.text)["k"], "pending") == "5"
        assert 'data-testid="pause-kind"' not in page.text and "Only an admin key" in page.text
        refused = _post(alice, "/kinds/pause", {"kind": "k"})
        assert refused.status_code == 403 and "may not" in refused.text
    with jobpulse.Client(srv.address, api_key=made["root"]) as root:
        assert not next(k for k in root.list_kinds() if k.kind == "k").paused
    with _login(srv, made["root"]) as root_page:
        page = root_page.get("/kinds").text
        assert _cell(_kind_rows(page)["k"], "pending") == "6"
        assert 'aria-label="Pause k"' in page
        assert _post(root_page, "/kinds/pause", {"kind": "k"}).status_code == 303
        assert 'data-testid="resume-kind"' in root_page.get("/kinds").text


def test_all_jobs_matching_a_filter_are_cancelled_with_a_count_a_question_and_a_progress_page(
    make_server,
) -> None:
    srv = make_server(bulk_batch_size=2)
    with jobpulse.Client(srv.address) as sdk, httpx.Client(base_url=_base(srv), timeout=20) as client:
        hit = [sdk.create_job(kind="filter-me", total_items=1, labels={"batch": "9"}) for _ in range(5)]
        spared = sdk.create_job(kind="filter-me", total_items=1, labels={"batch": "1"})
        query = "kind=filter-me&label=batch%3D9&state=PENDING"
        page = client.get(f"/?{query}")
        assert 'data-testid="bulk-filter"' in page.text and "All 5 matching" in page.text
        # Unfiltered, the page offers no "all" action.
        assert 'data-testid="bulk-filter"' not in client.get("/").text

        asked = _post(client, "/actions/bulk-filter", {"action": "cancel", "query": query})
        assert asked.status_code == 200 and 'data-testid="bulk-confirm"' in asked.text
        assert "5 jobs match" in asked.text
        assert {_state(j) for j in sdk.batch_get_jobs([j.id for j in hit])} == {"PENDING"}

        started = _post(
            client, "/actions/bulk-filter", {"action": "cancel", "query": query, "confirm": "yes"}
        )
        assert started.status_code == 303 and started.headers["location"].startswith("/operations/bulk-")
        where = started.headers["location"]
        done = eventually(
            lambda: (
                (p := client.get(where)).status_code == 200
                and 'data-testid="bulk-state">Done' in p.text
                and p
            ),
            20,
            "the operation's page to say it is done",
        )
        assert 'data-testid="bulk-done">5<' in done.text and "<progress" in done.text
        assert {_state(j) for j in sdk.batch_get_jobs([j.id for j in hit])} == {"CANCELLED"}
        assert _state(sdk.get_job(spared.id)) == "PENDING"
        # Nothing left to stop; a bad action or name is a page that says so.
        assert _post(client, f"{where}/stop", {}).status_code == 303
        bad = _post(client, "/actions/bulk-filter", {"action": "explode", "query": query})
        assert bad.status_code == 400 and "must be cancel, retry or purge" in bad.text
        assert client.get("/operations/bulk-nothing").status_code == 404
        assert client.get("/operations/other-thing").status_code == 400
