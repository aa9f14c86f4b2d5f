"""Two replicas on one PostgreSQL database: GetUsage on either sums both replicas' calls, and a key's rate
limit holds across them, within the tolerance docs/operations.md documents (burst + rate x T + N x block)."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from support.polling import eventually

import jobpulse
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.services import keys


def _key(srv: Any, name: str, role: str, *others: Any) -> str:
    key = srv.call(keys.create_key(srv.app.db, name, role))
    for s in (srv, *others):
        s.call(s.app.auth.refresh())
    return key


@pytest.fixture
def make_replicas(make_server: Any, database_url: str) -> Any:
    if not database_url.startswith("postgresql"):
        pytest.skip("several replicas share a database only on PostgreSQL")

    def make(**settings: Any) -> tuple[Any, Any]:
        return make_server(usage_flush_interval=0.2, **settings), make_server(
            usage_flush_interval=0.2, **settings
        )

    return make


def _usage(srv: Any, root_key: str) -> dict[str, tuple[int, int]]:
    with jobpulse.Client(srv.address, api_key=root_key, timeout=10) as root:
        return {u.key_name: (u.calls, u.rejected) for u in root.get_usage().usage if u.key_name != "root"}


def test_get_usage_on_either_replica_sums_both(make_replicas: Any) -> None:
    a, b = make_replicas()
    alice = _key(a, "alice", "client", b)
    worker = _key(a, "w1", "worker", b)
    root = _key(a, "root", "admin", b)
    for srv, n in ((a, 10), (b, 15)):
        with jobpulse.Client(srv.address, api_key=alice, timeout=10) as client:
            for _ in range(n):
                client.list_jobs_page()
    with jobpulse.Client(b.address, api_key=worker, timeout=10) as w:
        for _ in range(4):
            w.claim_chunks("w1")
    # Each replica adds its own counts within a flush interval; either one then reports the sum.
    want = {"alice": (25, 0), "w1": (4, 0)}
    eventually(lambda: _usage(a, root), 10, "A's report of both replicas", expect=want)
    eventually(lambda: _usage(b, root), 10, "B's report of both replicas", expect=want)


def test_a_rate_limit_holds_across_two_replicas(make_replicas: Any) -> None:
    rate, burst = 5.0, 10.0  # burst: twice the rate
    a, b = make_replicas(rate_limit_client=rate, rate_limit_lease_seconds=0.1)
    alice = _key(a, "alice", "client", b)
    root = _key(a, "root", "admin", b)
    block = a.app.auth.limiter.block_for(rate)
    assert block == b.app.auth.limiter.block_for(rate) == 1
    metadata = (("authorization", f"Bearer {alice}"),)
    channels = [grpc.insecure_channel(srv.address) for srv in (a, b)]
    stubs = [job_service_pb2_grpc.JobServiceStub(ch) for ch in channels]
    admitted = refused = 0
    started = time.monotonic()
    try:
        # A fixed number of attempts, alternating replicas, as fast as they answer.
        for n in range(120):
            try:
                stubs[n % 2].ListJobs(job_service_pb2.ListJobsRequest(), metadata=metadata, timeout=10)
                admitted += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refused += 1
    finally:
        elapsed = time.monotonic() - started
        for ch in channels:
            ch.close()
    single = burst + rate * elapsed  # what one server alone admits in that time
    # The documented tolerance for N replicas: burst + rate x T + N x block. Each replica with a budget of
    # its own would admit up to twice the single budget (as long as 60 attempts each exceed it).
    assert admitted <= single + 2 * block, (admitted, elapsed)
    assert admitted < 2 * single
    assert 60 > single, f"too slow to tell one budget from two ({elapsed:.1f}s for 120 calls)"
    assert admitted >= burst - 2 * block  # the shared burst was there to take
    eventually(lambda: _usage(a, root), 10, "the sum of both replicas", expect={"alice": (admitted, refused)})
