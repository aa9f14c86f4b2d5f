"""The JSON face over real HTTP against real servers: every RPC has a rule and answers on the HTTP port,
the seeds' calls (create, list by state, get with chunks, cancel, delete, stats) and a worker's, with the
proto3 JSON mapping; the same authentication, roles, validation and error reasons as gRPC, as JSON errors
with Google's details; metrics that name the RPC; NDJSON for the export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jobpulse import export_csv
from jobpulse_server.wire import http_rules


def _url(srv: Any) -> str:
    return str(srv.app.http_url)


def _error(response: httpx.Response) -> dict[str, Any]:
    found: dict[str, Any] = response.json()["error"]
    assert found["code"] == response.status_code
    return found


def _detail(error: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(d for d in error["details"] if d["@type"] == f"type.googleapis.com/google.rpc.{kind}")


def _served_methods(address: str) -> set[str]:
    """Every method of every service the server lists by reflection, but reflection's and health's."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed = next(
            iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        )
        names = [s.name for s in listed.list_services_response.service]
    found = set()
    for service in http_rules.SERVICES:
        assert service.full_name in names
        found |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    others = {n for n in names if "reflection" not in n and "health" not in n}
    assert others == {s.full_name for s in http_rules.SERVICES}, (
        "a served service the JSON face does not know"
    )
    return found


def test_every_rpc_has_a_rule_and_answers_over_http(server: Any) -> None:
    methods = _served_methods(server.address)
    rules = http_rules.served_rules()
    assert methods == {r.full_method for r in rules}
    # And each is in the OpenAPI document the server serves.
    document = httpx.get(_url(server) + "/v1/openapi.json").json()
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert {"{}_{}".format(*m.lstrip("/").rsplit(".", 1)[1].split("/")) for m in methods} <= operations
    for rule in rules:
        path = rule.path_of({v.field: v.pattern.replace("**", "x").replace("*", "x")
                             for v in rule.variables})  # fmt: skip
        if rule.full_method.endswith(("/WatchJob", "/WatchJobs")):
            continue  # Server-Sent Events (tests/http/test_http_side.py)
        response = httpx.request(rule.verb, _url(server) + path, json={} if rule.body else None, timeout=10)
        # Whatever the call says of these made-up values, it is the RPC's answer, not the router's.
        assert response.headers["content-type"].startswith(("application/json", "application/x-ndjson"))
        if response.status_code in (404, 405):
            assert "no such path" not in response.text and "not allowed" not in response.text, path


def test_a_frontend_s_calls(server: Any) -> None:
    base = _url(server) + "/v1"
    made = httpx.post(
        base + "/jobs", json={"kind": "thumbs", "totalItems": 6, "chunkSize": 2, "labels": {"user": "u1"}}
    )
    assert made.status_code == 200, made.text
    job = made.json()["job"]
    assert job["state"] == "JOB_STATE_PENDING" and job["chunksSummary"]["pending"] == "3"  # int64: a string
    other = httpx.post(base + "/jobs", json={"kind": "thumbs", "total_items": 1}).json()[
        "job"
    ]  # snake_case too
    got = httpx.get(f"{base}/jobs/{job['id']}", params={"view": "JOB_VIEW_FULL"}).json()["job"]
    assert [c.get("index", "0") for c in got["chunks"]] == ["0", "1", "2"]  # 0, the default, is left out
    assert (
        "chunks" not in httpx.get(f"{base}/jobs/{job['id']}", params={"view": "JOB_VIEW_BASIC"}).json()["job"]
    )
    # List by state and label, a page at a time.
    page = httpx.get(base + "/jobs", params={"states": "JOB_STATE_PENDING", "pageSize": 1}).json()
    assert len(page["jobs"]) == 1 and page["nextPageToken"]
    rest = httpx.get(
        base + "/jobs", params={"states": "JOB_STATE_PENDING", "pageToken": page["nextPageToken"]}
    )
    assert {j["id"] for j in page["jobs"] + rest.json()["jobs"]} == {job["id"], other["id"]}
    assert [j["id"] for j in httpx.get(base + "/jobs", params={"labels.user": "u1"}).json()["jobs"]] == [
        job["id"]
    ]
    # Cancel, stats, delete.
    cancelled = httpx.post(f"{base}/jobs/{job['id']}:cancel", json={"reason": "the user closed the tab"})
    assert cancelled.json()["job"]["state"] == "JOB_STATE_CANCELLED"
    stats = httpx.get(base + "/jobs:stats").json()
    assert stats["stats"]["totalJobs"] == "2"
    assert httpx.delete(f"{base}/jobs/{job['id']}").status_code == 200
    gone = httpx.get(f"{base}/jobs/{job['id']}")
    assert gone.status_code == 404 and _error(gone)["reason"] == "JOB_NOT_FOUND"
    assert _detail(_error(gone), "ErrorInfo")["metadata"]["job_id"] == job["id"]


