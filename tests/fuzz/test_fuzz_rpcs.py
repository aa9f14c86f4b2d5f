"""Fuzzes every RPC of JobService, WorkerService and AdminService against a real server.

For each caller mode (open mode, a client, worker and admin key, and bogus credentials) and each RPC,
hypothesis sends arbitrary requests built from the proto descriptors through a raw grpc channel and
checks every answer: never INTERNAL, UNKNOWN or DATA_LOSS (nor UNAVAILABLE: the database is up); every
error carries a google.rpc.Status with a jobpulse ErrorInfo; INVALID_ARGUMENT names a field (or is
INVALID_PAGE_TOKEN); wrong roles and bad keys are refused before anything else. Afterwards the server
is still SERVING and answering, and every job's chunks_summary equals a recount of its chunks.

The bugs it found are fixed and pinned as regression tests in test_fuzz_known_bugs.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import (
    METHODS,
    ORDER,
    SERVING,
    Outcome,
    Pools,
    call,
    check_summaries,
    describe,
    health_status,
    problems,
    requests,
    unary,
)

from jobpulse.v1 import admin_service_pb2, job_service_pb2, worker_service_pb2
from jobpulse_server.services import keys

MODES = ["open", "client", "worker", "admin", "bogus"]
DEEP_EXAMPLES = 22  # per RPC, when the caller may call it
DENIED_EXAMPLES = 4  # per RPC, when the caller is refused at the door
# On PostgreSQL, open mode alone: it sends every RPC its deep examples, so every statement meets arbitrary
# values there. What the other modes add is the door (roles checked against keys held in memory) and an
# owner bound in the same statements: fuzzed on SQLite, and keys and usage on PostgreSQL are in
# tests/security/. The four modes took 83 s of PostgreSQL a run (--durations, 586da25).
POSTGRESQL_MODES = ["open"]
ROLE_OF_SERVICE = {
    "JobService": "client",
    "WorkerService": "worker",
    "AdminService": "admin",
    "ScheduleService": "client",
}
Metadata = tuple[tuple[str, str], ...]


def _bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def _key(srv: Any, name: str, role: str) -> str:
    key: str = srv.call(keys.create_key(srv.app.db, name, role))
    srv.call(srv.app.auth.refresh())
    return key


class Caller:
    """The credentials of one fuzz run, and which RPCs they may call."""

    def __init__(self, srv: Any, mode: str) -> None:
        self.mode = mode
        if mode == "open":
            self.admin: Metadata = ()
            self.own: Metadata = ()
            self.headers = st.just(())
            return
        self.admin = _bearer(_key(srv, "fuzz-admin", "admin"))
        self.own = self.admin
        if mode == "admin":
            self.headers = st.just(self.own)
            return
        if mode in ("client", "worker"):
            self.own = _bearer(_key(srv, f"fuzz-{mode}", mode))
            self.headers = st.just(self.own)
            return
        revoked = _key(srv, "fuzz-revoked", "client")
        srv.call(keys.revoke_key(srv.app.db, "fuzz-revoked"))
        srv.call(srv.app.auth.refresh())
        self.headers = st.sampled_from(
            [
                (),
                _bearer("jp_bogus-key-that-was-never-made"),
                _bearer(revoked),
                _bearer(""),
                (("authorization", "Basic Zm9vOmJhcg=="),),
                (("authorization", "Bearer"),),
                (("x-api-key", "jp_bogus"),),
            ]
        )

    def allowed(self, method: str) -> bool:
        if self.mode in ("open", "admin"):
            return True
        if self.mode == "bogus":
            return False
        if method in ("GetUsage", "ListKinds"):  # any key: its own usage; the kinds, its own jobs' counts
            return True
        if method == "UpdateKind":  # a kind's controls hold for every owner: admin keys only
            return False
        return ROLE_OF_SERVICE[METHODS[method].containing_service.name] == self.mode

    def refusal(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAUTHENTICATED if self.mode == "bogus" else grpc.StatusCode.PERMISSION_DENIED

    @property
    def creator(self) -> Metadata:
        """Who creates the seeded jobs: the caller itself when it may, so it can see them."""
        return self.admin if self.mode in ("worker", "bogus") else self.own

    @property
    def worker(self) -> Metadata:
        return self.own if self.mode == "worker" else self.admin


def _seed(channel: grpc.Channel, caller: Caller, pools: Pools) -> None:
    """Jobs in several states, live leases, and real page tokens and cursors for the pools."""
    J = job_service_pb2
    W = worker_service_pb2
    creator = caller.creator
    made = []
    for total, size, priority in ((6, 2, 5), (1203, 1, 3), (4, 1, 9), (2, 1, 5), (3, 1, 0)):
        req = J.CreateJobRequest(kind="fuzz", total_items=total, chunk_size=size, priority=priority)
        req.labels["team"] = "a"
        req.metadata.update({"n": total, "s": "x"})
        job = unary(channel, "CreateJob", req, creator).job
        made.append(job)
        pools.learn("CreateJob", J.CreateJobResponse(job=job))
    unary(channel, "CancelJob", J.CancelJobRequest(job_id=made[3].id, reason="seed"), creator)
    claimed = unary(
        channel, "ClaimChunks", W.ClaimChunksRequest(worker_id="seed", max_chunks=6), caller.worker
    )
    pools.learn("ClaimChunks", claimed)
    claims = list(claimed.claims)
    unary(
        channel,
        "CompleteChunk",
        W.CompleteChunkRequest(chunk_id=claims[0].chunk.id, lease_token=claims[0].lease_token),
        caller.worker,
    )
    unary(
        channel,
        "FailChunk",
        W.FailChunkRequest(chunk_id=claims[1].chunk.id, lease_token=claims[1].lease_token, retryable=False),
        caller.worker,
    )
    lister = caller.own if caller.allowed("ListJobs") else caller.admin
    for order in ("", "create_time", "update_time", "priority", "priority desc", "update_time desc"):
        page = unary(channel, "ListJobs", J.ListJobsRequest(page_size=1, order_by=order), lister)
        pools.learn("ListJobs", page)
        pools.page_tokens.append((page.next_page_token, {"order_by": order}, "jobs"))
    for states in ([], [1]):
        page = unary(
            channel,
            "ListJobChunks",
            J.ListJobChunksRequest(job_id=made[1].id, page_size=1, states=states),
            lister,
        )
        pools.page_tokens.append((page.next_page_token, {"job_id": made[1].id, "states": states}, "chunks"))
    assert all(token for token, _, _ in pools.page_tokens)


def _timeout(method: str, request: Any) -> float:
    # These may block for work up to 60 s: DEADLINE_EXCEEDED is then our own doing.
    if method == "ClaimChunks" and request.HasField("wait"):
        return 0.5
    if method == "CompleteChunks" and request.HasField("claim_next") and request.claim_next.HasField("wait"):
        return 0.5
    return 5.0


# The worker, admin and client keys' runs (19, 23 and 8 s) are left to `make test-slow`: open mode
# sends every RPC its deep examples, and a bogus key keeps the door.
_SLOW_MODES = ("worker", "admin", "client")


@pytest.mark.parametrize(
    "mode", [pytest.param(m, marks=pytest.mark.slow) if m in _SLOW_MODES else m for m in MODES]
)
def test_fuzz_every_rpc(make_server: Callable[..., Any], database_url: str, mode: str) -> None:
    if database_url.startswith("postgresql") and mode not in POSTGRESQL_MODES:
        pytest.skip(f"{mode} mode is fuzzed on SQLite; on PostgreSQL open mode sends every RPC")
    srv = make_server(
        rate_limit_client=0,
        rate_limit_worker=0,
        heartbeat_interval=0.05,
        max_chunks_per_job=2000,
        key_refresh_interval=3600,
    )
    caller = Caller(srv, mode)
    channel = grpc.insecure_channel(srv.address, options=[("grpc.max_receive_message_length", 64 << 20)])
    pools = Pools()
    _seed(channel, caller, pools)
    failures: list[str] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        for method in ORDER:
            if method == "UpdateJob":  # before the RPCs that may delete the seeded jobs
                assert check_summaries(channel, caller.admin) >= 5
            began = time.monotonic()
            try:
                _fuzz_one(channel, caller, method, pools)
            except AssertionError as exc:  # keep fuzzing the other RPCs; report every one at the end
                failures.append(str(exc).split("\nFailing test case")[0])
            timings[method] = round(time.monotonic() - began, 2)
        assert not failures, "\n\n".join(failures)
        assert health_status(channel) == SERVING
        answer = call(channel, "GetUsage", admin_service_pb2.GetUsageRequest(), caller.admin)
        assert answer.code == grpc.StatusCode.OK, answer
        check_summaries(channel, caller.admin)
    finally:
        channel.close()
    print(f"fuzz[{mode}]: {time.monotonic() - started:.1f}s {timings}")


def _fuzz_one(channel: grpc.Channel, caller: Caller, method: str, pools: Pools) -> None:
    allowed = caller.allowed(method)
    snapshot = pools.snapshot()

    @settings(
        max_examples=DEEP_EXAMPLES if allowed else DENIED_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(request=requests(method, snapshot), headers=caller.headers)
    def run(request: Any, headers: Metadata) -> None:
        outcome = call(channel, method, request, headers, _timeout(method, request))
        if outcome.code == grpc.StatusCode.OK:
            for response in outcome.responses:
                pools.learn(method, response)
        found = problems(outcome, client_deadline_ok=_timeout(method, request) < 1)
        if not allowed and outcome.code != caller.refusal():
            found.append(f"expected {caller.refusal().name} for a {caller.mode} caller")
        assert not found, _report(method, caller.mode, request, outcome, found)

    run()


def _report(method: str, mode: str, request: Any, outcome: Outcome, found: list[str]) -> str:
    return (
        f"{method} as {mode}: {'; '.join(found)}\n"
        f"  answer: {outcome.code.name} {outcome.message!r}\n"
        f"  request: {describe(request)}"
    )
