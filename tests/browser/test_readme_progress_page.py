"""The progress page of docs/http.md in a real browser: headless Chromium loads it from another origin (so
CORS is real too), it follows a job over EventSource with an events token, and the bar reaches 100%
while an SDK worker completes the job; the console shows no error."""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from support.polling import eventually
from support.readme_blocks import find_block
from support.servers import free_port

import jobpulse


def _serve_page(folder: Path, port: int) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined,assignment]
    page = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    return page


def test_the_readme_page_shows_a_live_bar_up_to_100_percent(
    make_server: Any, browser: Any, tmp_path: Path, screenshots: Path
) -> None:
    block = find_block("docs/http.md", "## A live progress bar in a page", "html", "<!doctype html>")
    assert len(block.text.strip().splitlines()) <= 15, "the docs promise a page of 15 lines"
    (tmp_path / "progress.html").write_text(block.text, encoding="utf-8")
    page_port = free_port()
    page = _serve_page(tmp_path, page_port)
    origin = f"http://127.0.0.1:{page_port}"
    srv = make_server(http_cors_origins=origin, watch_min_interval=0.05)
    try:
        with jobpulse.Client(srv.address, timeout=20) as client:
            job = client.create_job(kind="browser", total_items=40, chunk_size=4, display_name="scenes")
            events = client.create_events_token(job.id).url(srv.app.http_url)
            browser.get(f"{origin}/progress.html?events={urllib.parse.quote(events, safe='')}")
            text = lambda element: browser.find_element("id", element).text  # noqa: E731
            eventually(lambda: text("state") == "PENDING", timeout=20, what="the snapshot on the page")
            browser.save_screenshot(str(screenshots / "readme-progress-start.png"))

            go = threading.Event()

            def work() -> None:
                done = 0
                while done < 10:
                    for claim in client.claim_chunks("browser-worker", ["browser"], max_chunks=1, wait=2.0):
                        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=2)
                        client.complete_chunk(claim.chunk.id, claim.lease_token)
                        done += 1
                        if done == 5:
                            go.set()

            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            assert go.wait(30)
            eventually(lambda: text("pct") not in ("0%", ""), timeout=20, what="the bar moving")
            worker.join(30)
            eventually(lambda: text("pct") == "100%", timeout=20, what="the bar at 100%")
            eventually(lambda: text("state") == "COMPLETED", timeout=20, what="the state COMPLETED")
            assert browser.find_element("id", "bar").get_attribute("value") == "100"
            browser.save_screenshot(str(screenshots / "readme-progress-done.png"))
            # (The little file server here has no favicon.ico; the browser asks for one on its own.)
            errors = [
                e
                for e in browser.get_log("browser")
                if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
            ]
            assert errors == [], f"the page logged errors: {errors}"
    finally:
        page.shutdown()
