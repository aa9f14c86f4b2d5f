"""Every write is under the one retry policy: a CreateJob, CancelJob, RetryJob, UpdateJob, DeleteJob and the
cancel-deadline sweep whose transaction PostgreSQL aborts with a deadlock (SQLSTATE 40P01) is run again and
succeeds; the caller sees no error, and the retry is counted in jobpulse_db_retries_total{sqlstate="40P01"}.

(These paths used to run outside it: a deadlock reached the caller as UNAVAILABLE while completions were
retried.) The abort is PostgreSQL's own error, raised inside the server's transaction by a trigger on
``jobs`` that fires on the first write after the test arms it: a sequence counts the writes, and a
sequence's nextval is not rolled back with the aborted transaction, so the retry goes through. A real
deadlock between two sessions is made in test_pg_deadlock_retry.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from support.faults import Stubs
from support.sql import fetch

from jobpulse.v1 import job_pb2
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

RETRIES = "jobpulse_db_retries_total"
KIND = "cold"

_TRAP = [
    "CREATE SEQUENCE IF NOT EXISTS jp_test_trap",
    """CREATE OR REPLACE FUNCTION jp_test_abort_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF nextval('jp_test_trap') = 1 THEN
        RAISE EXCEPTION 'deadlock made by the test' USING ERRCODE = 'deadlock_detected';
      END IF;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER jp_test_abort_once BEFORE INSERT OR UPDATE OR DELETE ON jobs "
    "FOR EACH STATEMENT EXECUTE FUNCTION jp_test_abort_once()",
]


def _retries(srv: Any) -> float:
    return float(srv.app.metrics.registry.get_sample_value(RETRIES, {"sqlstate": "40P01"}) or 0.0)


class Trap:
    """Makes the next write to ``jobs`` (whoever's) abort with 40P01, once."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        for sql in _TRAP:
            fetch(database_url, sql)
        self.disarm()

    def arm(self) -> None:
        fetch(self.url, "SELECT setval('jp_test_trap', 1, false)")  # the next nextval is 1

    def disarm(self) -> None:
        fetch(self.url, "SELECT setval('jp_test_trap', 1, true)")  # the next nextval is 2

    def sprung(self) -> bool:
        return (
            bool(fetch(self.url, "SELECT is_called FROM jp_test_trap")[0][0])
            and int(fetch(self.url, "SELECT last_value FROM jp_test_trap")[0][0]) >= 2
        )


@pytest.fixture
def rig(make_server: Callable[..., Any], database_url: str) -> tuple[Any, Stubs, Trap]:
    if not database_url.startswith("postgresql"):
        pytest.skip("deadlocks and their retry are a PostgreSQL matter (SQLite has one writer)")
    srv = make_server(sweep_interval=3600, cancel_deadline=0.0)
    return srv, Stubs(srv.address), Trap(database_url)


def _job(stubs: Stubs, chunks: int = 2) -> job_pb2.Job:
    request = J.CreateJobRequest(kind=KIND, total_items=chunks, chunk_size=1)
    return stubs.jobs.CreateJob(request, timeout=10).job


def _state(stubs: Stubs, job_id: str) -> int:
    return int(stubs.jobs.GetJob(J.GetJobRequest(job_id=job_id), timeout=10).job.state)


def _aborted_once_then_done(srv: Any, trap: Trap, call: Callable[[], Any]) -> Any:
    before = _retries(srv)
    trap.arm()
    result = call()
    assert trap.sprung(), "the write never reached jobs: the trap did not fire"
    assert _retries(srv) == before + 1, "the aborted transaction was not run again under the retry policy"
    return result


def test_create_cancel_retry_update_and_delete_are_run_again_after_a_deadlock(rig: Any) -> None:
    srv, stubs, trap = rig
    made = _aborted_once_then_done(srv, trap, lambda: _job(stubs))
    assert _state(stubs, made.id) == job_pb2.JOB_STATE_PENDING

    update = J.UpdateJobRequest(job_id=made.id, priority=9)
    update.update_mask.paths.append("priority")
    updated = _aborted_once_then_done(srv, trap, lambda: stubs.jobs.UpdateJob(update, timeout=10).job)
    assert updated.priority == 9

    cancel = J.CancelJobRequest(job_id=made.id, reason="x")
    cancelled = _aborted_once_then_done(srv, trap, lambda: stubs.jobs.CancelJob(cancel, timeout=10).job)
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED

    retry = J.RetryJobRequest(job_id=made.id)
    retried = _aborted_once_then_done(srv, trap, lambda: stubs.jobs.RetryJob(retry, timeout=10).job)
    assert retried.state == job_pb2.JOB_STATE_PENDING and retried.chunks_summary.pending == 2

    stubs.jobs.CancelJob(J.CancelJobRequest(job_id=made.id), timeout=10)
    delete = J.DeleteJobRequest(job_id=made.id)
    _aborted_once_then_done(srv, trap, lambda: stubs.jobs.DeleteJob(delete, timeout=10))
    with pytest.raises(grpc.RpcError) as gone:
        _state(stubs, made.id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_cancel_deadline_sweep_is_run_again_after_a_deadlock(rig: Any) -> None:
    srv, stubs, trap = rig
    job = _job(stubs, chunks=1)
    claim = W.ClaimChunksRequest(worker_id="w", kinds=[KIND], max_chunks=1)
    assert len(stubs.workers.ClaimChunks(claim, timeout=10).claims) == 1
    stubs.jobs.CancelJob(J.CancelJobRequest(job_id=job.id, reason="stop"), timeout=10)
    assert _state(stubs, job.id) == job_pb2.JOB_STATE_CANCELLING  # its chunk still runs

    # cancel_deadline 0: the running chunk is overdue at once; the sweep cancels it.
    moved = _aborted_once_then_done(srv, trap, lambda: srv.call(srv.app.workers.sweep()))
    assert moved == 1
    assert _state(stubs, job.id) == job_pb2.JOB_STATE_CANCELLED
    stubs.assert_summary_matches_chunks(job.id)
