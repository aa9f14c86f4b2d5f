"""The JSON face's OpenAPI document (http/openapi.py, committed as protos/openapi.json): current, valid
OpenAPI 3.1 (openapi-spec-validator, and Redocly's recommended rules where the Node packages are
installed), one operation per rule and per RPC, every $ref resolved, the proto3 JSON mapping in the
schemas, and query parameters the JSON face really reads."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openapi_spec_validator
import pytest
from google.protobuf.descriptor import Descriptor

from jobpulse.v1 import job_pb2
from jobpulse_server.http import openapi
from jobpulse_server.wire import http_rules

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "protos" / "openapi.json"
REDOCLY = ROOT / "node_modules" / ".bin" / "redocly"
SCHEMAS = "#/components/schemas/"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.document()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for verb, operation in item.items():
            yield verb.upper(), path, operation


def _by_id(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (verb, path, op) for verb, path, op in _operations(doc)}


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _param(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_the_committed_document_is_current(doc: dict[str, Any]) -> None:
    assert COMMITTED.exists(), "protos/openapi.json is missing: run `make openapi`"
    text = COMMITTED.read_text(encoding="utf-8")
    assert json.loads(text) == doc, "protos/openapi.json is stale: run `make openapi` and commit it"
    assert text == openapi.render()


def test_the_same_document_every_call(doc: dict[str, Any]) -> None:
    again = openapi.document()
    assert again == doc
    again["components"]["schemas"].clear()  # a caller's changes reach no later document
    assert openapi.document() == doc


def test_it_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    openapi_spec_validator.validate(doc)


def test_every_rule_and_every_rpc_is_an_operation(doc: dict[str, Any]) -> None:
    operations = _by_id(doc)
    rules = http_rules.served_rules()
    assert len(operations) == len(rules)
    for rule in rules:
        operation_id = f"{rule.service.name}_{rule.method.name}"
        assert operation_id in operations, f"{rule.verb} {rule.template} has no operation"
        verb, path, operation = operations[operation_id]
        assert verb == rule.verb
        assert operation["tags"] == [rule.service.name]
        assert operation["summary"]
        assert rule.full_method in operation["description"]
        # The OpenAPI path, its parameters filled in, is one the rule matches (and a ":verb" stays).
        filled = re.sub(r"\{[^}]+\}", "x", path)
        assert rule.match(filled) is not None, (path, rule.template)
        named = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert named == set(re.findall(r"\{([^}]+)\}", path))
    methods = {f"{s.name}_{m.name}" for s in http_rules.SERVICES for m in s.methods}
    assert methods == set(operations)


def test_every_ref_resolves_and_every_schema_is_used(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    for ref in refs:
        assert _resolve(doc, ref) is not None, ref
    schemas = doc["components"]["schemas"]
    used = {r[len(SCHEMAS) :] for r in refs if r.startswith(SCHEMAS)}
    assert used == set(schemas)


def test_every_message_and_enum_reached_is_a_schema(doc: dict[str, Any]) -> None:
    """Every message and enum a request field or a response reaches, but the well-known types (inlined)."""
    schemas = doc["components"]["schemas"]
    found: set[str] = set()

    def walk(message: Descriptor) -> None:
        if message.full_name in found or message.full_name.startswith("google.protobuf."):
            return
        if not message.GetOptions().map_entry:
            found.add(message.full_name)
        for field in message.fields:
            if field.enum_type is not None:
                found.add(field.enum_type.full_name)
            if field.message_type is not None:
                walk(field.message_type)

    for rule in http_rules.served_rules():
        walk(rule.response)
        for field in rule.request.fields:
            if field.message_type is not None:
                walk(field.message_type)
            if field.enum_type is not None:
                found.add(field.enum_type.full_name)
    assert found <= set(schemas), sorted(found - set(schemas))


def test_path_parameters_say_which_field_they_fill(doc: dict[str, Any]) -> None:
    _, path, get_job = _by_id(doc)["JobService_GetJob"]
    assert path == "/v1/jobs/{job_id}"
    job_id = _param(get_job, "job_id")
    assert job_id["in"] == "path" and job_id["required"] is True
    assert job_id["schema"]["type"] == "string"
    assert "`job_id`" in job_id["description"]
    assert "The job's id." in job_id["description"]  # the field's comment
    # Three verbs on one path, one path item.
    assert set(doc["paths"]["/v1/jobs/{job_id}"]) == {"get", "patch", "delete"}
    _, path, update_kind = _by_id(doc)["JobService_UpdateKind"]
    assert path == "/v1/kinds/{kind}"
    assert '`kind.name` to "kinds/<kind>"' in _param(update_kind, "kind")["description"]
    _, path, _ = _by_id(doc)["JobService_CancelJob"]
    assert path == "/v1/jobs/{job_id}:cancel"
    _, path, get_operation = _by_id(doc)["Operations_GetOperation"]
    assert path == "/v1/operations/{operation}"
    assert "may hold `/`" in _param(get_operation, "operation")["description"]
    _, path, list_operations = _by_id(doc)["Operations_ListOperations"]
    assert path == "/v1/operations"
    assert 'sets `name` to "operations"' in list_operations["description"]


def test_query_parameters_follow_the_mapping(doc: dict[str, Any]) -> None:
    _, _, list_jobs = _by_id(doc)["JobService_ListJobs"]
    states = _param(list_jobs, "states")
    assert states["in"] == "query" and states["explode"] is True
    assert states["schema"]["type"] == "array"
    enum = _resolve(doc, states["schema"]["items"]["$ref"])
    assert enum["type"] == "string"
    assert enum["enum"] == list(job_pb2.JobState.keys())
    assert "- `JOB_STATE_PENDING`: No chunk has started yet." in enum["description"]
    assert _param(list_jobs, "created_after")["schema"] == {"type": "string", "format": "date-time"}
    assert _param(list_jobs, "min_priority")["schema"] == {"type": "integer", "format": "int32"}
    assert "`minPriority`" in _param(list_jobs, "min_priority")["description"]
    assert "`labels.<key>=<value>`" in list_jobs["description"]
    assert "labels" not in {p["name"] for p in list_jobs["parameters"]}
    _, _, delete_job = _by_id(doc)["JobService_DeleteJob"]
    assert _param(delete_job, "force")["schema"] == {"type": "boolean"}
    # A body of "*": no query parameters at all.
    _, _, create_job = _by_id(doc)["JobService_CreateJob"]
    assert "parameters" not in create_job
    # A body of one field: the other fields are query parameters.
    _, _, update_kind = _by_id(doc)["JobService_UpdateKind"]
    assert [p["name"] for p in update_kind["parameters"] if p["in"] == "query"] == ["update_mask"]


def test_request_bodies(doc: dict[str, Any]) -> None:
    _, _, create_job = _by_id(doc)["JobService_CreateJob"]
    body = create_job["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": SCHEMAS + "jobpulse.v1.CreateJobRequest"}
    request = _resolve(doc, body["$ref"])["properties"]
    assert request["totalItems"]["type"] == "string"  # json names, int64 as strings
    assert request["ttl"]["type"] == "string" and re.match(request["ttl"]["pattern"], "1.5s")
    assert request["labels"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Caller-defined labels.",
    }
    assert request["after"]["type"] == "array"
    # The path sets job_id: the body has the other fields.
    _, _, cancel = _by_id(doc)["JobService_CancelJob"]
    schema = cancel["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"reason"}
    # A body of one field: that field's schema.
    _, _, update_kind = _by_id(doc)["JobService_UpdateKind"]
    kind = update_kind["requestBody"]["content"]["application/json"]["schema"]
    assert kind["$ref"] == SCHEMAS + "jobpulse.v1.Kind"
    # Body-less rules have none.
    _, _, get_job = _by_id(doc)["JobService_GetJob"]
    assert "requestBody" not in get_job


def test_schemas_are_the_proto3_json_mapping(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    job = schemas["jobpulse.v1.Job"]
    assert job["description"].startswith("Job is a long-running piece of work")
    total = job["properties"]["totalItems"]
    assert (total["type"], total["format"]) == ("string", "int64")
    assert job["properties"]["priority"]["type"] == "integer"
    assert job["properties"]["state"]["$ref"] == SCHEMAS + "jobpulse.v1.JobState"
    assert job["properties"]["createTime"]["format"] == "date-time"
    assert job["properties"]["metadata"]["type"] == "object"  # Struct
    assert job["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "display_name" not in job["properties"] and "displayName" in job["properties"]
    stats = schemas["jobpulse.v1.JobStats"]["properties"]
    assert stats["successRate"]["type"] == "number"
    assert re.match(stats["durationP50"]["pattern"], "12.000000001s")
    assert not re.match(stats["durationP50"]["pattern"], "12")
    # google.longrunning: Any as an object with @type, a oneof said in the description.
    operation = schemas["google.longrunning.Operation"]
    assert operation["properties"]["response"]["required"] == ["@type"]
    assert "At most one of `error`, `response`" in operation["description"]


def test_the_error_shape(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "status", "reason", "message"]
    assert error["properties"]["code"]["type"] == "integer"
    assert {"NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"} <= set(error["properties"]["status"]["enum"])
    details = error["properties"]["details"]["items"]["anyOf"]
    types = [d["allOf"][1]["properties"]["@type"]["const"] for d in details if "allOf" in d]
    assert types == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
        "type.googleapis.com/google.rpc.RetryInfo",
    ]
    responses = doc["components"]["responses"]
    assert "Retry-After" in responses["ClientError"]["headers"]
    assert "Retry-After" in responses["Error"]["headers"]
    for _, _, operation in _operations(doc):
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Error"}
        assert operation["responses"]["4XX"] == {"$ref": "#/components/responses/ClientError"}
    for response in responses.values():
        assert response["content"]["application/json"]["schema"] == {"$ref": SCHEMAS + "Error"}


def test_streams_are_sse_and_ndjson(doc: dict[str, Any]) -> None:
    operations = _by_id(doc)
    for name, message in (("WatchJob", "WatchJobResponse"), ("WatchJobs", "WatchJobsResponse")):
        _, _, operation = operations[f"JobService_{name}"]
        content = operation["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"]
        data = content["text/event-stream"]["schema"]["properties"]["data"]
        assert data["contentSchema"] == {"$ref": SCHEMAS + f"jobpulse.v1.{message}"}
        assert _param(operation, "Last-Event-ID")["in"] == "header"
        assert {"eventsToken": []} in operation["security"]
    assert "204" in operations["JobService_WatchJob"][2]["responses"]
    _, _, export = operations["JobService_ExportJobs"]
    content = export["responses"]["200"]["content"]
    assert content["application/x-ndjson"] == {"schema": {"$ref": SCHEMAS + "jobpulse.v1.ExportJobsResponse"}}
    assert list(content) == ["application/x-ndjson", "text/csv"]
    assert _param(export, "format")["schema"]["enum"] == ["ndjson", "csv"]
    _, _, get_job = operations["JobService_GetJob"]
    assert list(get_job["responses"]["200"]["content"]) == ["application/json"]


def test_security_bearer_or_open_mode(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearer": []}, {}]
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert "open mode" in bearer["description"]
    token = doc["components"]["securitySchemes"]["eventsToken"]
    assert (token["in"], token["name"]) == ("query", "access_token")


def test_tags_and_comments(doc: dict[str, Any]) -> None:
    assert [t["name"] for t in doc["tags"]] == [s.name for s in http_rules.SERVICES]
    tags = {t["name"]: t["description"] for t in doc["tags"]}
    assert tags["JobService"].startswith("JobService is for callers and watchers")
    _, _, get_job = _by_id(doc)["JobService_GetJob"]
    assert get_job["summary"] == "Returns one job (FULL view by default)."
    assert openapi.summary_of("Lists X, e.g. every chunk. More.") == "Lists X, e.g. every chunk."


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "openapi.json"
    assert openapi.main(["--check", str(target)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert openapi.main([str(target)]) == 0
    assert openapi.main(["--check", str(target)]) == 0
    target.write_text(target.read_text().replace('"3.1.0"', '"3.0.3"'))
    assert openapi.main(["--check", str(target)]) == 1
    assert "make openapi" in capsys.readouterr().err


def _sample(schema: dict[str, Any], doc: dict[str, Any]) -> str:
    """A value of the schema's type as a query parameter holds it."""
    if "$ref" in schema:
        schema = _resolve(doc, schema["$ref"])
    if "enum" in schema:
        return str(schema["enum"][-1])
    if schema.get("format") == "date-time":
        return "2026-01-02T03:04:05Z"
    if schema.get("type") == "boolean":
        return "true"
    if schema.get("type") == "integer" or schema.get("format") == "int64":
        return "1"
    return "x"


