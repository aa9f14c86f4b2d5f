"""The OpenAPI 3.1 document of the JSON face, made from the ``google.api.http`` rules and the descriptors.

Nothing here lists a path or a schema: every path comes from a rule (wire/http_rules.py), every
parameter, body and response from the rule's request and response messages, and every schema from a
message or enum descriptor, in the proto3 JSON mapping the JSON face speaks (http/json_api.py). The
descriptions are the .proto files' comments, read from the descriptor set the stubs ship with
(``jobpulse/v1/jobpulse.binpb``, built with its source info), so the document says what the protos say.

``python -m jobpulse_server.http.openapi [--check] [PATH]`` writes the document to PATH
(protos/openapi.json by default), or with ``--check`` fails when the file there is not what the protos
make now (``make lint`` runs that, ``make openapi`` writes it).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import re
import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import code_pb2, error_details_pb2

import jobpulse_server
from jobpulse.export_csv import COLUMNS
from jobpulse_server.http.json_api import EXPORT_METHOD, SSE_METHODS
from jobpulse_server.wire.http_rules import HttpRule, Variable, served_rules

OPENAPI_VERSION = "3.1.0"
DEFAULT_PATH = Path("protos/openapi.json")
_SCHEMAS = "#/components/schemas/"
_ERROR = "Error"

# The descriptor set the stubs ship with (client/pyproject.toml's package data): the .proto files with
# their comments (protoc --include_source_info).
_DESCRIPTOR_SET = ("jobpulse.v1", "jobpulse.binpb")

# FileDescriptorProto / DescriptorProto / ... field numbers: the source info names a comment's place by
# the path of field numbers and indexes that leads to it (google/protobuf/descriptor.proto).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

# 64-bit integers are decimal strings: the pattern says so (a "format" alone constrains nothing, so "" or
# "many" would be valid by the schema, where the server refuses them).
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
# The scalar types in the proto3 JSON mapping: 64-bit integers are strings (JavaScript numbers cannot
# hold them), 32-bit ones numbers, bytes base64.
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

# The well-known types that the JSON mapping writes as plain JSON values, not as objects of their fields.
# They are inlined where used (a field of type Timestamp is a date-time string, not a $ref).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": 'A duration in seconds with an "s" suffix, e.g. "1.5s" or "3600s".',
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Field paths, comma-separated, in lowerCamel case (max_running_chunks is written "
        '"maxRunningChunks"), e.g. "paused,maxRunningChunks".',
    },
    "google.protobuf.Struct": {"type": "object", "description": "Any JSON object."},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}, "description": "Any JSON array."},
    "google.protobuf.Empty": {"type": "object", "description": "An empty object."},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {
            "@type": {
                "type": "string",
                "description": 'The message type, e.g. "type.googleapis.com/google.rpc.ErrorInfo".',
            }
        },
        "description": "A message of any type: its fields in the JSON mapping beside its @type.",
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
# The well-known types a query parameter can carry (one string each); the others cannot be in a query.
_QUERY_WELL_KNOWN = frozenset(_WELL_KNOWN) - {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Empty",
    "google.protobuf.Any",
}

# The details an error of jobpulse carries (api/error_mapping.py): documented as the error's details.
_ERROR_DETAILS = (
    error_details_pb2.ErrorInfo.DESCRIPTOR,
    error_details_pb2.BadRequest.DESCRIPTOR,
    error_details_pb2.RetryInfo.DESCRIPTOR,
)

_DESCRIPTION = """\
The JSON face of jobpulse: every RPC with a `google.api.http` rule, served as HTTP/JSON on the HTTP port
by the same handlers as gRPC (the same authentication, roles, validation and errors). This document is
made from those rules and the .proto files (their comments are the descriptions).

