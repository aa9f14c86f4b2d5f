"""Pipelines across two server replicas on one PostgreSQL database: a stage-2 claimer waiting on replica B
is woken when a completion on replica A frees its chunk (the NOTIFY says it is new work), and a PER_CHUNK
pipeline worked by workers on both replicas completes with every chunk of stage 2 started after its
stage-1 chunk ended, its finalize chunk last."""

from __future__ import annotations

import threading
import time
from typing import Any

from replicas.test_claim_controls_replicas import replicas
from support.e2e import BackgroundThread, PipelineOrder

import jobpulse
from jobpulse.v1 import job_pb2

__all__ = ["replicas"]  # the fixture, shared


def test_a_chunk_freed_on_one_replica_wakes_a_claimer_waiting_on_the_other(replicas: tuple[Any, Any]) -> None:
    a, b = replicas
    with jobpulse.Client(a.address) as on_a, jobpulse.Client(b.address) as on_b:
        stage1 = on_a.create_job("rp-s1", 2, chunk_size=1)
        stage2 = on_a.create_job("rp-s2", 2, chunk_size=1, after=[stage1.id], after_mode="per_chunk")
        first, _ = on_a.claim_chunks("w1", kinds=["rp-s1"], max_chunks=2)
        got: list[Any] = []
        started = time.monotonic()
        waiting = BackgroundThread(lambda: got.extend(on_b.claim_chunks("w2", kinds=["rp-s2"], wait=30)))
        on_a.complete_chunk(first.chunk.id, first.lease_token)
        waiting.join(30)
    assert [(c.job_id, c.chunk.index) for c in got] == [(stage2.id, first.chunk.index)]
    assert time.monotonic() - started < 20


def _work(address: str, worker_id: str, kinds: list[str], stop: threading.Event, work_s: float) -> None:
    with jobpulse.Client(address, timeout=30) as client:
        while not stop.is_set():
            for claim in client.claim_chunks(worker_id, kinds=kinds, max_chunks=1, wait=0.2):
                stop.wait(work_s)
                client.complete_chunk(claim.chunk.id, claim.lease_token)


def test_a_pipeline_worked_on_both_replicas_keeps_its_order(replicas: tuple[Any, Any]) -> None:
    a, _ = replicas
    kinds = ["rp-p1", "rp-p2", "rp-pf"]
    with jobpulse.Client(a.address) as client:
        stage1 = client.create_job("rp-p1", 60, chunk_size=1)
        stage2 = client.create_job(
            "rp-p2", 60, chunk_size=1, after=[stage1.id], after_mode="per_chunk", finalize_kind="rp-pf"
        )
        order = PipelineOrder(a.address, stage1.id, stage2.id)
        stop = threading.Event()
        threads = [
            # Stage 1 is the slow one: stage 2, were it not held, would run ahead of it.
            threading.Thread(
                target=_work,
                args=(srv.address, f"w{i}-{n}", [kind], stop, 0.01 if kind == "rp-p1" else 0),
                daemon=True,
            )
            for i, srv in enumerate(replicas)
            for n, kind in enumerate(kinds * 2)
        ]
        for t in threads:
            t.start()
        try:
            final = client.wait(stage2.id, timeout=120)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            breaches = order.stop()

    assert final.state == job_pb2.JOB_STATE_COMPLETED and final.chunks_summary.completed == 61
    assert order.looks > 5 and breaches == []
