"""Server reflection that keeps the proto comments, so ``grpcurl describe`` shows the docs.

The stock servicer rebuilds file descriptors from the runtime pool, which has
no source info (comments). ``make gen`` writes jobpulse.binpb, a descriptor set
with source info; files found there are answered from it verbatim.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    data = resources.files("jobpulse.v1").joinpath("jobpulse.binpb").read_bytes()
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class DocumentedReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha with comments for jobpulse's own files."""

    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names, pool=descriptor_pool.Default())
        self._files = _documented_files()

    def _answer(self, request: Any, file_name: str) -> reflection_pb2.ServerReflectionResponse | None:
        if file_name not in self._files:
            return None
        wanted: list[str] = []
        todo = [file_name]
        while todo:
            name = todo.pop()
            if name in wanted or name not in self._files:
                continue
            wanted.append(name)
            todo.extend(self._files[name].dependency)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._files[n].SerializeToString() for n in wanted]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._answer(request, filename) or super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            file_name = self._pool.FindFileContainingSymbol(fully_qualified_name).name
        except KeyError:
            file_name = ""
        return self._answer(request, file_name) or super()._file_containing_symbol(
            request, fully_qualified_name
        )