**Requests.** Path variables set request fields; each path parameter says which. A rule with a body of
`*` takes every other field in a JSON object body (query parameters are refused); a rule whose body is
one field takes that field as the body and the others as query parameters. Without a body, every field
the path does not set is a query parameter: by its proto name or its lowerCamel JSON name, a field of a
message field by its dotted path (`a.b`), a repeated field by repeating the parameter, a map field as
`field.key=value` (e.g. `labels.team=ml`), booleans as `true`/`false`, enums by name, timestamps in
RFC 3339, durations like `1.5s`, field masks comma-separated. An unknown field, in the body or the query,
is refused (400): a request message's schema allows no other properties (its fields go by their
lowerCamel names here; the proto names are accepted too).

**Responses** are the response message in the proto3 JSON mapping: lowerCamel names, 64-bit integers as
strings, enums by name, timestamps, durations and field masks as strings, fields with default values left
out. WatchJob and WatchJobs are Server-Sent Events (`text/event-stream`); ExportJobs is NDJSON
(`application/x-ndjson`), one message a line.

**Errors** are `{"error": {"code", "status", "reason", "message", "details"}}` with the HTTP status of the
canonical code (400, 401, 403, 404, 409, 429 with Retry-After, 500, 503) and the gRPC status's details
(ErrorInfo, BadRequest, RetryInfo) in the JSON mapping.

**Authentication**: `Authorization: Bearer <API key>`, unless the server runs in open mode (no keys)."""

_BEARER = (
    "An API key, sent as `Authorization: Bearer <API key>`. Every call needs one unless the server runs "
    "in open mode (no keys configured), where calls need no credentials."
)
_EVENTS_TOKEN = (
    "A token from CreateEventsToken, for a browser's EventSource (which cannot send an Authorization "
    "header): it reads the events it was made for, as the caller that made it, until it expires."
)
_LAST_EVENT_ID = (
    "The id of the last event received (what a reconnecting EventSource sends): the stream resumes right "
    "after it. It wins over the resume point the query gives."
)
# What the SSE routes (http/routes.py) answer beside the stream, by method.
_SSE_RESPONSES: dict[str, dict[str, dict[str, str]]] = {
    "/jobpulse.v1.JobService/WatchJob": {
        "204": {
            "description": "The stream resumes at or after the job's terminal revision: nothing more will "
            "come (an EventSource stops reconnecting)."
        }
    },
}


class SourceComments:
    """The leading comments of the .proto files' messages, fields, enums, enum values, services and
    methods, by full name (an enum value as ``<enum full name>.<value name>``)."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.by_name: dict[str, str] = {}
        for file in files:
            where = {
                tuple(loc.path): loc.leading_comments or loc.trailing_comments
                for loc in file.source_code_info.location
            }
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(message, prefix + message.name, (_FILE_MESSAGE, i), where)
            for i, enum in enumerate(file.enum_type):
                self._enum(enum, prefix + enum.name, (_FILE_ENUM, i), where)
            for i, service in enumerate(file.service):
                name = prefix + service.name
                self._put(name, where.get((_FILE_SERVICE, i)))
                for j, method in enumerate(service.method):
                    self._put(f"{name}.{method.name}", where.get((_FILE_SERVICE, i, _SERVICE_METHOD, j)))

    def _put(self, name: str, text: str | None) -> None:
        if text and text.strip():
            self.by_name[name] = textwrap.dedent(text).strip()

    def _message(
        self,
        message: descriptor_pb2.DescriptorProto,
        name: str,
        path: tuple[int, ...],
        where: dict[tuple[int, ...], str],
    ) -> None:
        self._put(name, where.get(path))
        for i, field in enumerate(message.field):
            self._put(f"{name}.{field.name}", where.get((*path, _MESSAGE_FIELD, i)))
        for i, nested in enumerate(message.nested_type):
            self._message(nested, f"{name}.{nested.name}", (*path, _MESSAGE_NESTED, i), where)
        for i, enum in enumerate(message.enum_type):
            self._enum(enum, f"{name}.{enum.name}", (*path, _MESSAGE_ENUM, i), where)

    def _enum(
        self,
        enum: descriptor_pb2.EnumDescriptorProto,
        name: str,
        path: tuple[int, ...],
        where: dict[tuple[int, ...], str],
    ) -> None:
        self._put(name, where.get(path))
        for i, value in enumerate(enum.value):
            self._put(f"{name}.{value.name}", where.get((*path, _ENUM_VALUE, i)))

    def get(self, name: str) -> str:
        """The comment of ``name``, or "" if it has none."""
        return self.by_name.get(name, "")


