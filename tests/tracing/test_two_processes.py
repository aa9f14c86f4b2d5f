"""A job's trace across processes, as a collector sees it: a server process and an SDK worker process, each
configured the standard way (the server by OTEL_* variables, the worker by its application's own
OpenTelemetry set-up), export over OTLP to one receiver running in the test. The worker's handler spans
are children of its claiming calls and link to the job's creation; the server's spans of those calls are
children of the worker's (the context crossed the wire); the server's chunk spans link to the creation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
from support.otlp_receiver import OtlpReceiver, ReceivedSpan
from support.polling import eventually
from support.servers import ServerProcess

from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
CHUNKS = 3

# The worker process: an application that set up OpenTelemetry (an SDK provider with the OTLP exporter)
# and runs the SDK's Worker, which itself depends on the OpenTelemetry API alone.
WORKER = textwrap.dedent(
    """
    import sys
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import jobpulse

    address, endpoint, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    provider = TracerProvider(resource=Resource.create({"service.name": "example-worker"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)

    def handle(task):
        task.progress(task.chunk.item_count)

    done = jobpulse.Worker(address, kinds=["two-processes"], poll_wait=0.5).run(handle, max_chunks=chunks)
    provider.shutdown()  # exports what is still batched
    print(done, flush=True)
    """
)


def test_a_job_traced_across_a_server_and_a_worker_process(database_url: str, tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        server = ServerProcess(database_url, tmp_path, log_level="INFO")
        server.env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
                "OTEL_SERVICE_NAME": "jobpulse-under-test",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            }
        )
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
            server.env.pop(name, None)
        try:
            server.start()
            with grpc.insecure_channel(server.address) as channel:
                job = (
                    job_service_pb2_grpc.JobServiceStub(channel)
                    .CreateJob(
                        job_service_pb2.CreateJobRequest(
                            kind="two-processes", total_items=CHUNKS, chunk_size=1
                        ),
                        metadata=(("traceparent", f"00-{TRACE}-{CALLER}-01"),),
                        timeout=10,
                    )
                    .job
                )
            worker = subprocess.run(
                [sys.executable, "-c", WORKER, server.address, receiver.grpc_endpoint, str(CHUNKS)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert worker.returncode == 0, worker.stderr
            assert worker.stdout.split() == [str(CHUNKS)]

            def exported() -> list[ReceivedSpan]:
                spans = receiver.spans()
                by_name = [s.name for s in spans]
                assert by_name.count("jobpulse.chunk.process") == CHUNKS, by_name
                assert by_name.count("jobpulse.chunk.complete") == CHUNKS, by_name
                return spans

            spans = eventually(exported, timeout=30, what="both processes' spans at the receiver")
        finally:
            server.close()

    by_id = {s.span_id: s for s in spans}
    create = next(s for s in spans if s.name == "jobpulse.v1.JobService/CreateJob")
    assert create.service == "jobpulse-under-test"
    assert (create.trace_id, create.parent_span_id) == (TRACE, CALLER)
    creation = (TRACE, create.span_id)

    # The worker process: a handler span per chunk, child of the worker's claiming call, linked to the
    # job's creation in the creator's trace.
    processed = [s for s in spans if s.name == "jobpulse.chunk.process"]
    assert {s.service for s in processed} == {"example-worker"}
    assert sorted(s.attributes["jobpulse.chunk_index"] for s in processed) == list(range(CHUNKS))
    for span in processed:
        assert span.attributes["jobpulse.job_id"] == job.id
        assert span.links == [creation]
        claiming = by_id[span.parent_span_id]
        assert claiming.service == "example-worker" and claiming.kind == "CLIENT"
        assert claiming.trace_id == span.trace_id != TRACE

    # The server: each worker call's SERVER span is a child of the worker's CLIENT span (the context went
    # over the wire), and the chunk's completion inside it links to the creation too.
    completes = [s for s in spans if s.name == "jobpulse.chunk.complete"]
    assert {s.service for s in completes} == {"jobpulse-under-test"}
    for span in completes:
        assert span.links == [creation]
        call = by_id[span.parent_span_id]
        assert call.kind == "SERVER" and call.service == "jobpulse-under-test"
        assert by_id[call.parent_span_id].service == "example-worker"
    claims = [s for s in spans if s.name == "jobpulse.chunk.claim"]
    assert len(claims) == CHUNKS and all(s.links == [creation] for s in claims)
