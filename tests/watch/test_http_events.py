"""The HTTP side's SSE of one job (GET /v1/jobs/{id}/events) over real HTTP against a real server, on
both databases: the same guarantees as WatchJob (snapshot, changes, resume without gap or duplicate,
heartbeats, the end), and JSON errors for bad requests."""

from __future__ import annotations

import threading

from google.protobuf import json_format
from support.polling import eventually
from support.sse import Event, Stream, read
from support.watch import assert_matches_final, check_stream, final_state

import jobpulse
from jobpulse.v1 import job_service_pb2


def _url(srv: object, job_id: str, query: str = "") -> str:
    app = srv.app  # type: ignore[attr-defined]
    return f"{app.http_url}/v1/jobs/{job_id}/events{query}"


def _messages(events: list[Event]) -> list[job_service_pb2.WatchJobResponse]:
    """The watch messages a stream carried, as WatchJobResponse (heartbeat comments and `end` left out)."""
    out = []
    for e in events:
        if e.event in ("snapshot", "change"):
            msg = json_format.Parse(e.data, job_service_pb2.WatchJobResponse())
            assert e.id is None or int(e.id) == msg.revision, "the event id is not the message's revision"
            assert (e.id is None) == msg.more, "only parts of a split message go without an id"
            out.append(msg)
    return out


def _work(
    client: jobpulse.Client,
    kind: str,
    n: int,
    go: threading.Event | None = None,
    permits: threading.Semaphore | None = None,
) -> None:
    """Claims, reports on and completes ``n`` chunks, once ``go`` is set; with ``permits``, one permit a
    chunk, which the reader hands out."""
    if go is not None:
        assert go.wait(20), "the stream never started"
    done = 0
    while done < n:
        if permits is not None:
            assert permits.acquire(timeout=20), "the reader stopped handing out chunks"
        for claim in client.claim_chunks("http-worker", [kind], max_chunks=1, wait=2.0):
            client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=1, stage="half")
            client.complete_chunk(claim.chunk.id, claim.lease_token)
            done += 1


def test_snapshot_changes_heartbeats_end_then_204(make_server) -> None:
    srv = make_server(heartbeat_interval=0.2, watch_min_interval=0.0)
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="sse", total_items=8, chunk_size=2)
        go = threading.Event()
        heartbeats = []

        def until(event: Event, events: list[Event]) -> bool:
            if event.comment is not None and event.comment.startswith("heartbeat"):
                heartbeats.append(event.comment)
                go.set()  # idle long enough for a heartbeat: now make changes
            return False

        worker = threading.Thread(target=_work, args=(client, "sse", 4, go), daemon=True)
        worker.start()
        stream = read(_url(srv, job.id), until=until)
        worker.join(20)
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"].startswith("no-cache")
        assert stream.ended, "the server did not close the stream after the terminal state"
        assert stream.events[0].event == "snapshot"
        assert heartbeats and heartbeats[0] == f"heartbeat {job.revision}"
        assert stream.events[-1].event == "end", "the last event is not `end`"
        messages = _messages(stream.events)
        final, chunks = final_state(client, job.id)
        assert len(messages[0].chunks) == 4, "the snapshot carries every chunk"
        assert_matches_final(check_stream(messages), messages, chunks)
        assert messages[-1].revision == final.revision
        assert stream.last_id == str(final.revision)

        # EventSource reconnects with the last id it saw: at (or after) the terminal revision, 204 tells
        # it to stop; without an id, a late page gets the final snapshot and the end at once.
        again = read(_url(srv, job.id), headers={"Last-Event-ID": str(final.revision)})
        assert (again.status, again.body) == (204, b"")
        assert read(_url(srv, job.id, f"?after_revision={final.revision + 5}")).status == 204
        late = read(_url(srv, job.id))
        assert [e.event for e in late.events if e.comment is None] == ["snapshot", "end"]


