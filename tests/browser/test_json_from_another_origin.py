"""A page from another origin lists the user's jobs with ``fetch`` to the JSON face, in headless Chromium:
``GET /v1/jobs`` with an ``Authorization: Bearer`` key, a request a browser sends only after a CORS
preflight. With the page's origin in the server's ``http_cors_origins`` the page shows the key owner's
jobs (and nobody else's); without it, or with another origin listed, the browser refuses the response and
the page shows the failure, and the server never gets the call (the preflight was refused, so the GET is
not even sent)."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.polling import eventually

import jobpulse
from jobpulse_server.services import keys

# The page: the API's address and the key come in the fragment (#api=...&key=...), which the page's own
# server never sees. A real page would get a key from its backend, not from its URL.
PAGE = """<!doctype html><meta charset="utf-8"><title>My jobs</title>
<h1>My jobs</h1> <p id="status">loading</p> <ul id="jobs"></ul>
<script>
  const config = new URLSearchParams(location.hash.slice(1));
  const status = document.getElementById("status");
  fetch(config.get("api") + "/v1/jobs?pageSize=50&orderBy=create_time", {
    headers: { Authorization: "Bearer " + config.get("key") },
  })
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.error.reason + ": " + body.error.message);
      for (const job of body.jobs || []) {
        const item = document.createElement("li");
        item.dataset.id = job.id;
        item.textContent = job.displayName + " " + job.state.replace("JOB_STATE_", "");
        document.getElementById("jobs").append(item);
      }
      status.textContent = (body.jobs || []).length + " jobs";
    })
    .catch((err) => { status.textContent = "failed: " + err; });
</script>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """The page's own origin: a static file server on a port of its own (so another origin than the
    API's), in a thread."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[PageServer]:
    (tmp_path / "jobs.html").write_text(PAGE, encoding="utf-8")
    served = PageServer(tmp_path)
    yield served
    served.close()


def _keyed_server(make_server: Any, cors: str) -> tuple[Any, dict[str, str]]:
    """A server with API keys (so each key sees its own jobs) and ``cors`` as its http_cors_origins;
    alice and bob each made two jobs, one of alice's cancelled."""
    srv = make_server(http_cors_origins=cors)
    made = {name: srv.call(keys.create_key(srv.app.db, name, "client")) for name in ("alice", "bob")}
    srv.call(srv.app.auth.refresh())
    for name, key in made.items():
        with jobpulse.Client(srv.address, api_key=key, timeout=20) as client:
            client.create_job("renders", 4, chunk_size=2, display_name=f"{name}-first")
            second = client.create_job("renders", 2, display_name=f"{name}-second")
            if name == "alice":
                client.cancel_job(second.id, reason="changed her mind")
    return srv, made


def _list_jobs_calls(srv: Any) -> float:
    """ListJobs calls the server answered, whatever their status, by its own counter."""
    metrics = httpx.get(str(srv.app.http_url) + "/metrics", timeout=10).text
    found = re.findall(r'^jobpulse_rpcs_total\{code="\w+",method="ListJobs"\} ([0-9.e+]+)$', metrics, re.M)
    return sum(float(n) for n in found)


def _responses(browser: Any, url: str) -> dict[str, list[dict[str, Any]]]:
    """The responses Chromium received for ``url`` since the log was last read, by resource type
    ("Preflight", "Fetch"), from its DevTools network events."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.responseReceived" and params["response"]["url"] == url:
            found.setdefault(params["type"], []).append(params["response"])
    return found


def _open(browser: Any, page: PageServer, srv: Any, key: str) -> str:
    """Loads the page with the API's address and the key; returns what its status line settled on."""
    browser.get(f"{page.origin}/jobs.html#api={srv.app.http_url}&key={key}")
    status = lambda: browser.find_element("id", "status").text  # noqa: E731
    return eventually(
        lambda: status() if status() != "loading" else None, timeout=20, what="the page's fetch"
    )


def test_a_listed_origin_s_page_shows_the_user_s_jobs(
    make_server: Any, browser: Any, page: PageServer, screenshots: Path
) -> None:
    srv, made = _keyed_server(make_server, cors=page.origin)
    browser.get_log("performance")  # what loading nothing logged so far
    assert _open(browser, page, srv, made["alice"]) == "2 jobs"
    items = [li.text for li in browser.find_elements("css selector", "#jobs li")]
    assert items == ["alice-first PENDING", "alice-second CANCELLED"]  # not bob's
    browser.save_screenshot(str(screenshots / "json-other-origin-listed.png"))
    # The browser asked first (the preflight, for the Authorization header), then sent the GET, whose
    # answer named the page's origin.
    responses = _responses(browser, f"{srv.app.http_url}/v1/jobs?pageSize=50&orderBy=create_time")
    assert [r["status"] for r in responses.get("Preflight", [])] == [200], responses
    [fetched] = responses["Fetch"]
    headers = {name.lower(): value for name, value in fetched["headers"].items()}
    assert fetched["status"] == 200 and headers["access-control-allow-origin"] == page.origin
    assert _list_jobs_calls(srv) == 1
    errors = [
        e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]
    ]
    assert errors == [], errors


@pytest.mark.parametrize(
    ("listed", "name"),
    [("", "none-listed"), ("http://app.example.com", "another-listed")],
    ids=["none-listed", "another-listed"],
)
def test_an_unlisted_origin_s_page_is_refused_by_the_browser(
    make_server: Any, browser: Any, page: PageServer, screenshots: Path, listed: str, name: str
) -> None:
    srv, made = _keyed_server(make_server, cors=listed)
    browser.get_log("performance")  # what loading nothing logged so far
    said = _open(browser, page, srv, made["alice"])
    assert said == "failed: TypeError: Failed to fetch", said
    # The preflight was answered, but not for the page's origin (405 with no CORS at all; 400 from the
    # CORS layer for an origin it does not list): no GET followed it.
    responses = _responses(browser, f"{srv.app.http_url}/v1/jobs?pageSize=50&orderBy=create_time")
    assert len(responses.get("Preflight", [])) == 1 and "Fetch" not in responses, responses
    assert browser.find_elements("css selector", "#jobs li") == []
    browser.save_screenshot(str(screenshots / f"json-other-origin-refused-{name}.png"))
    console = " ".join(e["message"] for e in browser.get_log("browser"))
    assert "blocked by CORS policy" in console, console
    # The preflight was refused, so the GET never left the browser: the server answered no ListJobs.
    assert _list_jobs_calls(srv) == 0
    # The same call from a program (no browser, no CORS) is answered: the refusal was the browser's.
    direct = httpx.get(
        f"{srv.app.http_url}/v1/jobs", headers={"authorization": f"Bearer {made['alice']}"}, timeout=10
    )
    assert direct.status_code == 200 and len(direct.json()["jobs"]) == 2