def test_a_worker_s_calls(server: Any) -> None:
    base = _url(server) + "/v1"
    job = httpx.post(base + "/jobs", json={"kind": "json-work", "totalItems": 2, "chunkSize": 1}).json()[
        "job"
    ]
    claimed = httpx.post(
        base + "/chunks:claim", json={"workerId": "w1", "kinds": ["json-work"], "maxChunks": 2}
    )
    claims = claimed.json()["claims"]
    assert len(claims) == 2
    first, second = claims
    lease = {"leaseToken": first["leaseToken"]}
    progress = httpx.post(
        f"{base}/chunks/{first['chunk']['id']}:reportProgress", json={**lease, "itemsDone": 1}
    )
    assert progress.status_code == 200, progress.text
    done = httpx.post(f"{base}/chunks/{first['chunk']['id']}:complete", json=lease)
    assert done.status_code == 200, done.text
    failed = httpx.post(
        f"{base}/chunks/{second['chunk']['id']}:fail",
        json={
            "leaseToken": second["leaseToken"],
            "error": {"reason": "BAD", "message": "no"},
            "retryable": False,
        },
    )
    assert failed.status_code == 200, failed.text
    # A stale lease is ABORTED: 409, LEASE_LOST.
    stale = httpx.post(f"{base}/chunks/{first['chunk']['id']}:complete", json=lease)
    assert stale.status_code == 409 and _error(stale)["reason"] == "LEASE_LOST"
    chunks = httpx.get(f"{base}/jobs/{job['id']}/chunks").json()["chunks"]
    assert [c["state"] for c in chunks] == ["CHUNK_STATE_COMPLETED", "CHUNK_STATE_FAILED"]
    summary = httpx.get(base + "/jobs/-/chunks:summarizeFailures", params={"kind": "json-work"}).json()
    assert [(g["reason"], g["chunks"]) for g in summary["groups"]] == [("BAD", "1")]  # int64: a string
    attempts = httpx.get(
        f"{base}/jobs/{job['id']}/attempts", params={"chunkId": second["chunk"]["id"]}
    ).json()
    assert [a["outcome"] for a in attempts["attempts"]] == ["ATTEMPT_OUTCOME_FAILED"]