@functools.cache
def source_comments() -> SourceComments:
    """The comments of the descriptor set the stubs ship with, read once."""
    package, name = _DESCRIPTOR_SET
    data = resources.files(package).joinpath(name).read_bytes()
    return SourceComments(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def summary_of(text: str) -> str:
    """The first sentence of a comment, on one line (a period inside "e.g." or "i.e." ends none)."""
    flat = " ".join(text.split())
    found = re.match(r"(.+?(?<!e\.g)(?<!i\.e)[.!?])(\s|$)", flat)
    return found.group(1) if found else flat


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _described(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """``schema`` with ``text`` as its description (first, before any the schema had)."""
    if not text:
        return schema
    out = dict(schema)
    out["description"] = f"{text}\n\n{schema['description']}" if schema.get("description") else text
    return out


class Schemas:
    """The components' schemas: every message and enum reached from the operations, named by full name,
    in the proto3 JSON mapping. A message is added before its fields are, so recursion ends in a $ref."""

    def __init__(self, comments: SourceComments, closed: Iterable[str] = ()) -> None:
        self.comments = comments
        self.schemas: dict[str, dict[str, Any]] = {}
        # The messages whose objects take no property but their fields' (the RPCs' requests: the JSON
        # face refuses an unknown field with 400). Responses stay open, so that a field added later is no
        # error to a client that validates what it reads.
        self.closed = frozenset(closed)

    def ref(self, descriptor: Descriptor | EnumDescriptor) -> dict[str, Any]:
        """A $ref to the schema of a message or an enum (made on first use), or a well-known type's
        schema itself."""
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}
            if isinstance(descriptor, EnumDescriptor):
                self.schemas[name] = self._enum(descriptor)
            else:
                self.schemas[name] = self.message(descriptor)
        return {"$ref": _SCHEMAS + name}

    def message(self, descriptor: Descriptor, leave_out: Iterable[str] = ()) -> dict[str, Any]:
        """A message's object schema (without the fields named in ``leave_out``)."""
        skipped = set(leave_out)
        fields = [f for f in descriptor.fields if f.name not in skipped]
        schema: dict[str, Any] = {"type": "object"}
        notes = [self.comments.get(descriptor.full_name)]
        for oneof in descriptor.oneofs:
            members = [f for f in oneof.fields if f.name not in skipped]
            if len(members) > 1:  # a proto3 optional field is a oneof of one: it constrains nothing
                names = ", ".join(f"`{f.json_name}`" for f in members)
                notes.append(f"At most one of {names} is set.")
        description = "\n\n".join(n for n in notes if n)
        if description:
            schema["description"] = description
        if fields:
            schema["properties"] = {f.json_name: self.field(f) for f in fields}
        if descriptor.full_name in self.closed:
            schema["additionalProperties"] = False
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        """A field's schema: its type, an array of it if repeated, an object if a map; its comment as
        the description."""
        if _is_map(field):
            value = _message_of(field).fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        return _described(schema, self.comments.get(field.full_name))

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of one value of a field (an element of a repeated one)."""
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self.ref(field.enum_type)
        return dict(_SCALARS[field.type])

    def _enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        lines = []
        for value in descriptor.values:
            said = " ".join(self.comments.get(f"{descriptor.full_name}.{value.name}").split())
            lines.append(f"- `{value.name}`: {said}" if said else f"- `{value.name}`")
        intro = self.comments.get(descriptor.full_name)
        listed = "\n".join(lines)
        return {
            "type": "string",
            "enum": [v.name for v in descriptor.values],
            "description": f"{intro}\n\n{listed}" if intro else listed,
        }


def _singular(literal: str) -> str:
    """A name for one element of a collection (``kinds`` -> ``kind``)."""
    if literal.endswith("s") and len(literal) > 1:
        return literal[:-1]
    return f"{literal}_id"


def _field_at(message: Descriptor, path: Sequence[str]) -> FieldDescriptor:
    """The field a dotted path names (the rules were checked against the descriptors when read)."""
    field = message.fields_by_name[path[0]]
    for name in path[1:]:
        field = _message_of(field).fields_by_name[name]
    return field


def _message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field (a map field's is its entry)."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


class _PathVariable:
    """One template variable as OpenAPI has it: the path text it becomes and its parameters, each a name
    and whether it may hold "/" (none for a pattern without a wildcard: the path sets a constant)."""

    def __init__(self, variable: Variable, taken: set[str]) -> None:
        self.variable = variable
        self.parameters: list[tuple[str, bool]] = []
        if variable.pattern == "*":
            self.text = "{" + self._name(variable.field.replace(".", "_"), False, taken) + "}"
            return
        parts = []
        previous = ""
        for segment in variable.pattern.split("/"):
            if segment in ("*", "**"):
                base = _singular(previous) if previous else variable.path[-1]
                parts.append("{" + self._name(base, segment == "**", taken) + "}")
            else:
                parts.append(segment)
            previous = segment
        self.text = "/".join(parts)

    def _name(self, base: str, many: bool, taken: set[str]) -> str:
        """A parameter name not yet taken in the template, from ``base``."""
        name, n = base, 2
        while name in taken:
            name, n = f"{base}{n}", n + 1
        taken.add(name)
        self.parameters.append((name, many))
        return name


def _openapi_path(rule: HttpRule) -> tuple[str, list[_PathVariable]]:
    """The OpenAPI path of a rule's template (``/v1/{kind.name=kinds/*}`` -> ``/v1/kinds/{kind}``; a
    ``:verb`` stays as it is) and its variables in template order."""
    variables = iter(rule.variables)
    taken: set[str] = set()
    made: list[_PathVariable] = []

    def replace(found: re.Match[str]) -> str:
        variable = next(variables)
        assert found.group(1) == variable.field
        made.append(_PathVariable(variable, taken))
        return made[-1].text

    path = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", replace, rule.template)
    return path, made


class _Operations:
    """The operations of the served rules, and the schemas they reach."""

    def __init__(self) -> None:
        self.comments = source_comments()
        self.schemas = Schemas(self.comments, closed={r.request.full_name for r in served_rules()})

    def operation(self, rule: HttpRule, operation_id: str) -> tuple[str, dict[str, Any]]:
        """The OpenAPI path of ``rule`` and its operation."""
        path, variables = _openapi_path(rule)
        method_name = f"{rule.service.full_name}.{rule.method.name}"
        comment = self.comments.get(method_name)
        notes = [comment] if comment else []
        parameters = [p for v in variables for p in self._path_parameters(rule, v)]
        fixed = [v.variable for v in variables if not v.parameters]
        for v in fixed:
            notes.append(f'The path sets `{v.field}` to "{v.pattern}".')
        sse = rule.full_method in SSE_METHODS
        # The SSE routes (http/routes.py) read their query by the proto names alone.
        query, query_notes = self._query_parameters(rule, aliases=not sse)
        parameters += query
        notes += query_notes
        if sse:
            parameters.append(
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": _LAST_EVENT_ID,
                    "schema": {"type": "string"},
                }
            )
        if rule.full_method == EXPORT_METHOD:
            parameters.append(
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "`ndjson` (the default): one message a line; `csv`: a job a row, under a "
                    "header, the columns of `jobpulse export --format csv`.",
                    "schema": {"type": "string", "enum": ["ndjson", "csv"], "default": "ndjson"},
                }
            )
        notes.append(f"gRPC: `{rule.full_method}`.")
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [rule.service.name],
            "summary": summary_of(comment) if comment else method_name,
            "description": "\n\n".join(notes),
        }
        if parameters:
            operation["parameters"] = parameters
        if rule.body:
            operation["requestBody"] = self._request_body(rule)
        operation["responses"] = self._responses(rule, sse)
        if sse:
            operation["security"] = [{"bearer": []}, {"eventsToken": []}, {}]
        return path, operation

    def _path_parameters(self, rule: HttpRule, variable: _PathVariable) -> Iterator[dict[str, Any]]:
        field = _field_at(rule.request, variable.variable.path)
        comment = self.comments.get(field.full_name)
        shown = variable.text.replace("{", "<").replace("}", ">")
        for name, many in variable.parameters:
            if variable.variable.pattern == "*":
                fills = f"Sets the request field `{variable.variable.field}`."
                schema = self.schemas.single(field)
            else:
                fills = f'Sets the request field `{variable.variable.field}` to "{shown}".'
                schema = {"type": "string"}
            if schema.get("type") == "string" and "format" not in schema:
                # What the router matches (wire/http_rules.py): one segment, or for "**" several.
                schema["pattern"] = "^[^:]+$" if many else "^[^/:]+$"
            if many:
                fills += " It may hold `/` (as is, or encoded as %2F)."
            yield {
                "name": name,
                "in": "path",
                "required": True,
                "description": f"{comment}\n\n{fills}" if comment else fills,
                "schema": schema,
            }

    def _query_parameters(self, rule: HttpRule, aliases: bool) -> tuple[list[dict[str, Any]], list[str]]:
        """The query parameters of a rule (none when the body is "*"), and notes on the fields that
        cannot be parameters of their own (maps). ``aliases``: say that lowerCamel names work too."""
        if rule.body == "*":
            return [], []
        left_out = set(rule.bound) | ({rule.body} if rule.body else set())
        parameters: list[dict[str, Any]] = []
        maps: list[str] = []
        for field in rule.request.fields:
            if field.name not in left_out:
                self._query_field(field, (), (), {rule.request.full_name}, parameters, maps, aliases)
        notes = []
        if maps:
            listed = ", ".join(f"`{m}.<key>=<value>`" for m in maps)
            notes.append(
                f"Map fields are query parameters too, one entry each: {listed} "
                f"(e.g. `{maps[0]}.team=ml`); repeat for more entries."
            )
        return parameters, notes

    def _query_field(
        self,
        field: FieldDescriptor,
        prefix: tuple[str, ...],
        json_prefix: tuple[str, ...],
        seen: set[str],
        parameters: list[dict[str, Any]],
        maps: list[str],
        aliases: bool,
    ) -> None:
        """Adds the parameters of one field: itself, or for a message field the fields within it under
        a dotted name (a repeated message, a recursive one, or a free-form one cannot be given)."""
        name = ".".join((*prefix, field.name))
        json_name = ".".join((*json_prefix, field.json_name))
        if _is_map(field):
            maps.append(name)
            return
        message = field.message_type
        if message is not None and message.full_name not in _QUERY_WELL_KNOWN:
            if field.is_repeated or message.full_name in seen or message.full_name in _WELL_KNOWN:
                return
            for inner in message.fields:
                self._query_field(
                    inner,
                    (*prefix, field.name),
                    (*json_prefix, field.json_name),
                    seen | {message.full_name},
                    parameters,
                    maps,
                    aliases,
                )
            return
        one = self.schemas.single(field)
        notes = [self.comments.get(field.full_name)]
        if aliases and json_name != name:
            notes.append(f"Also accepted as `{json_name}`.")
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if field.is_repeated:
            notes.append("Repeat the parameter for more values.")
            parameter.update(style="form", explode=True, schema={"type": "array", "items": one})
        else:
            parameter["schema"] = one
        description = "\n\n".join(n for n in notes if n)
        if description:
            parameter["description"] = description
        parameters.append(parameter)

    def _request_body(self, rule: HttpRule) -> dict[str, Any]:
        if rule.body == "*":
            bound = sorted(v.field for v in rule.variables if len(v.path) == 1)
            if bound:
                schema = self.schemas.message(rule.request, leave_out=bound)
                set_by_path = ", ".join(f"`{b}`" for b in bound)
                described = (
                    f"The fields of {rule.request.full_name} but those the path sets ({set_by_path}); "
                    "an empty object (or no body) when none is wanted."
                )
            else:
                schema = self.schemas.ref(rule.request)
                described = f"A {rule.request.full_name}."
        else:
            field = rule.request.fields_by_name[rule.body]
            schema = self.schemas.field(field)
            described = f"The request field `{rule.body}`"
            inside = [v.field for v in rule.variables if v.path[0] == rule.body]
            if inside:
                described += " (the path sets " + ", ".join(f"`{f}`" for f in inside) + ")"
            described += "."
        return {"description": described, "content": {"application/json": {"schema": schema}}}

    def _said(self, message: Descriptor, fallback: str) -> str:
        """The first sentence of a message's comment (``fallback`` if it has none)."""
        comment = self.comments.get(message.full_name)
        return summary_of(comment) if comment else f"{fallback}."

    def _responses(self, rule: HttpRule, sse: bool) -> dict[str, Any]:
        """The 200 response (JSON, Server-Sent Events or NDJSON) and the shared error responses."""
        response = rule.response
        if rule.response_body:
            schema = self.schemas.field(response.fields_by_name[rule.response_body])
            what = f"the `{rule.response_body}` field of a {response.full_name}"
            said = f"The `{rule.response_body}` field of a {response.full_name}."
        else:
            schema = self.schemas.ref(response)
            what = f"a {response.full_name}"
            said = self._said(response, f"A {response.full_name}")
        if sse:
            ok = {
                "description": f"Server-Sent Events, each event's data {what} in JSON. An error before the "
                "first event is a JSON error response; after it the stream just ends, and the client "
                "resumes with Last-Event-ID.",
                "content": {"text/event-stream": {"schema": _sse_event(schema, what)}},
            }
        elif rule.streaming:
            described = f"NDJSON: one JSON object a line, each {what}."
            content: dict[str, Any] = {"application/x-ndjson": {"schema": schema}}
            if rule.full_method == EXPORT_METHOD:
                described += " With `format=csv`, CSV: a header, then a job a row."
                content["text/csv"] = {
                    "schema": {"type": "string", "description": "Columns: " + ", ".join(COLUMNS) + "."}
                }
            ok = {"description": described, "content": content}
        else:
            ok = {"description": said, "content": {"application/json": {"schema": schema}}}
        responses: dict[str, Any] = {"200": ok}
        responses.update(_SSE_RESPONSES.get(rule.full_method, {}) if sse else {})
        responses["4XX"] = {"$ref": "#/components/responses/ClientError"}
        responses["default"] = {"$ref": "#/components/responses/Error"}
        return responses