def test_resume_with_last_event_id_misses_nothing_and_repeats_nothing(make_server) -> None:
    """A page that loses its connection mid-job and comes back with its Last-Event-ID, several times:
    the events of all its connections together fold to the final state of every chunk, and no
    revision arrives twice."""
    srv = make_server(watch_min_interval=0.0)
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="resume", total_items=30, chunk_size=1)
        # The worker does one chunk for each event the page gets: each chunk makes at least one event, so
        # the worker is always a chunk past the last event seen (the next connection has a change to
        # resume to), and the job cannot end before the page has come back several times, however fast
        # either side runs.
        permits = threading.Semaphore(0)
        worker = threading.Thread(target=_work, args=(client, "resume", 30, None, permits), daemon=True)
        seen: list[Event] = []
        last_id: str | None = None
        connections = 0
        worker.start()
        while True:
            connections += 1
            headers = {"Last-Event-ID": last_id} if last_id else {}
            # Drop the connection after a few events each time, as a flaky network would.
            cut = 2 + connections % 3

            def until(event: Event, events: list[Event], cut: int = cut) -> bool:
                if event.id is not None:
                    permits.release()
                return sum(x.id is not None for x in events) >= cut

            stream = read(_url(srv, job.id), headers=headers, until=until)
            if stream.status == 204:
                break
            assert stream.status == 200, stream.body
            seen.extend(stream.events)
            last_id = stream.last_id or last_id
            if stream.ended:
                break
        worker.join(20)
        messages = _messages(seen)
        _, chunks = final_state(client, job.id)
        check = check_stream(messages)  # strictly growing revisions over every connection: no duplicate
        assert_matches_final(check, messages, chunks)  # every chunk's last change seen: no gap
        assert connections >= 3, "the test meant to reconnect several times"


def test_bad_requests_are_json_errors_with_the_grpc_reasons(make_server) -> None:
    srv = make_server()
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="bad", total_items=2, chunk_size=1)

    def error(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        stream = read(url, headers=headers)
        assert stream.headers["content-type"] == "application/json", stream.body
        body = __import__("json").loads(stream.body)["error"]
        assert set(body) == {"code", "status", "reason", "message"}
        assert body["code"] == stream.status
        return stream.status, body["reason"], body["message"]

    status, reason, message = error(_url(srv, job.id, f"?after_revision={job.revision + 1}"))
    assert (status, reason) == (400, "REVISION_AHEAD") and job.id in message
    assert error(_url(srv, job.id, "?after_revision=-1"))[:2] == (400, "INVALID_ARGUMENT")
    assert error(_url(srv, job.id, "?after_revision=abc"))[:2] == (400, "INVALID_ARGUMENT")
    assert "Last-Event-ID" in error(_url(srv, job.id), {"Last-Event-ID": "x"})[2]
    assert error(_url(srv, "not%20an%20id"))[:2] == (400, "INVALID_ARGUMENT")
    assert error(_url(srv, "01ZZZZZZZZZZZZZZZZZZZZZZZZ"))[:2] == (404, "JOB_NOT_FOUND")
    assert error(srv.app.http_url + "/v1/nothing/here")[:2] == (404, "NOT_FOUND")


def test_one_hub_subscription_per_stream_and_none_left_after(make_server) -> None:
    """Each SSE stream is one watcher of the hub while open (no polling of its own), and a client
    that goes away is forgotten."""
    srv = make_server()
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="hub", total_items=2, chunk_size=1)
    hub = srv.app.hub
    before = hub.open_streams
    opened: list[Stream] = []
    done = threading.Event()

    def hold() -> None:
        opened.append(read(_url(srv, job.id), until=lambda e, events: done.wait(20) or True))

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    eventually(lambda: hub.open_streams == before + 3, what="three open SSE streams on the hub")
    done.set()
    for t in threads:
        t.join(20)
    eventually(lambda: hub.open_streams == before, what="the hub forgetting closed SSE streams")
    assert all(s.status == 200 for s in opened)
