"""End-to-end: a kind's controls on the claim (UpdateKind), on both databases, through the RPCs: a paused
kind's chunks are not claimed while its running ones finish and other kinds go on; resuming wakes a
claimer that waits; a kind's max_running_chunks holds under concurrent workers, on the group-committed
path and with complete-and-claim."""

from __future__ import annotations

import threading
import time
from typing import Any

from support.e2e import BackgroundThread, assert_summary_matches

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2


def _claimed(client: jobpulse.Client, kinds: list[str], n: int = 10) -> list[tuple[str, int]]:
    return [(c.job_id, c.chunk.index) for c in client.claim_chunks("w1", kinds=kinds, max_chunks=n)]


def test_a_paused_kind_is_passed_over_and_its_running_chunks_finish(client: jobpulse.Client) -> None:
    gpu = client.create_job("kc-gpu", 3, chunk_size=1, priority=9)
    cpu = client.create_job("kc-cpu", 2, chunk_size=1, priority=1)
    [running] = client.claim_chunks("w1", kinds=["kc-gpu"])

    paused = client.update_kind("kc-gpu", paused=True)

    assert paused.paused
    # A worker of any kind gets the other kind's chunks, the higher-priority paused ones stay.
    assert _claimed(client, []) == [(cpu.id, 0), (cpu.id, 1)]
    assert _claimed(client, ["kc-gpu"]) == []
    client.complete_chunk(running.chunk.id, running.lease_token)  # running chunks finish as usual
    assert client.get_job(gpu.id).chunks_summary.completed == 1

    assert not client.update_kind("kc-gpu", paused=False).paused
    assert _claimed(client, ["kc-gpu"]) == [(gpu.id, 1), (gpu.id, 2)]
    assert_summary_matches(client, gpu.id)


def test_resuming_a_kind_wakes_a_claimer_that_waits(client: jobpulse.Client) -> None:
    job = client.create_job("kc-wait", 1)
    client.update_kind("kc-wait", paused=True)
    got: list[Any] = []
    started = time.monotonic()
    waiting = BackgroundThread(lambda: got.extend(client.claim_chunks("w1", kinds=["kc-wait"], wait=60)))
    assert client.claim_chunks("w2", kinds=["kc-wait"]) == []
    client.update_kind("kc-wait", paused=False)
    waiting.join(30)
    assert [c.job_id for c in got] == [job.id] and time.monotonic() - started < 30


def test_a_kinds_cap_holds_under_concurrent_workers(client: jobpulse.Client) -> None:
    """Six workers completing and claiming the chunks of two jobs of a kind capped at 2: never more than
    2 of the kind's chunks run at once (counted by the workers themselves, and sampled from the server),
    every chunk is done, and another kind's chunks are claimed beside them without a cap."""
    client.update_kind("kc-cap", max_running_chunks=2)
    jobs = [client.create_job("kc-cap", 12, chunk_size=1) for _ in range(2)]
    free = client.create_job("kc-free", 6, chunk_size=1)
    kind_of = {**{j.id: "kc-cap" for j in jobs}, free.id: "kc-free"}
    lock = threading.Lock()
    running: dict[str, int] = {"kc-cap": 0, "kc-free": 0}
    most: dict[str, int] = {"kc-cap": 0, "kc-free": 0}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        ask = worker_service_pb2.ClaimChunksRequest(
            worker_id=f"w{n}", kinds=["kc-cap", "kc-free"], max_chunks=1
        )
        try:
            claims = list(client.claim_chunks(f"w{n}", kinds=["kc-cap", "kc-free"], wait=0.2))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not claims:
                    if all(client.get_job(j.id).state == job_pb2.JOB_STATE_COMPLETED for j in [*jobs, free]):
                        return
                    claims = list(client.claim_chunks(f"w{n}", kinds=["kc-cap", "kc-free"], wait=0.2))
                    continue
                (c,) = claims
                kind = kind_of[c.job_id]
                with lock:
                    running[kind] += 1
                    most[kind] = max(most[kind], running[kind])
                time.sleep(0.01)
                with lock:
                    running[kind] -= 1
                claims = list(client.complete_chunk(c.chunk.id, c.lease_token, claim_next=ask).claims)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    seen = 0
    while any(t.is_alive() for t in threads):
        kinds = {k.kind: k for k in client.list_kinds()}
        if "kc-cap" in kinds:
            seen = max(seen, kinds["kc-cap"].running_chunks)
        time.sleep(0.005)
    for t in threads:
        t.join()
    assert not errors, errors
    assert most["kc-cap"] <= 2 and seen <= 2, (most, seen)
    assert most["kc-cap"] == 2  # the cap was reached: the test could have seen a third
    for job in [*jobs, free]:
        assert client.get_job(job.id).chunks_summary.completed == job.total_items
