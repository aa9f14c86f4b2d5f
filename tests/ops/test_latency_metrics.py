"""The chunk and job latency metrics (docs/operations.md, Metrics) over a real server and real SDK calls,
on both databases: after jobs whose waits the test sets on the server's clock, the histograms' counts and
sums are exactly those waits; watch deliveries are counted per CHANGE message a WatchJob stream and an SSE
stream carried; exemplars carry the current trace id and show in the OpenMetrics format."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families
from support.clock import FakeClock
from support.sse import Event, read

import jobpulse
from jobpulse.v1 import job_service_pb2, worker_service_pb2
from jobpulse_server.app.wiring import App, create_server
from jobpulse_server.domain.clock import now_us
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import ATTEMPT_BUCKETS, MAX_KINDS, OTHER_KIND, Metrics

US = 1_000_000


class ClockedServer:
    """A server on its own loop thread whose clock is ``clock``."""

    def __init__(self, database_url: str, clock: FakeClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = Config(host="127.0.0.1", port=0, database_url=database_url, drain_seconds=0.0, http_port=0)
        self.app: App = self._call(create_server(config, clock=clock))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def close(self) -> None:
        self._call(self.app.stop(0.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[ClockedServer, FakeClock]]:
    clock = FakeClock(now_us())
    srv = ClockedServer(database_url, clock)
    try:
        yield srv, clock
    finally:
        srv.close()


def scrape(http_url: str | None) -> str:
    assert http_url is not None, "the server has no HTTP side"
    response = httpx.get(f"{http_url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def histogram(text: str, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of the histogram ``name`` with exactly ``labels``; (0, 0) when it has none."""
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.labels != labels:
                continue
            if sample.name == f"{name}_count":
                count = sample.value
            elif sample.name == f"{name}_sum":
                total = sample.value
    return count, total


def _us(ts: Timestamp) -> int:
    return ts.seconds * US + ts.nanos // 1000


def test_chunk_and_job_latencies_match_the_waits_set_on_the_clock(clocked) -> None:
    srv, clock = clocked
    with jobpulse.Client(srv.address, timeout=20) as client:
        created = clock.now
        job = client.create_job(kind="lat", total_items=3, chunk_size=1, max_attempts=3)
        clock.advance(2)
        claims = client.claim_chunks("w1", ["lat"], max_chunks=3)
        assert len(claims) == 3
        clock.advance(5)
        client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
        client.complete_chunk(claims[1].chunk.id, claims[1].lease_token)
        failed = client.fail_chunk(claims[2].chunk.id, claims[2].lease_token, "OOPS", retryable=True)
        assert failed.will_retry
        # The retry is claimable from its next_attempt_time: its queue wait counts from there.
        clock.now = _us(failed.next_attempt_time) + 3 * US
        again = client.claim_chunks("w1", ["lat"], max_chunks=1)
        assert [c.chunk.id for c in again] == [claims[2].chunk.id]
        assert again[0].chunk.attempt == 2
        clock.advance(1)
        # Complete-and-claim (the worker's usual call): nothing is left to claim.
        nothing = worker_service_pb2.ClaimChunksRequest(worker_id="w1", kinds=["lat"], max_chunks=1)
        done = client.complete_chunk(again[0].chunk.id, again[0].lease_token, claim_next=nothing)
        assert list(done.claims) == []
        ended = clock.now
        assert client.get_job(job.id).state == jobpulse.JobState.JOB_STATE_COMPLETED

        # A chunk failed for good: one attempt, the job FAILED.
        bad_created = clock.now
        bad = client.create_job(kind="bad", total_items=1, chunk_size=1)
        clock.advance(1)
        (claim,) = client.claim_chunks("w2", ["bad"], max_chunks=1)
        clock.advance(2)
        assert not client.fail_chunk(claim.chunk.id, claim.lease_token, "FATAL", retryable=False).will_retry
        bad_ended = clock.now
        assert client.get_job(bad.id).state == jobpulse.JobState.JOB_STATE_FAILED

    text = scrape(srv.app.http_url)
    assert histogram(text, "jobpulse_chunk_queue_wait_seconds", kind="lat") == pytest.approx((4, 2 * 3 + 3))
    assert histogram(text, "jobpulse_chunk_run_seconds", kind="lat", outcome="completed") == pytest.approx(
        (3, 5 + 5 + 1)
    )
    assert histogram(text, "jobpulse_chunk_run_seconds", kind="lat", outcome="failed") == pytest.approx(
        (1, 5)
    )
    assert histogram(text, "jobpulse_chunk_attempts", kind="lat") == pytest.approx((3, 1 + 1 + 2))
    assert histogram(text, "jobpulse_job_duration_seconds", kind="lat", state="COMPLETED") == pytest.approx(
        (1, (ended - created) / US)
    )
    assert histogram(text, "jobpulse_chunk_queue_wait_seconds", kind="bad") == pytest.approx((1, 1))
    assert histogram(text, "jobpulse_chunk_run_seconds", kind="bad", outcome="failed") == pytest.approx(
        (1, 2)
    )
    assert histogram(text, "jobpulse_chunk_attempts", kind="bad") == pytest.approx((1, 1))
    assert histogram(text, "jobpulse_job_duration_seconds", kind="bad", state="FAILED") == pytest.approx(
        (1, (bad_ended - bad_created) / US)  # 1 s queued + 2 s run
    )


