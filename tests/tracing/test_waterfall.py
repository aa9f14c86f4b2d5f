"""A job created, claimed and completed inside one caller's span, drawn as a waterfall PNG by
docs/tools/trace_waterfall.py. With JOBPULSE_WRITE_WATERFALL=1 the picture is written to
docs/trace-waterfall.png (the one the docs show); otherwise to the test's own directory."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from opentelemetry import propagate, trace
from PIL import Image
from support.polling import eventually
from support.spans import traced_server

from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def _waterfall() -> Any:
    spec = importlib.util.spec_from_file_location(
        "trace_waterfall", ROOT / "docs" / "tools" / "trace_waterfall.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_jobs_life_as_a_waterfall(
    make_server: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    if os.environ.get("JOBPULSE_WRITE_WATERFALL") == "1" and not database_url.startswith("sqlite"):
        pytest.skip("the picture is made from the SQLite run")
    traced = traced_server(make_server)
    tracer = traced.server.tracer_provider.get_tracer("example-worker")
    with grpc.insecure_channel(traced.address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=10)  # connected before the picture starts
        with tracer.start_as_current_span("example worker: one job's life") as root:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata = tuple(carrier.items())
            job = jobs.CreateJob(
                job_service_pb2.CreateJobRequest(kind="picture", total_items=1), metadata=metadata, timeout=10
            ).job
            claim = workers.ClaimChunks(
                worker_service_pb2.ClaimChunksRequest(
                    worker_id="w1",
                    kinds=["picture"],
                    max_chunks=1,
                    lease_duration=duration_pb2.Duration(seconds=60),
                ),
                metadata=metadata,
                timeout=10,
            ).claims[0]
            workers.CompleteChunk(
                worker_service_pb2.CompleteChunkRequest(
                    chunk_id=claim.chunk.id, lease_token=claim.lease_token
                ),
                metadata=metadata,
                timeout=10,
            )
            jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job.id), metadata=metadata, timeout=10)
        trace_id = root.get_span_context().trace_id

    def ours() -> list[Any]:
        spans = [s for s in traced.spans() if s.context.trace_id == trace_id]
        assert sum(s.kind == trace.SpanKind.SERVER for s in spans) == 4
        return spans

    spans = eventually(ours, what="the example's spans")
    module = _waterfall()
    if os.environ.get("JOBPULSE_WRITE_WATERFALL") == "1":
        target = ROOT / "docs" / "trace-waterfall.png"
    else:
        target = tmp_path / "waterfall.png"
    module.render(
        module.from_sdk(spans), target, title="A job created, claimed and completed (jobpulse-server)"
    )
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.height >= 26 * len(spans)
