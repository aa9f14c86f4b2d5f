"""End-to-end, through the generated stubs on a plain channel (no SDK retries): fenced completion.

What a worker sees when it completes (or reports on, or fails) a chunk whose lease it no longer holds:
an expired lease the sweeper has not reclaimed yet, a token of another chunk, a token superseded by a
newer claim. It is LEASE_LOST and nothing changes. Also CompleteChunks (per-item results, bad input),
complete-and-claim (``claim_next``), and completing a chunk whose job was cancelled meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.polling import eventually

from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

KIND = "fencing"
SHORT_LEASE = 0.3
# How far past a lease's end the test's clock must be before the lease counts as expired. The server
# and the test read the same wall clock, so this only has to beat the clock's resolution.
EXPIRY_MARGIN = 0.05

W = worker_service_pb2
J = job_service_pb2


@dataclass
class Stubs:
    """The generated stubs over one plain channel to a server."""

    jobs: job_service_pb2_grpc.JobServiceStub
    workers: worker_service_pb2_grpc.WorkerServiceStub

    def create(self, chunks: int, kind: str = KIND) -> job_pb2.Job:
        """Creates a job of ``chunks`` one-item chunks."""
        return self.jobs.CreateJob(
            J.CreateJobRequest(kind=kind, total_items=chunks, chunk_size=1), timeout=20
        ).job

    def get(self, job_id: str) -> job_pb2.Job:
        """The job in FULL view (chunks and artifacts inline)."""
        return self.jobs.GetJob(J.GetJobRequest(job_id=job_id, view=job_pb2.JOB_VIEW_FULL), timeout=20).job

    def claim(
        self, n: int = 1, lease: float | None = None, worker: str = "w1", kind: str = KIND
    ) -> list[W.ChunkClaim]:
        """Claims up to ``n`` chunks of ``kind`` (answering at once)."""
        request = W.ClaimChunksRequest(worker_id=worker, kinds=[kind], max_chunks=n)
        if lease is not None:
            request.lease_duration.CopyFrom(_duration(lease))
        return list(self.workers.ClaimChunks(request, timeout=20).claims)

    def claim_one(self, lease: float | None = None, worker: str = "w1") -> W.ChunkClaim:
        claims = self.claim(1, lease, worker)
        assert len(claims) == 1, f"expected one claim, got {len(claims)}"
        return claims[0]


@pytest.fixture
def stubs() -> Iterator[Callable[[Any], Stubs]]:
    """Opens plain channels to servers; closes them at teardown."""
    channels: list[grpc.Channel] = []

    def open_(srv: Any) -> Stubs:
        channel = grpc.insecure_channel(srv.address)
        channels.append(channel)
        return Stubs(
            job_service_pb2_grpc.JobServiceStub(channel), worker_service_pb2_grpc.WorkerServiceStub(channel)
        )

    yield open_
    for channel in channels:
        channel.close()


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _completion(claim: W.ChunkClaim, **kwargs: Any) -> W.ChunkCompletion:
    return W.ChunkCompletion(chunk_id=claim.chunk.id, lease_token=claim.lease_token, **kwargs)


def _error_details(exc: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason ('' if none) and the BadRequest violated fields of a failed call."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    reason, fields = "", []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


def _fails(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> list[str]:
    """Asserts ``call`` fails with ``code`` and ErrorInfo ``reason``; returns the violated fields."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    exc = info.value
    assert exc.code() == code, f"expected {code.name}, got {exc.code().name}: {exc.details()}"
    got_reason, fields = _error_details(exc)
    assert got_reason == reason, f"expected reason {reason}, got {got_reason!r}: {exc.details()}"
    return fields


def _lease_lost(call: Callable[[], Any]) -> None:
    _fails(call, grpc.StatusCode.ABORTED, "LEASE_LOST")


