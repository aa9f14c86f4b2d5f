"""kill -9 of the server half-way through a bulk cancel: after a restart on the same database the
operation goes on from its cursor, and every matching job is cancelled exactly once (its revision moved by
one, the operation's done count equal to the jobs matched and nothing skipped: a job acted on twice would
be counted skipped the second time)."""

from __future__ import annotations

from pathlib import Path

from support.polling import eventually
from support.servers import ServerProcess

import jobpulse

JOBS = 600
BATCH = 5


def test_a_bulk_cancel_killed_half_way_finishes_after_a_restart(database_url: str, tmp_path: Path) -> None:
    settings = {
        "rate_limit_client": 0,
        "drain_seconds": 0,
        "bulk_batch_size": BATCH,
        "http_port": -1,
    }
    server = ServerProcess(database_url, tmp_path / "server.log", **settings).start()
    try:
        with jobpulse.Client(server.address, timeout=30) as client:
            ids = [client.create_job("doomed", 1).id for _ in range(JOBS)]
            keep = client.create_job("kept", 1)
            op = client.cancel_jobs(kind="doomed", reason="kill test")
            assert op.matched == JOBS
            seen = eventually(
                lambda: (o := client.get_bulk_operation(op.name)).done >= 50 and o,
                30,
                "the operation under way",
            )
        server.kill()
        assert seen.done < JOBS, "the kill did not land in the middle"

        server.start()
        with jobpulse.Client(server.address, timeout=30) as client:
            final = client.wait_bulk_operation(op.name, timeout=120)
            assert (final.finished, final.matched, final.done, final.skipped) == (True, JOBS, JOBS, 0)
            jobs = [
                j for start in range(0, JOBS, 100) for j in client.batch_get_jobs(ids[start : start + 100])
            ]
            assert {j.state for j in jobs} == {jobpulse.JobState.JOB_STATE_CANCELLED}
            assert {j.revision for j in jobs} == {2}  # created at 1, cancelled once
            assert {j.cancel_reason for j in jobs} == {"kill test"}
            assert client.get_job(keep.id, view="basic").state == jobpulse.JobState.JOB_STATE_PENDING
    finally:
        server.terminate()