def _sse_event(data: dict[str, Any], what: str) -> dict[str, Any]:
    """One event of a Server-Sent Events stream (the stream is a sequence of them), its data described
    by ``data``: what OpenAPI 3.2 names a media type's itemSchema, given as the schema in 3.1."""
    return {
        "type": "object",
        "description": "One event of the stream, in the text/event-stream format (`event:`, `id:` and "
        "`data:` lines, a blank line after each event). Idle streams also get heartbeats.",
        "required": ["data"],
        "properties": {
            "event": {
                "type": "string",
                "description": "The message's type in lower case (snapshot, change, heartbeat); `end` for "
                "the last event of a stream that is over (its data `{}`).",
            },
            "id": {
                "type": "string",
                "description": "Where to resume from: a reconnecting EventSource sends it back as "
                "Last-Event-ID. Left out on all but the last part of a message split over several events.",
            },
            "data": {
                "type": "string",
                "description": f"{what[0].upper()}{what[1:]} in JSON, on one line.",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


def _error_components(schemas: Schemas) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Error schema and the shared error responses."""
    details = []
    for descriptor in _ERROR_DETAILS:
        type_url = f"type.googleapis.com/{descriptor.full_name}"
        details.append(
            {
                "allOf": [
                    schemas.ref(descriptor),
                    {
                        "type": "object",
                        "required": ["@type"],
                        "properties": {"@type": {"const": type_url}},
                    },
                ]
            }
        )
    details.append(copy.deepcopy(_WELL_KNOWN["google.protobuf.Any"]))
    codes = [v.name for v in code_pb2.Code.DESCRIPTOR.values]
    error = {
        "type": "object",
        "description": "An error of the JSON face: the gRPC status the call ended with, as JSON.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "reason", "message"],
                "properties": {
                    "code": {"type": "integer", "format": "int32", "description": "The HTTP status."},
                    "status": {
                        "type": "string",
                        "enum": codes,
                        "description": "The canonical code (a google.rpc.Code name).",
                    },
                    "reason": {
                        "type": "string",
                        "description": "The ErrorInfo reason (stable, e.g. JOB_NOT_FOUND); the status "
                        "when there is none.",
                    },
                    "message": {"type": "string", "description": "What went wrong, for people."},
                    "details": {
                        "type": "array",
                        "description": "The status's details in the JSON mapping (ErrorInfo, BadRequest "
                        "with the field violations, RetryInfo).",
                        "items": {"anyOf": details},
                    },
                },
            }
        },
    }
    content = {"application/json": {"schema": {"$ref": _SCHEMAS + _ERROR}}}
    responses = {
        "ClientError": {
            "description": "The request was refused; the HTTP status is the canonical code's: 400 "
            "(INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE), 401 (UNAUTHENTICATED), 403 "
            "(PERMISSION_DENIED), 404 (NOT_FOUND), 405 (a method the path does not have), 409 (ABORTED), "
            "429 (RESOURCE_EXHAUSTED: wait Retry-After seconds).",
            "headers": {
                "Retry-After": {
                    "description": "429: seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "WWW-Authenticate": {
                    "description": '401: `Bearer realm="jobpulse"`.',
                    "schema": {"type": "string"},
                },
            },
            "content": content,
        },
        "Error": {
            "description": "The server could not answer: 500 (INTERNAL: a bug; the server logged the "
            "details), 503 (UNAVAILABLE: the database is down or the server is shutting down; retry after "
            "Retry-After seconds, or on another replica).",
            "headers": {
                "Retry-After": {
                    "description": "503: seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
            "content": content,
        },
    }
    return error, responses


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every served rule (a new dict each call; the same one every call)."""
    operations = _Operations()
    comments = operations.comments
    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    tags: dict[str, str] = {}
    for rule in served_rules():
        operation_id = f"{rule.service.name}_{rule.method.name}"
        n = 2
        while operation_id in ids:  # an additional binding of the same method
            operation_id, n = f"{rule.service.name}_{rule.method.name}_{n}", n + 1
        ids.add(operation_id)
        path, operation = operations.operation(rule, operation_id)
        item = paths.setdefault(path, {})
        verb = rule.verb.lower()
        if verb in item:
            raise ValueError(
                f"two rules are {rule.verb} {path}: {item[verb]['operationId']} and {operation_id}"
            )
        item[verb] = operation
        tags.setdefault(
            rule.service.name,
            comments.get(rule.service.full_name) or f"The {rule.service.full_name} service.",
        )
    error, error_responses = _error_components(operations.schemas)
    schemas = dict(sorted(operations.schemas.schemas.items()))
    schemas[_ERROR] = error
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "jobpulse",
            "version": jobpulse_server.__version__,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "The jobpulse server's HTTP port."}],
        "security": [{"bearer": []}, {}],
        "tags": [{"name": name, "description": text} for name, text in tags.items()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "responses": error_responses,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "API key",
                    "description": _BEARER,
                },
                "eventsToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": _EVENTS_TOKEN,
                },
            },
        },
    }


def render() -> str:
    """The document as the committed file holds it."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobpulse_server.http.openapi",
        description="Write the JSON face's OpenAPI document (or check the written one is current).",
    )
    parser.add_argument("--check", action="store_true", help="fail if PATH differs from the document")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    args = parser.parse_args(argv)
    text = render()
    path: Path = args.path
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            why = "does not exist" if current is None else "differs from what the protos' http rules make"
            print(
                f"{path} {why}: run `make openapi` (python -m jobpulse_server.http.openapi) and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{path} is current")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