def _summary(job: job_pb2.Job) -> dict[str, int]:
    s = job.chunks_summary
    return {
        "total": s.total,
        "pending": s.pending,
        "processing": s.processing,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
    }


def _assert_consistent(job: job_pb2.Job) -> None:
    """The summary sums to total and equals a recount of the (FULL view) chunks."""
    s = _summary(job)
    assert s["pending"] + s["processing"] + s["completed"] + s["failed"] + s["cancelled"] == s["total"]
    assert len(job.chunks) == s["total"]
    names = {
        job_pb2.CHUNK_STATE_PENDING: "pending",
        job_pb2.CHUNK_STATE_PROCESSING: "processing",
        job_pb2.CHUNK_STATE_COMPLETED: "completed",
        job_pb2.CHUNK_STATE_FAILED: "failed",
        job_pb2.CHUNK_STATE_CANCELLED: "cancelled",
    }
    for state, name in names.items():
        assert sum(c.state == state for c in job.chunks) == s[name], f"{name}: summary {s} disagrees"


def _without_eta(job: job_pb2.Job) -> job_pb2.Job:
    """A copy without the ETA, the one field that may move with the clock alone."""
    copy = job_pb2.Job()
    copy.CopyFrom(job)
    copy.progress.ClearField("eta")
    return copy


def _wait_until_expired(claim: W.ChunkClaim) -> None:
    """Polls the wall clock (the server's too) until the claim's lease has ended."""
    end = claim.lease_expire_time.ToNanoseconds() / 1e9
    eventually(lambda: time.time() > end + EXPIRY_MARGIN, timeout=SHORT_LEASE + 10, interval=0.01)


# --- 1. an expired lease the sweeper has not reclaimed yet ---------------------------------------------


def _stale_complete(s: Stubs, claim: W.ChunkClaim) -> None:
    _lease_lost(
        lambda: s.workers.CompleteChunk(
            W.CompleteChunkRequest(
                chunk_id=claim.chunk.id,
                lease_token=claim.lease_token,
                artifacts=[job_pb2.Artifact(name="late.bin", uri="s3://out/late.bin")],
                external_task_id="late-ext",
            ),
            timeout=20,
        )
    )


def _stale_complete_and_claim(s: Stubs, claim: W.ChunkClaim) -> None:
    """Complete-and-claim runs the completion and the claim in one round trip on PostgreSQL: a late
    completion must claim nothing either (the job's other chunk stays PENDING)."""
    _lease_lost(
        lambda: s.workers.CompleteChunk(
            W.CompleteChunkRequest(
                chunk_id=claim.chunk.id,
                lease_token=claim.lease_token,
                artifacts=[job_pb2.Artifact(name="late.bin", uri="s3://out/late.bin")],
                external_task_id="late-ext",
                claim_next=W.ClaimChunksRequest(worker_id="late-worker", lease_duration=_duration(60)),
            ),
            timeout=20,
        )
    )


def _stale_progress(s: Stubs, claim: W.ChunkClaim) -> None:
    _lease_lost(
        lambda: s.workers.ReportChunkProgress(
            W.ReportChunkProgressRequest(
                chunk_id=claim.chunk.id,
                lease_token=claim.lease_token,
                items_done=1,
                stage="late-stage",
                message="late",
                external_task_id="late-ext",
                lease_duration=_duration(60),
            ),
            timeout=20,
        )
    )


def _stale_fail(s: Stubs, claim: W.ChunkClaim) -> None:
    _lease_lost(
        lambda: s.workers.FailChunk(
            W.FailChunkRequest(
                chunk_id=claim.chunk.id,
                lease_token=claim.lease_token,
                error=job_pb2.ChunkError(reason="LATE", message="too late"),
                retryable=False,
            ),
            timeout=20,
        )
    )


