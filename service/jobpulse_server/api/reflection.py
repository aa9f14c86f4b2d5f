"""Server reflection for grpcurl, ``buf curl`` and other reflection clients.

Three things the stock grpcio-reflection servicer does not do, and this one does:

- It answers both ``grpc.reflection.v1.ServerReflection`` (what current clients ask first) and
  ``grpc.reflection.v1alpha.ServerReflection``. grpcio-reflection only ships v1alpha; v1 is the same
  protocol under another package (every message and field number is identical), so one servicer
  serves both names, and the v1 file itself is derived from the v1alpha one for clients that
  ``describe`` it.
- ``FileContainingSymbol`` resolves every symbol of a served file: services, methods
  (``pkg.Service.Method``), messages, nested types, fields, enums and their values. The runtime
  descriptor pool (upb) finds no methods, so ``grpcurl describe jobpulse.v1.JobService.CreateJob``
  and ``describe grpc.health.v1.Health.Check`` failed with "Symbol not found".
- jobpulse's own files are answered from ``jobpulse.binpb`` (written by ``make gen`` with source
  info), so ``describe`` shows the proto comments; the runtime pool has no comments.

``google/rpc/status.proto`` and ``google/rpc/error_details.proto`` are served too: every error
carries ErrorInfo / BadRequest / RetryInfo details, and a client decodes them only if it can resolve
``google.rpc.ErrorInfo`` by reflection (otherwise grpcurl shows them as base64).

The list of services comes from the server itself: ``record_services(server)`` notes every service
registered on it (``add_..._to_server``), before or after reflection is added, so a new service needs
no change here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"

# Served whatever the services are, so status details decode in any client.
_ERROR_FILES = (status_pb2.DESCRIPTOR.name, error_details_pb2.DESCRIPTOR.name)


def record_services(server: grpc.aio.Server) -> list[str]:
    """Returns a list that from now on holds the name of every service added to ``server``.

    Generated ``add_XServicer_to_server`` functions (and ``grpc.method_handlers_generic_handler``)
    register a ``grpc.ServiceRpcHandler``, which knows its service's name: the server's own
    ``add_generic_rpc_handlers`` is wrapped to note it. The list is live, so a reflection servicer
    holding it sees services registered after it.
    """
    names: list[str] = []
    add = server.add_generic_rpc_handlers

    def add_and_record(handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        for handler in handlers:
            if isinstance(handler, grpc.ServiceRpcHandler) and handler.service_name() not in names:
                names.append(handler.service_name())
        add(handlers)

    server.add_generic_rpc_handlers = add_and_record  # type: ignore[method-assign]
    return names


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> ReflectionServicer:
    """Serves reflection v1 and v1alpha on ``server`` for the services named in ``service_names``
    (read at each request: pass ``record_services(server)``)."""
    servicer = ReflectionServicer(service_names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )
    return servicer


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    data = resources.files("jobpulse.v1").joinpath("jobpulse.binpb").read_bytes()
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from the v1alpha file: the same messages and
    numbers in package grpc.reflection.v1."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")

    def rename(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
        for nested in message.nested_type:
            rename(nested)

    for message in proto.message_type:
        rename(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return proto


def _symbols(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    """Every fully-qualified name ``proto`` defines (protobuf scoping: an enum's values are
    siblings of the enum)."""
    prefix = f"{proto.package}." if proto.package else ""

    def enum(e: descriptor_pb2.EnumDescriptorProto, scope: str) -> Iterator[str]:
        yield scope + e.name
        yield from (scope + value.name for value in e.value)

    def message(m: descriptor_pb2.DescriptorProto, scope: str) -> Iterator[str]:
        name = scope + m.name
        yield name
        yield from (f"{name}.{field.name}" for field in (*m.field, *m.extension))
        yield from (f"{name}.{oneof.name}" for oneof in m.oneof_decl)
        for nested in m.nested_type:
            yield from message(nested, name + ".")
        for e in m.enum_type:
            yield from enum(e, name + ".")

    for m in proto.message_type:
        yield from message(m, prefix)
    for e in proto.enum_type:
        yield from enum(e, prefix)
    for x in proto.extension:
        yield prefix + x.name
    for s in proto.service:
        yield prefix + s.name
        yield from (f"{prefix}{s.name}.{method.name}" for method in s.method)


class ReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection v1 / v1alpha over the runtime pool, with jobpulse's files as documented."""

    def __init__(
        self, service_names: Sequence[str], pool: descriptor_pool.DescriptorPool | None = None
    ) -> None:
        super().__init__((), pool=pool or descriptor_pool.Default())
        self._names = service_names
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {
            **_documented_files(),
            _V1_FILE: _v1_file(),
        }
        self._index_of: tuple[str, ...] = ()
        self._by_symbol: dict[str, str] = {}

    def service_names(self) -> list[str]:
        return sorted(self._names)

    def _file(self, name: str) -> descriptor_pb2.FileDescriptorProto | None:
        """A file by name: jobpulse's documented copy, the v1 reflection file, else the pool's."""
        if name not in self._files:
            try:
                found = self._pool.FindFileByName(name)
            except KeyError:
                return None
            proto = descriptor_pb2.FileDescriptorProto()
            found.CopyToProto(proto)
            self._files[name] = proto
        return self._files[name]

    def _service_file(self, service: str) -> str | None:
        if service == V1_SERVICE_NAME:
            return _V1_FILE
        try:
            return str(self._pool.FindServiceByName(service).file.name)
        except KeyError:
            return None

    def _symbol_index(self) -> dict[str, str]:
        """Symbol -> file over the files of the served services, the error files and all their
        imports; rebuilt when the set of services changes."""
        names = tuple(self.service_names())
        if names != self._index_of:
            by_symbol: dict[str, str] = {}
            roots = [f for f in map(self._service_file, names) if f] + list(_ERROR_FILES)
            for file_name in self._closure(roots):
                proto = self._file(file_name)
                assert proto is not None  # _closure yields only files it found
                by_symbol.update(dict.fromkeys(_symbols(proto), file_name))
            self._by_symbol, self._index_of = by_symbol, names
        return self._by_symbol

    def _closure(self, roots: list[str]) -> list[str]:
        """``roots`` and every file they import, each once (roots first)."""
        found: list[str] = []
        todo = list(reversed(roots))
        while todo:
            name = todo.pop()
            proto = self._file(name)
            if name in found or proto is None:
                continue
            found.append(name)
            todo.extend(reversed(proto.dependency))
        return found

    def _answer(self, request: Any, file_name: str | None) -> reflection_pb2.ServerReflectionResponse:
        if file_name is None or self._file(file_name) is None:
            return reflection_pb2.ServerReflectionResponse(
                error_response=reflection_pb2.ErrorResponse(
                    error_code=grpc.StatusCode.NOT_FOUND.value[0],
                    error_message=f"not found: {file_name or request.file_containing_symbol}",
                ),
                original_request=request,
            )
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[
                    self._files[name].SerializeToString() for name in self._closure([file_name])
                ]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._answer(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        name = fully_qualified_name.lstrip(".")
        file_name = self._symbol_index().get(name)
        if file_name is None:  # a symbol of a file no served service uses: ask the pool
            try:
                file_name = self._pool.FindFileContainingSymbol(name).name
            except KeyError:
                file_name = None
        return self._answer(request, file_name)

    def _list_services(self, request: Any) -> Any:
        return reflection_pb2.ServerReflectionResponse(
            list_services_response=reflection_pb2.ListServiceResponse(
                service=[reflection_pb2.ServiceResponse(name=n) for n in self.service_names()]
            ),
            original_request=request,
        )