def test_bad_requests_are_400_naming_what_is_wrong(server: Any) -> None:
    base = _url(server) + "/v1"
    bad_size = httpx.get(base + "/jobs", params={"pageSize": -1})
    assert bad_size.status_code == 400
    error = _error(bad_size)
    assert error["status"] == "INVALID_ARGUMENT" and error["reason"] == "INVALID_ARGUMENT"
    assert _detail(error, "BadRequest")["fieldViolations"][0]["field"] == "page_size"
    unknown = _error(httpx.get(base + "/jobs", params={"colour": "red"}))
    assert unknown["code"] == 400 and "colour" in json.dumps(unknown["details"])
    not_json = httpx.post(base + "/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in _error(not_json)["message"]
    wrong_type = httpx.post(base + "/jobs", json={"kind": "k", "totalItems": "many"})
    assert wrong_type.status_code == 400 and "totalItems" in _error(wrong_type)["message"]
    unknown_field = httpx.post(base + "/jobs", json={"kind": "k", "totalItems": 1, "colour": "red"})
    assert unknown_field.status_code == 400 and "colour" in _error(unknown_field)["message"]
    in_query = httpx.post(base + "/jobs", params={"kind": "k"}, json={"totalItems": 1})
    assert in_query.status_code == 400 and "body" in json.dumps(_error(in_query))
    wrong_verb = httpx.put(base + "/jobs")
    assert wrong_verb.status_code == 405 and set(wrong_verb.headers["allow"].split(", ")) == {"GET", "POST"}
    assert httpx.get(base + "/nothing-here").status_code == 404


@pytest.fixture
def keyed(make_keyed: Callable[..., tuple[Any, dict[str, str]]]) -> tuple[Any, dict[str, str]]:
    return make_keyed(rate_limit_client=2.0)


def test_keys_roles_and_owners_as_over_grpc(keyed: tuple[Any, dict[str, str]]) -> None:
    srv, made = keyed
    base = _url(srv) + "/v1"

    def as_(name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {made[name]}"}

    nobody = httpx.get(base + "/jobs")
    assert nobody.status_code == 401 and _error(nobody)["reason"] == "UNAUTHENTICATED"
    assert nobody.headers["www-authenticate"].startswith("Bearer")
    job = httpx.post(base + "/jobs", json={"kind": "k", "totalItems": 1}, headers=as_("alice")).json()["job"]
    assert httpx.get(f"{base}/jobs/{job['id']}", headers=as_("alice")).status_code == 200
    hidden = httpx.get(f"{base}/jobs/{job['id']}", headers=as_("bob"))
    assert hidden.status_code == 404 and _error(hidden)["reason"] == "JOB_NOT_FOUND"
    worker = httpx.post(base + "/jobs", json={"kind": "k", "totalItems": 1}, headers=as_("w"))
    assert worker.status_code == 403 and _error(worker)["reason"] == "PERMISSION_DENIED"
    health = httpx.get(base + "/health", headers=as_("alice"))
    assert health.status_code == 403
    assert httpx.get(base + "/health", headers=as_("root")).json()["databaseKind"]
    paused = httpx.patch(
        base + "/kinds/k", params={"updateMask": "paused"}, json={"paused": True}, headers=as_("root")
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["kind"]["paused"] is True and paused.json()["kind"]["name"] == "kinds/k"
    # Rate limits: the key's calls over HTTP and gRPC count against one budget.
    limited = None
    for _ in range(20):
        response = httpx.get(base + "/jobs", headers=as_("bob"))
        if response.status_code == 429:
            limited = response
            break
    assert limited is not None, "2 calls/s (bursts of 4) were never exceeded"
    assert _error(limited)["reason"] == "RATE_LIMITED" and int(limited.headers["retry-after"]) >= 1
    assert _detail(_error(limited), "RetryInfo")["retryDelay"]


def test_metrics_name_the_rpc_and_the_export_is_ndjson(server: Any) -> None:
    base = _url(server) + "/v1"
    for i in range(3):
        httpx.post(base + "/jobs", json={"kind": "export-me", "totalItems": 1, "displayName": f"j{i}"})
    exported = httpx.get(base + "/jobs:export", params={"kind": "export-me"})
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert sorted(j["displayName"] for line in lines for j in line["jobs"]) == ["j0", "j1", "j2"]
    # CSV: the columns `jobpulse export --format csv` writes, a job a row.
    as_csv = httpx.get(base + "/jobs:export", params={"kind": "export-me", "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert tuple(rows[0]) == export_csv.COLUMNS
    assert sorted(r[export_csv.COLUMNS.index("display_name")] for r in rows[1:]) == ["j0", "j1", "j2"]
    bad = httpx.get(base + "/jobs:export", params={"format": "xml"})
    assert bad.status_code == 400 and "format" in json.dumps(_error(bad)["details"])
    metrics = httpx.get(_url(server) + "/metrics").text
    assert 'jobpulse_rpcs_total{code="OK",method="CreateJob"} 3.0' in metrics
    assert 'jobpulse_rpcs_total{code="OK",method="ExportJobs"} 2.0' in metrics


def test_update_masks_take_either_spelling(server: Any) -> None:
    base = _url(server) + "/v1"
    job = httpx.post(base + "/jobs", json={"kind": "masks", "totalItems": 1}).json()["job"]
    for mask in ("maxRunningChunks,displayName", "max_running_chunks,display_name"):
        updated = httpx.patch(
            f"{base}/jobs/{job['id']}",
            json={"updateMask": mask, "maxRunningChunks": 3, "displayName": f"renamed by {mask}"},
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["job"]["maxRunningChunks"] == 3
        assert updated.json()["job"]["displayName"] == f"renamed by {mask}"


def test_the_feed_reads_the_json_face_s_names_of_its_filters() -> None:
    """/v1/events (Server-Sent Events, routes.py) reads its filters as the OpenAPI document lists them
    (WatchJobsRequest's fields, a label as labels.<key>) as well as by the names it had before."""
    from jobpulse.v1 import job_service_pb2
    from jobpulse_server.domain.errors import InvalidArgument
    from jobpulse_server.http.query import filter_request

    as_documented = filter_request(
        [("states", "JOB_STATE_PROCESSING"), ("labels.team", "ml"), ("minPriority", "3"), ("kind", "k")],
        job_service_pb2.WatchJobsRequest(),
    )
    as_before = filter_request(
        [("state", "JOB_STATE_PROCESSING"), ("label", "team=ml"), ("min_priority", "3"), ("kind", "k")],
        job_service_pb2.WatchJobsRequest(),
    )
    assert as_documented == as_before
    assert list(as_documented.states) == [2] and dict(as_documented.labels) == {"team": "ml"}
    # A digit that is not ASCII (what schemathesis sent): refused by name, not a 500.
    for bad in ("²", "1²", "123456", "-"):
        with pytest.raises(InvalidArgument) as caught:
            filter_request([("max_priority", bad)], job_service_pb2.WatchJobsRequest())
        assert caught.value.violations[0].field == "max_priority"


def test_options_and_trace_name_the_path_s_own_verbs(server: Any) -> None:
    base = _url(server) + "/v1"
    for verb in ("OPTIONS", "TRACE"):
        response = httpx.request(verb, base + "/jobs/some-id")
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
        assert _error(response)["reason"] == "METHOD_NOT_ALLOWED"
