"""An OTLP trace receiver for tests and benches: what a collector (Jaeger, Tempo, the OpenTelemetry
Collector) would receive, kept in memory.

``OtlpReceiver`` serves the OTLP/gRPC ``TraceService`` (the opentelemetry-proto service definitions) on
127.0.0.1 port 0 and, with ``http=True``, OTLP/HTTP (``POST /v1/traces``, protobuf) on a port of its own.
Both run on threads of their own, so a test (or bench) can point server processes at them and poll
``spans()``. ``keep=False`` counts spans without keeping them (a bench's sink).
"""

from __future__ import annotations

import json
import threading
from concurrent import futures
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class ReceivedSpan:
    """One span as received: ids in hex, times in nanoseconds since the epoch."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "UNSET"
    links: list[tuple[str, str]] = field(default_factory=list)


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        service=service,
                        name=s.name,
                        kind=SPAN_KINDS.get(s.kind, str(s.kind)),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        status={0: "UNSET", 1: "OK", 2: "ERROR"}.get(s.status.code, str(s.status.code)),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                    )
                )
    return out


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Receives OTLP traces over gRPC (``grpc_endpoint``) and, with ``http``, over HTTP
    (``http_endpoint``); ``spans()`` is everything received so far."""

    def __init__(self, *, http: bool = False, keep: bool = True) -> None:
        self.keep = keep
        self.count = 0
        self.requests = 0
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http: ThreadingHTTPServer | None = None
        self.http_port = 0
        if http:
            self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self.http_port = self._http.server_address[1]

    @property
    def grpc_endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC)."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> OtlpReceiver:
        self._grpc.start()
        if self._http is not None:
            threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self._grpc.stop(0)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            if self.keep:
                received = spans_of(request)
                self.count += len(received)
                self._spans.extend(received)
            else:
                self.count += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def dump(self, path: Path) -> None:
        """Writes the spans received as JSON (docs/tools/trace_waterfall.py reads it)."""
        path.write_text(json.dumps([asdict(s) for s in self.spans()], indent=1))


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.take(request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
