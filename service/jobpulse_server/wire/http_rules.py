"""The JSON face's routes, read once from the ``google.api.http`` rules on the services' methods (AIP-127).

Each rule names an HTTP method and a path template (``/v1/jobs/{job_id}:cancel``); a template's
variables bind request fields (``{kind.name=kinds/*}`` binds ``kind.name`` to ``kinds/<one segment>``).
``rules`` reads them from the descriptors (jobpulse's, and google.longrunning.Operations'), and each rule
matches a request path with a regular expression made from its template. The transcoder (http/json_api.py)
and the OpenAPI document (http/openapi.py) both read these, never a list of routes of their own.

Template grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;   Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;   Verb = ":" LITERAL ;
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.longrunning import operations_proto_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor

from jobpulse.v1 import admin_service_pb2, job_service_pb2, schedule_service_pb2, worker_service_pb2

# One path segment of a variable or a "*": no "/" and no ":" (a custom method's verb follows a ":"; no
# id jobpulse makes holds one). "**": any number of segments, still without ":".
_ONE = "[^/:]+"
_MANY = "[^:]+"


class TemplateError(ValueError):
    """A path template that is not in the grammar above (a build-time mistake in a .proto file)."""


@dataclass(frozen=True)
class Variable:
    """A template variable: the request field it binds (``kind.name``: a field of a message field) and
    the pattern of the value (``*``, or the segments after ``=``, as written)."""

    field: str
    pattern: str

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.field.split("."))


@dataclass(frozen=True)
class HttpRule:
    """One HTTP binding of one method."""

    service: ServiceDescriptor
    method: MethodDescriptor
    verb: str  # GET, POST, PATCH, DELETE, PUT
    template: str
    body: str  # "" (no body), "*" (the whole request), or the request field the body is
    response_body: str  # "" (the whole response) or the response field sent
    variables: tuple[Variable, ...]
    regex: re.Pattern[str]

    @property
    def full_method(self) -> str:
        """``/jobpulse.v1.JobService/GetJob``: the method as gRPC names it."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def request(self) -> Descriptor:
        return self.method.input_type

    @property
    def response(self) -> Descriptor:
        return self.method.output_type

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def bound(self) -> frozenset[str]:
        """The request fields the path binds (top-level names)."""
        return frozenset(v.path[0] for v in self.variables)

    def match(self, path: str) -> dict[str, str] | None:
        """The variables' values (by field path) if ``path`` matches, else None."""
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        return {v.field: m.group(f"v{i}") for i, v in enumerate(self.variables)}

    def path_of(self, values: dict[str, str]) -> str:
        """The path for these variable values (for docs and tests): the template with each filled in."""
        out = self.template
        for v in self.variables:
            whole = "{" + v.field + ("" if v.pattern == "*" else "=" + v.pattern) + "}"
            out = out.replace(whole, values[v.field])
        return out


def parse_template(template: str) -> tuple[tuple[Variable, ...], str]:
    """(the variables, a regular expression matching the whole path) of ``template``."""
    if not template.startswith("/"):
        raise TemplateError(f"{template!r}: a template starts with '/'")
    body, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and not last.endswith("}"):
        # A ":verb" after the last segment (a ":" inside a variable's braces is not one).
        cut = template.rindex(":")
        if "}" not in template[cut:]:
            body, verb = template[:cut], template[cut + 1 :]
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", verb):
                raise TemplateError(f"{template!r}: the custom verb {verb!r} is not a word")
    variables: list[Variable] = []
    regex = ""
    for segment in _split(body[1:], template):
        regex += "/"
        if segment.startswith("{"):
            inner = segment[1:-1]
            field, _, pattern = inner.partition("=")
            if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", field):
                raise TemplateError(f"{template!r}: {field!r} is not a field path")
            pattern = pattern or "*"
            regex += f"(?P<v{len(variables)}>{_segments_regex(pattern, template)})"
            variables.append(Variable(field, pattern))
        else:
            regex += _segments_regex(segment, template)
    if verb:
        regex += ":" + re.escape(verb)
    return tuple(variables), regex


def _split(body: str, template: str) -> list[str]:
    """The template's segments, a variable (which may hold "/") kept whole."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"{template!r}: unbalanced braces")
        elif ch == "/" and depth == 0:
            out.append(body[start:i])
            start = i + 1
    if depth:
        raise TemplateError(f"{template!r}: unbalanced braces")
    out.append(body[start:])
    if any(not s for s in out):
        raise TemplateError(f"{template!r}: an empty segment")
    return out


def _segments_regex(segments: str, template: str) -> str:
    parts = []
    for s in segments.split("/"):
        if s == "*":
            parts.append(_ONE)
        elif s == "**":
            parts.append(_MANY)
        elif re.fullmatch(r"[A-Za-z0-9_.~-]+", s):
            parts.append(re.escape(s))
        else:
            raise TemplateError(f"{template!r}: {s!r} is not a segment")
    return "/".join(parts)


def _bindings(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


# Rules for methods whose .proto has none, given here as a service configuration's http section would:
# google.longrunning.Operations.WaitOperation (googleapis leaves it without one).
EXTRA_RULES = {
    "google.longrunning.Operations.WaitOperation": http_pb2.HttpRule(
        post="/v1/{name=operations/**}:wait", body="*"
    ),
}


def method_rules(service: ServiceDescriptor, method: MethodDescriptor) -> list[HttpRule]:
    """The HTTP bindings of one method (its rule and any additional bindings); [] without a rule."""
    options = method.GetOptions()
    if options.HasExtension(annotations_pb2.http):
        rule = options.Extensions[annotations_pb2.http]
    elif method.full_name in EXTRA_RULES:
        rule = EXTRA_RULES[method.full_name]
    else:
        return []
    out = []
    for binding in _bindings(rule):
        pattern = binding.WhichOneof("pattern")
        if pattern is None or pattern == "custom":
            raise TemplateError(f"{method.full_name}: only get, post, patch, put and delete rules are served")
        template = getattr(binding, pattern)
        variables, regex = parse_template(template)
        request = method.input_type
        for v in variables:
            _check_field(request, v.path, method.full_name)
        if binding.body not in ("", "*"):
            _check_field(request, (binding.body,), method.full_name)
        out.append(
            HttpRule(
                service,
                method,
                pattern.upper(),
                template,
                binding.body,
                binding.response_body,
                variables,
                re.compile(regex),
            )
        )
    return out


def _check_field(message: Descriptor, path: Sequence[str], where: str) -> None:
    for i, name in enumerate(path):
        field = message.fields_by_name.get(name)
        if field is None:
            raise TemplateError(
                f"{where}: the rule names {'.'.join(path)!r}, not a field of {message.full_name}"
            )
        if i < len(path) - 1:
            inner = field.message_type
            if inner is None:
                raise TemplateError(f"{where}: {'.'.join(path[: i + 1])!r} is not a message field")
            message = inner


def rules(services: Iterable[ServiceDescriptor]) -> list[HttpRule]:
    """Every binding of every method of ``services`` that has one, in declaration order."""
    return [r for s in services for m in s.methods for r in method_rules(s, m)]


# The services the JSON face serves, in the order their rules are listed.
SERVICES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
    operations_proto_pb2.DESCRIPTOR.services_by_name["Operations"],
)


def served_rules() -> list[HttpRule]:
    """Every rule of the services jobpulse serves."""
    return rules(SERVICES)