def _stale_complete_chunks(s: Stubs, claim: W.ChunkClaim) -> None:
    response = s.workers.CompleteChunks(
        W.CompleteChunksRequest(
            completions=[
                _completion(
                    claim,
                    artifacts=[job_pb2.Artifact(name="late.bin", uri="s3://out/late.bin")],
                    external_task_id="late-ext",
                )
            ]
        ),
        timeout=20,
    )
    assert len(response.results) == 1
    result = response.results[0]
    assert result.chunk_id == claim.chunk.id
    assert (result.ok, result.reason) == (False, "LEASE_LOST"), result
    assert result.message, "a failed item explains itself"
    assert len(response.claims) == 0


@pytest.mark.parametrize(
    "late_call",
    [_stale_complete, _stale_complete_and_claim, _stale_progress, _stale_fail, _stale_complete_chunks],
    ids=["CompleteChunk", "CompleteChunk+claim_next", "ReportChunkProgress", "FailChunk", "CompleteChunks"],
)
def test_expired_lease_not_yet_swept_is_lease_lost_and_changes_nothing(
    make_server: Callable[..., Any],
    stubs: Callable[[Any], Stubs],
    late_call: Callable[[Stubs, W.ChunkClaim], None],
) -> None:
    """A lease that has run out is lost at once, even while its token is still the chunk's current one
    (the sweeper has not been round): the late call is LEASE_LOST and the job is exactly as it was."""
    s = stubs(make_server(sweep_interval=3600))
    job = s.create(2)
    claim = s.claim_one(lease=SHORT_LEASE)
    before = s.get(job.id)
    assert before.chunks[claim.chunk.index].state == job_pb2.CHUNK_STATE_PROCESSING
    _wait_until_expired(claim)

    late_call(s, claim)

    after = s.get(job.id)
    chunk = after.chunks[claim.chunk.index]
    assert chunk.state == job_pb2.CHUNK_STATE_PROCESSING, "the sweeper's job, not the late caller's"
    assert chunk.attempt == claim.chunk.attempt == 1
    assert chunk.items_done == 0
    assert chunk.external_task_id == ""
    assert len(chunk.artifacts) == 0 and len(after.artifacts) == 0
    assert after.revision == before.revision
    assert _summary(after) == _summary(before)
    assert (after.stage, after.message) == ("", "")
    assert _without_eta(after) == _without_eta(before)
    _assert_consistent(after)


# --- 2. CompleteChunks judges each item on its own -----------------------------------------------------