def test_every_query_parameter_is_one_the_json_face_reads(server: Any, doc: dict[str, Any]) -> None:
    """Each documented query parameter, with a value of its schema (an array's twice), and each lowerCamel
    name the document names: whatever the call answers, it is never "not a query parameter" nor a value
    the JSON face cannot read. (The SSE paths are left out: their streams do not end.)"""
    base = str(server.app.http_url)
    # What the checks below look for, as the JSON face says it.
    refused = httpx.get(base + "/v1/jobs", params={"no_such_field": "1"}, timeout=10)
    assert refused.status_code == 400 and "is not a query parameter" in refused.text
    for verb, path, operation in _operations(doc):
        if "text/event-stream" in operation["responses"]["200"]["content"]:
            continue
        query: list[tuple[str, str]] = []
        for p in operation.get("parameters", []):
            if p["in"] != "query":
                continue
            schema = p["schema"]
            if schema.get("type") == "array":
                query += [(p["name"], _sample(schema["items"], doc))] * 2
            else:
                query.append((p["name"], _sample(schema, doc)))
                alias = re.search(r"Also accepted as `([^`]+)`", p.get("description", ""))
                if alias:
                    query.append((alias.group(1), _sample(schema, doc)))
        for field in re.findall(r"`([a-z_.]+)\.<key>=<value>`", operation["description"]):
            query.append((f"{field}.team", "ml"))  # a map field's entry
        if not query:
            continue
        url = base + re.sub(r"\{[^}]+\}", "x", path)
        body = {} if "requestBody" in operation else None
        response = httpx.request(verb, url, params=query, json=body, timeout=10)
        # The RPC's answer (open mode: no key needed), not the router's "no such path" or 405.
        assert response.status_code not in (401, 403, 405), (verb, path, response.text)
        assert "no such path" not in response.text, (verb, path)
        if response.status_code == 400:
            said = response.text
            assert "is not a query parameter" not in said, (verb, path, query, said)
            assert "must be true or false" not in said, (verb, path, query, said)
            assert "is not a valid" not in said, (verb, path, query, said)


@pytest.mark.skipif(not REDOCLY.exists(), reason="node_modules/.bin/redocly is absent: run `npm install`")
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_redocly_lint_finds_nothing() -> None:
    """Redocly's recommended rules (no redocly.yaml: none is turned off), errors and warnings alike."""
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true", NO_COLOR="1")
    done = subprocess.run(
        [str(REDOCLY), "lint", str(COMMITTED), "--format=json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report["problems"]
