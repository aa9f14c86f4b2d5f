"""A real export: a server process configured only by OTEL_* variables sends its spans over OTLP (gRPC,
and HTTP/protobuf) to a receiver running in the test, as it would to a collector; its JSON log lines
carry the trace ids."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from support.otlp_receiver import OtlpReceiver, ReceivedSpan
from support.polling import eventually
from support.servers import ServerProcess

from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_server_process_exports_its_spans_over_otlp(
    database_url: str, tmp_path: Path, protocol: str
) -> None:
    with OtlpReceiver(http=protocol != "grpc") as receiver:
        server = ServerProcess(database_url, tmp_path, log_level="INFO", log_format="json")
        server.env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint
                if protocol == "grpc"
                else receiver.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_SERVICE_NAME": "jobpulse-under-test",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            }
        )
        server.env.pop("OTEL_TRACES_EXPORTER", None)
        server.env.pop("OTEL_SDK_DISABLED", None)
        try:
            server.start()
            with grpc.insecure_channel(server.address) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                job = jobs.CreateJob(
                    job_service_pb2.CreateJobRequest(kind="otlp", total_items=1),
                    metadata=(("traceparent", TRACEPARENT),),
                    timeout=10,
                ).job
                jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job.id), timeout=10)

            def exported() -> list[ReceivedSpan]:
                spans = receiver.spans()
                names = {s.name for s in spans}
                assert {"jobpulse.v1.JobService/CreateJob", "jobpulse.v1.JobService/GetJob"} <= names, names
                return spans

            spans = eventually(exported, timeout=20, what="the server's spans at the receiver")
            create = next(s for s in spans if s.name == "jobpulse.v1.JobService/CreateJob")
            assert create.service == "jobpulse-under-test"
            assert create.kind == "SERVER"
            assert create.trace_id == TRACE and create.parent_span_id == "b7ad6b7169203331"
            assert create.attributes["rpc.system"] == "grpc"
            assert create.attributes["rpc.grpc.status_code"] == 0
            get = next(s for s in spans if s.name == "jobpulse.v1.JobService/GetJob")
            assert get.attributes["jobpulse.job_id"] == job.id
            assert get.trace_id != TRACE, "a call without a traceparent starts a trace of its own"
            write = [
                s for s in spans if s.name == "jobpulse.store write" and s.parent_span_id == create.span_id
            ]
            assert len(write) == 1 and write[0].trace_id == TRACE

            # The log: the start-up line says where spans go; the access line of the call has its ids.
            def logged() -> list[dict[str, object]]:
                lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x.startswith("{")]
                assert any(line.get("method") == "CreateJob" for line in lines)
                return lines

            lines = eventually(logged, what="the access log line of CreateJob")
            assert any(
                "tracing on" in str(line["message"]) and "OTLP" in str(line["message"]) for line in lines
            )
            access = next(line for line in lines if line.get("method") == "CreateJob")
            assert access["trace_id"] == TRACE and access["span_id"] == create.span_id
        finally:
            server.close()