def test_complete_chunks_commits_the_valid_items_and_reports_the_others(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """In one CompleteChunks, items with their current lease commit (artifacts included) while an item
    with another chunk's token is LEASE_LOST and an unknown chunk is CHUNK_NOT_FOUND; results come back
    in request order, and the failed items change nothing."""
    s = stubs(make_server())
    job = s.create(4)
    claims = s.claim(4)
    assert [c.chunk.index for c in claims] == [0, 1, 2, 3]
    before = s.get(job.id)
    unknown_id = f"{job.id}-99"

    response = s.workers.CompleteChunks(
        W.CompleteChunksRequest(
            completions=[
                _completion(
                    claims[0],
                    artifacts=[
                        job_pb2.Artifact(
                            name="zero.zip", uri="s3://out/0.zip", media_type="application/zip", size_bytes=7
                        )
                    ],
                    external_task_id="ext-0",
                ),
                W.ChunkCompletion(chunk_id=claims[1].chunk.id, lease_token=claims[2].lease_token),
                W.ChunkCompletion(chunk_id=unknown_id, lease_token=claims[3].lease_token),
                _completion(claims[3]),
            ]
        ),
        timeout=20,
    )

    results = list(response.results)
    assert [r.chunk_id for r in results] == [
        claims[0].chunk.id,
        claims[1].chunk.id,
        unknown_id,
        claims[3].chunk.id,
    ]
    assert [(r.ok, r.reason) for r in results] == [
        (True, ""),
        (False, "LEASE_LOST"),
        (False, "CHUNK_NOT_FOUND"),
        (True, ""),
    ]
    assert results[0].job_state == results[3].job_state == job_pb2.JOB_STATE_PROCESSING
    assert results[1].message and results[2].message
    assert len(response.claims) == 0, "no claim_next, no claims"

    after = s.get(job.id)
    assert [c.state for c in after.chunks] == [
        job_pb2.CHUNK_STATE_COMPLETED,
        job_pb2.CHUNK_STATE_PROCESSING,
        job_pb2.CHUNK_STATE_PROCESSING,
        job_pb2.CHUNK_STATE_COMPLETED,
    ]
    assert after.state == job_pb2.JOB_STATE_PROCESSING
    assert _summary(after) == {
        "total": 4,
        "pending": 0,
        "processing": 2,
        "completed": 2,
        "failed": 0,
        "cancelled": 0,
    }
    _assert_consistent(after)
    assert after.revision > before.revision
    stale = after.chunks[1]
    assert (stale.attempt, stale.worker_id, stale.items_done) == (1, "w1", 0)
    assert after.chunks[2] == before.chunks[2], "the chunk whose token was misused changed"
    zero = after.chunks[0]
    assert zero.external_task_id == "ext-0"
    assert [(a.name, a.uri, a.media_type, a.size_bytes, a.chunk_index) for a in zero.artifacts] == [
        ("zero.zip", "s3://out/0.zip", "application/zip", 7, 0)
    ]
    assert len(after.chunks[3].artifacts) == 0
    assert [(a.name, a.chunk_index) for a in after.artifacts] == [("zero.zip", 0)]
    assert after.progress.items_done == 2

    # The rejected items are still completable by their rightful holders.
    finish = s.workers.CompleteChunks(
        W.CompleteChunksRequest(completions=[_completion(claims[1]), _completion(claims[2])]), timeout=20
    )
    assert [(r.ok, r.reason) for r in finish.results] == [(True, ""), (True, "")]
    assert finish.results[-1].job_state == job_pb2.JOB_STATE_COMPLETED
    final = s.get(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    _assert_consistent(final)


# --- 3. a token superseded by a newer claim ------------------------------------------------------------


def test_token_superseded_by_a_new_claim_is_lease_lost_in_complete_chunks(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """Once the sweeper has rescued an expired chunk and another worker claimed it, the first worker's
    token is LEASE_LOST in CompleteChunks and the chunk stays with the new claim, which completes it."""
    s = stubs(make_server(sweep_interval=0.1, retry_backoff=0.01))
    job = s.create(1)
    old = s.claim_one(lease=SHORT_LEASE, worker="w1")

    def rescued() -> job_pb2.Chunk:
        chunk = s.get(job.id).chunks[0]
        assert chunk.state == job_pb2.CHUNK_STATE_PENDING, "the sweeper has not put the chunk back yet"
        return chunk

    pending = eventually(rescued, timeout=15, interval=0.05)
    assert pending.error.reason == "LEASE_EXPIRED"
    new = eventually(lambda: s.claim(1, lease=60, worker="w2"), timeout=15, interval=0.05)[0]
    assert new.chunk.id == old.chunk.id
    assert new.lease_token != old.lease_token
    assert new.chunk.attempt == 2
    before = s.get(job.id)

    response = s.workers.CompleteChunks(W.CompleteChunksRequest(completions=[_completion(old)]), timeout=20)

    assert [(r.chunk_id, r.ok, r.reason) for r in response.results] == [(old.chunk.id, False, "LEASE_LOST")]
    after = s.get(job.id)
    assert after.revision == before.revision
    chunk = after.chunks[0]
    assert chunk.state == job_pb2.CHUNK_STATE_PROCESSING
    assert (chunk.attempt, chunk.worker_id) == (2, "w2")
    _assert_consistent(after)

    done = s.workers.CompleteChunk(
        W.CompleteChunkRequest(chunk_id=new.chunk.id, lease_token=new.lease_token), timeout=20
    )
    assert done.job_state == job_pb2.JOB_STATE_COMPLETED
    final = s.get(job.id)
    assert final.chunks[0].state == job_pb2.CHUNK_STATE_COMPLETED
    _assert_consistent(final)


# --- 4. CompleteChunks rejects bad input as a whole -----------------------------------------------------


def _too_many(claims: list[W.ChunkClaim]) -> W.CompleteChunksRequest:
    return W.CompleteChunksRequest(completions=[_completion(c) for c in claims])


def _duplicate(claims: list[W.ChunkClaim]) -> W.CompleteChunksRequest:
    return W.CompleteChunksRequest(
        completions=[_completion(claims[0]), _completion(claims[1]), _completion(claims[0])]
    )


def _empty_chunk_id(claims: list[W.ChunkClaim]) -> W.CompleteChunksRequest:
    return W.CompleteChunksRequest(
        completions=[
            _completion(claims[0]),
            W.ChunkCompletion(chunk_id="", lease_token=claims[1].lease_token),
        ]
    )


def _empty_lease_token(claims: list[W.ChunkClaim]) -> W.CompleteChunksRequest:
    return W.CompleteChunksRequest(
        completions=[_completion(claims[0]), W.ChunkCompletion(chunk_id=claims[1].chunk.id, lease_token="")]
    )


def _nothing(claims: list[W.ChunkClaim]) -> W.CompleteChunksRequest:
    return W.CompleteChunksRequest()


@pytest.mark.parametrize(
    "build",
    [_too_many, _duplicate, _empty_chunk_id, _empty_lease_token, _nothing],
    ids=["101-completions", "same-chunk-twice", "empty-chunk-id", "empty-lease-token", "empty-request"],
)
def test_complete_chunks_bad_input_is_invalid_argument_and_commits_nothing(
    make_server: Callable[..., Any],
    stubs: Callable[[Any], Stubs],
    build: Callable[[list[W.ChunkClaim]], W.CompleteChunksRequest],
) -> None:
    """A malformed CompleteChunks (over 100 items, a chunk twice, an empty chunk_id or lease_token, or
    nothing at all to do) is INVALID_ARGUMENT naming the completions field, not INTERNAL, and none of
    its items commits, even the valid ones."""
    s = stubs(make_server())
    job = s.create(101)
    claims = s.claim(100) + s.claim(1)
    assert len({c.chunk.id for c in claims}) == 101
    before = s.get(job.id)
    request = build(claims)

    fields = _fails(
        lambda: s.workers.CompleteChunks(request, timeout=20),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert any(f.startswith("completions") for f in fields), f"no violation names completions: {fields}"
    after = s.get(job.id)
    assert after.revision == before.revision
    assert _summary(after)["processing"] == 101
    _assert_consistent(after)


# --- 5. complete-and-claim -----------------------------------------------------------------------------


def _claim_next(n: int, wait: float | None = None) -> W.ClaimChunksRequest:
    request = W.ClaimChunksRequest(worker_id="w", kinds=[KIND], max_chunks=n)
    if wait is not None:
        request.wait.CopyFrom(_duration(wait))
    return request


def test_complete_chunk_with_claim_next_hands_out_every_chunk_once(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """A worker that completes with claim_next gets its next chunk in the same call, until there is no
    work left; the job then completes and each chunk was handed out exactly once."""
    s = stubs(make_server())
    job = s.create(3)
    claim = s.claim_one()
    handed_out = [claim.chunk.id]

    for _ in range(10):
        response = s.workers.CompleteChunk(
            W.CompleteChunkRequest(
                chunk_id=claim.chunk.id, lease_token=claim.lease_token, claim_next=_claim_next(1)
            ),
            timeout=20,
        )
        if not response.claims:
            assert response.job_state == job_pb2.JOB_STATE_COMPLETED
            break
        assert response.job_state == job_pb2.JOB_STATE_PROCESSING
        assert len(response.claims) == 1
        claim = response.claims[0]
        assert claim.job_id == job.id
        assert claim.job_kind == KIND
        assert claim.lease_token
        assert claim.lease_expire_time.ToNanoseconds() > time.time_ns()
        assert claim.chunk.state == job_pb2.CHUNK_STATE_PROCESSING
        assert claim.chunk.attempt == 1
        assert claim.chunk.worker_id == "w"
        handed_out.append(claim.chunk.id)
        # The completion and the next claim are of the same job: both must count in its summary.
        mid = s.get(job.id)
        assert mid.chunks_summary.processing == 1
        assert mid.chunks_summary.completed == len(handed_out) - 1
        _assert_consistent(mid)
    else:
        pytest.fail("claim_next kept handing out chunks")

    final = s.get(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert sorted(handed_out) == sorted(c.id for c in final.chunks), "a chunk handed out twice or never"
    assert [c.attempt for c in final.chunks] == [1, 1, 1]
    assert [c.state for c in final.chunks] == [job_pb2.CHUNK_STATE_COMPLETED] * 3
    _assert_consistent(final)
    assert s.claim(1) == []


def test_complete_chunk_with_a_stale_token_claims_nothing(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """A completion that is LEASE_LOST claims nothing, even with claim_next set (and a wait: the error
    comes back at once): the job's pending chunks stay pending and the job is unchanged."""
    s = stubs(make_server())
    job = s.create(3)
    claim = s.claim_one()
    before = s.get(job.id)
    assert before.chunks_summary.pending == 2

    started = time.monotonic()
    _lease_lost(
        lambda: s.workers.CompleteChunk(
            W.CompleteChunkRequest(
                chunk_id=claim.chunk.id, lease_token="not-the-token", claim_next=_claim_next(2, wait=20)
            ),
            timeout=30,
        )
    )
    assert time.monotonic() - started < 10, "a failed completion waited for work it may not claim"

    after = s.get(job.id)
    assert after.chunks_summary.pending == 2
    assert after.revision == before.revision
    assert _without_eta(after) == _without_eta(before)
    assert len(s.claim(3)) == 2, "the pending chunks were not claimable afterwards"


def test_complete_with_claim_next_commits_before_it_waits_for_work(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """With claim_next and a wait, the completion is committed and visible at once, while the call is
    still waiting for work (it does not hold the completion back, nor lock others out, meanwhile); work
    that appears during the wait is handed out by that same call."""
    s = stubs(make_server())
    job = s.create(1)
    claim = s.claim_one()
    pending = s.workers.CompleteChunk.future(
        W.CompleteChunkRequest(
            chunk_id=claim.chunk.id, lease_token=claim.lease_token, claim_next=_claim_next(1, wait=30)
        ),
        timeout=45,
    )

    def completed() -> job_pb2.Job:
        seen = s.get(job.id)
        assert seen.state == job_pb2.JOB_STATE_COMPLETED, "the completion is not visible yet"
        return seen

    done = eventually(completed, timeout=15, interval=0.05)
    assert done.chunks[0].state == job_pb2.CHUNK_STATE_COMPLETED
    _assert_consistent(done)
    assert not pending.done(), f"claim_next did not wait for work: {pending}"
    later = s.create(2)  # a write: the waiting call must not be holding the database
    response = pending.result(timeout=30)

    assert response.job_state == job_pb2.JOB_STATE_COMPLETED
    assert [(c.job_id, c.chunk.index) for c in response.claims] == [(later.id, 0)]
    assert response.claims[0].lease_token
    assert s.get(later.id).chunks_summary.processing == 1


def test_complete_chunks_with_claim_next_returns_up_to_max_chunks(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """CompleteChunks with claim_next (max_chunks=2) commits the completions and hands out at most two
    new chunks per call, never one already handed out, until the job is done."""
    s = stubs(make_server())
    job = s.create(4)
    first = s.claim_one()
    handed_out = [first.chunk.id]

    response = s.workers.CompleteChunks(
        W.CompleteChunksRequest(completions=[_completion(first)], claim_next=_claim_next(2)), timeout=20
    )
    assert [(r.ok, r.job_state) for r in response.results] == [(True, job_pb2.JOB_STATE_PROCESSING)]
    assert len(response.claims) == 2
    handed_out += [c.chunk.id for c in response.claims]
    assert len(set(handed_out)) == 3
    assert all(c.job_id == job.id and c.lease_token for c in response.claims)
    middle = s.get(job.id)
    assert (middle.chunks_summary.completed, middle.chunks_summary.processing) == (1, 2)
    _assert_consistent(middle)

    response = s.workers.CompleteChunks(
        W.CompleteChunksRequest(
            completions=[_completion(c) for c in response.claims], claim_next=_claim_next(2)
        ),
        timeout=20,
    )
    assert [r.ok for r in response.results] == [True, True]
    assert len(response.claims) == 1, "only one chunk was left to claim"
    handed_out += [c.chunk.id for c in response.claims]

    response = s.workers.CompleteChunks(
        W.CompleteChunksRequest(completions=[_completion(response.claims[0])], claim_next=_claim_next(2)),
        timeout=20,
    )
    assert [(r.ok, r.job_state) for r in response.results] == [(True, job_pb2.JOB_STATE_COMPLETED)]
    assert len(response.claims) == 0

    final = s.get(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert sorted(handed_out) == sorted(c.id for c in final.chunks)
    _assert_consistent(final)


def test_complete_chunks_with_only_claim_next_just_claims(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs]
) -> None:
    """CompleteChunks with no completions but claim_next set is a plain claim (the request is not
    empty: it has something to do)."""
    s = stubs(make_server())
    job = s.create(3)

    response = s.workers.CompleteChunks(W.CompleteChunksRequest(claim_next=_claim_next(2)), timeout=20)

    assert len(response.results) == 0
    assert [c.chunk.index for c in response.claims] == [0, 1]
    after = s.get(job.id)
    assert (after.chunks_summary.pending, after.chunks_summary.processing) == (1, 2)
    _assert_consistent(after)


# --- 6. a job cancelled while its chunk ran -----------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True], ids=["CompleteChunk", "CompleteChunks"])
def test_completing_a_chunk_of_a_cancelled_job_cancels_it(
    make_server: Callable[..., Any], stubs: Callable[[Any], Stubs], batch: bool
) -> None:
    """Completing a chunk whose job was cancelled while it ran succeeds, but the chunk ends CANCELLED,
    not COMPLETED, and the job ends CANCELLED."""
    s = stubs(make_server(sweep_interval=3600))
    job = s.create(2)
    claim = s.claim_one()
    cancelling = s.jobs.CancelJob(J.CancelJobRequest(job_id=job.id, reason="user"), timeout=20).job
    assert cancelling.state == job_pb2.JOB_STATE_CANCELLING

    if batch:
        response = s.workers.CompleteChunks(
            W.CompleteChunksRequest(completions=[_completion(claim)]), timeout=20
        )
        assert [(r.chunk_id, r.ok, r.reason) for r in response.results] == [(claim.chunk.id, True, "")]
        state = response.results[0].job_state
    else:
        state = s.workers.CompleteChunk(
            W.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token), timeout=20
        ).job_state

    assert state == job_pb2.JOB_STATE_CANCELLED
    final = s.get(job.id)
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert [c.state for c in final.chunks] == [job_pb2.CHUNK_STATE_CANCELLED] * 2
    assert final.chunks_summary.completed == 0
    assert final.cancel_reason == "user"
    assert final.HasField("end_time")
    _assert_consistent(final)