def test_a_cancel_that_ends_a_job_at_once_is_a_job_duration(clocked) -> None:
    srv, clock = clocked
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="idle", total_items=2, chunk_size=1)
        clock.advance(4)
        assert client.cancel_job(job.id).state == jobpulse.JobState.JOB_STATE_CANCELLED
    text = scrape(srv.app.http_url)
    assert histogram(text, "jobpulse_job_duration_seconds", kind="idle", state="CANCELLED") == pytest.approx(
        (1, 4)
    )
    assert histogram(text, "jobpulse_chunk_attempts", kind="idle") == (0, 0), "cancelled chunks did not run"


def test_watch_deliveries_are_counted_per_change_message_on_grpc_and_sse(make_server) -> None:
    srv = make_server(watch_min_interval=0.0, heartbeat_interval=5.0)
    app = srv.app
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="watched", total_items=4, chunk_size=1)
        grpc_started, sse_started = threading.Event(), threading.Event()
        grpc_messages: list[job_service_pb2.WatchJobResponse] = []
        sse_events: list[Event] = []

        def watch_grpc() -> None:
            for msg in client.watch_job(job.id):
                grpc_messages.append(msg)
                grpc_started.set()

        def watch_sse() -> None:
            def until(event: Event, events: list[Event]) -> bool:
                if event.event == "snapshot":
                    sse_started.set()
                return False

            sse_events.extend(read(f"{app.http_url}/v1/jobs/{job.id}/events", until=until).events)

        watchers = [threading.Thread(target=f, daemon=True) for f in (watch_grpc, watch_sse)]
        for t in watchers:
            t.start()
        assert grpc_started.wait(20) and sse_started.wait(20), "a stream never started"
        for _ in range(4):
            (claim,) = client.claim_chunks("w", ["watched"], max_chunks=1, wait=5)
            client.complete_chunk(claim.chunk.id, claim.lease_token)
        for t in watchers:
            t.join(20)
            assert not t.is_alive(), "a stream did not end with the job"

    changes_grpc = sum(m.type == job_service_pb2.WATCH_EVENT_TYPE_CHANGE for m in grpc_messages)
    changes_sse = sum(e.event == "change" for e in sse_events)
    assert changes_grpc >= 1 and changes_sse >= 1
    text = scrape(app.http_url)
    count, total = histogram(text, "jobpulse_watch_delivery_seconds", transport="grpc")
    assert (count, total >= 0) == (changes_grpc, True)
    count, total = histogram(text, "jobpulse_watch_delivery_seconds", transport="sse")
    assert (count, total >= 0) == (changes_sse, True)


def test_metrics_negotiate_openmetrics_on_the_http_side(server) -> None:
    url = f"{server.app.http_url}/metrics"
    plain = httpx.get(url, timeout=10)
    assert plain.headers["content-type"].startswith("text/plain")
    om = httpx.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10)
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert "jobpulse_chunk_queue_wait_seconds" in om.text


def test_exemplars_carry_the_current_sampled_trace_id() -> None:
    metrics = Metrics()
    ctx = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(ctx)):
        metrics.observe_queue_wait("k", 0.3)
    unsampled = trace.SpanContext(trace_id=1, span_id=1, is_remote=False)
    with trace.use_span(trace.NonRecordingSpan(unsampled)):
        metrics.observe_chunk_run("k", "completed", 0.3)
    metrics.observe_attempts("k", 1)  # no span at all
    om = openmetrics_latest(metrics.registry).decode()
    waits = [line for line in om.splitlines() if line.startswith("jobpulse_chunk_queue_wait_seconds_bucket")]
    assert any('# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.3' in line for line in waits), waits
    assert om.count("trace_id=") == 1, "only the sampled span's observation has an exemplar"
    assert "trace_id" not in generate_latest(metrics.registry).decode(), "the text format has no exemplars"


def test_kinds_labelled_are_bounded() -> None:
    metrics = Metrics()
    for n in range(MAX_KINDS + 20):
        metrics.observe_queue_wait(f"kind-{n}", 1.0)
    text = generate_latest(metrics.registry).decode()
    kinds = {
        s.labels["kind"]
        for f in text_string_to_metric_families(text)
        if f.name == "jobpulse_chunk_queue_wait_seconds"
        for s in f.samples
    }
    assert len(kinds) == MAX_KINDS + 1 and OTHER_KIND in kinds
    assert histogram(text, "jobpulse_chunk_queue_wait_seconds", kind=OTHER_KIND) == (20, 20)
    assert metrics.kind_label("kind-0") == "kind-0", "a kind seen first keeps its label"


def test_loop_histograms_expose_what_prometheus_clients_histogram_would() -> None:
    """Every bucket, count and sum equal those of prometheus_client's own Histogram fed the same values,
    bounds included (a value equal to a bound counts in that bound's bucket)."""
    theirs_registry = CollectorRegistry()
    theirs = Histogram(
        "jobpulse_chunk_attempts", "same", ["kind"], buckets=ATTEMPT_BUCKETS, registry=theirs_registry
    )
    metrics = Metrics()
    values = [0, 1, 1, 2, 2.5, 3, 7, 10, 10.5, 100, 101, 5000]
    for v in values:
        metrics.chunk_attempts.labels("k").observe(v)
        theirs.labels("k").observe(v)

    def samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            if f.name == "jobpulse_chunk_attempts"
            for s in f.samples
            if not s.name.endswith("_created")
        )

    ours = samples(metrics.registry)
    assert ours == samples(theirs_registry)
    assert ("jobpulse_chunk_attempts_bucket", [("kind", "k"), ("le", "1.0")], 3.0) in ours  # 0, 1, 1
