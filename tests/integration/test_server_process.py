"""The server as a process: health per service, reflection, SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.servers import free_port


def _wait_serving(address: str, deadline: float) -> grpc.Channel:
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    while True:
        try:
            if (
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                return channel
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))


def test_serve_health_reflection_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "JOBPULSE_PORT": str(port),
        "JOBPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
        "JOBPULSE_DRAIN_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobpulse_server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        channel = _wait_serving(f"127.0.0.1:{port}", time.monotonic() + 30)
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jobpulse.v1.JobService", "jobpulse.v1.WorkerService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"jobpulse.v1.JobService", "jobpulse.v1.WorkerService", "grpc.health.v1.Health"} <= names
        # What `grpcurl describe` reads: the file defining a symbol, with its comments.
        answers = list(
            reflect.ServerReflectionInfo(
                iter(
                    [reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobpulse.v1.JobService")]
                ),
                timeout=5,
            )
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answers[0].file_descriptor_response.file_descriptor_proto
        ]
        service_file = next(f for f in files if f.name == "jobpulse/v1/job_service.proto")
        comments = " ".join(loc.leading_comments for loc in service_file.source_code_info.location)
        assert "Creates a job and its chunks" in comments
        channel.close()

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
