"""gRPC server reflection (v1 and v1alpha) that serves the contract with its comments.

The stock servicer (grpc_reflection) builds each file from protobuf's runtime pool, whose
descriptors carry no source info: `grpcurl describe` would show no comment. This one
serves the FileDescriptorSet that `make proto` commits (`budgetd/v1/budget.binpb`,
written by `protoc --include_source_info --include_imports`): budget.proto with every
comment, and the well-known files it imports. The health and reflection protos, which
are not ours, come from the runtime pool (without comments), and v1's file is v1alpha's
under the v1 package: the two versions' messages are the same, field for field.

Answers follow grpc-go's reference server: a file comes with those of its transitive
dependencies not yet sent on the stream; an unknown file, symbol or extension is an
error_response NOT_FOUND; a request without a known kind is INVALID_ARGUMENT.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "budget.binpb"  # in the budgetd.v1 package, beside the stubs
V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1ALPHA_SERVICE, V1_SERVICE)
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"

FileProto = descriptor_pb2.FileDescriptorProto


def contract_files() -> list[FileProto]:
    """The committed descriptor set: the contract (with source info) and its imports,
    each after the files it depends on."""
    data = importlib.resources.files("budgetd.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def runtime_file(descriptor: FileDescriptor) -> FileProto:
    """A file of protobuf's runtime pool, as a proto (no source info)."""
    proto = FileProto()
    descriptor.CopyToProto(proto)
    return proto


def v1_reflection_file() -> FileProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file under the v1 package."""
    proto = runtime_file(reflection_pb2.DESCRIPTOR)
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name[len(old) :]
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    return proto


def served_files() -> list[FileProto]:
    """Every file the daemon's reflection serves, each after its dependencies."""
    return [
        *contract_files(),
        runtime_file(health_pb2.DESCRIPTOR),
        runtime_file(reflection_pb2.DESCRIPTOR),
        v1_reflection_file(),
    ]


class Index:
    """Files by name and by the symbols and extensions they define."""

    def __init__(self, files: Sequence[FileProto]) -> None:
        self.serialized: dict[str, bytes] = {}
        self.dependencies: dict[str, tuple[str, ...]] = {}
        self.by_symbol: dict[str, str] = {}
        self.extensions: dict[str, dict[int, str]] = {}  # extendee -> number -> file
        self.messages: set[str] = set()
        for file in files:
            if file.name in self.serialized:
                raise ValueError(f"{file.name} is given twice")
            missing = [name for name in file.dependency if name not in self.serialized]
            if missing:
                raise ValueError(f"{file.name} comes before its dependencies {missing}")
            self.serialized[file.name] = file.SerializeToString(deterministic=True)
            self.dependencies[file.name] = tuple(file.dependency)
            self._add_file(file)

    def _symbol(self, name: str, file: str) -> None:
        self.by_symbol.setdefault(name, file)

    def _add_file(self, file: FileProto) -> None:
        scope = file.package
        for message in file.message_type:
            self._add_message(message, scope, file.name)
        for enum in file.enum_type:
            self._add_enum(enum, scope, file.name)
        for extension in file.extension:
            self._add_extension(extension, scope, file.name)
        for service in file.service:
            name = _join(scope, service.name)
            self._symbol(name, file.name)
            for method in service.method:
                self._symbol(_join(name, method.name), file.name)

    def _add_message(self, message: descriptor_pb2.DescriptorProto, scope: str, file: str) -> None:
        name = _join(scope, message.name)
        self._symbol(name, file)
        self.messages.add(name)
        for field in message.field:
            self._symbol(_join(name, field.name), file)
        for oneof in message.oneof_decl:
            self._symbol(_join(name, oneof.name), file)
        for nested in message.nested_type:
            self._add_message(nested, name, file)
        for enum in message.enum_type:
            self._add_enum(enum, name, file)
        for extension in message.extension:
            self._add_extension(extension, name, file)

    def _add_enum(self, enum: descriptor_pb2.EnumDescriptorProto, scope: str, file: str) -> None:
        self._symbol(_join(scope, enum.name), file)
        for value in enum.value:  # enum values are siblings of their enum (C++ scoping)
            self._symbol(_join(scope, value.name), file)

    def _add_extension(
        self, extension: descriptor_pb2.FieldDescriptorProto, scope: str, file: str
    ) -> None:
        self._symbol(_join(scope, extension.name), file)
        extendee = extension.extendee.removeprefix(".")
        self.extensions.setdefault(extendee, {})[extension.number] = file

    def with_dependencies(self, name: str, sent: set[str]) -> list[bytes]:
        """`name` and those of its transitive dependencies not in `sent` (then added)."""
        order: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in order or (current != name and current in sent):
                continue
            order.append(current)
            pending.extend(reversed(self.dependencies[current]))
        sent.update(order)
        return [self.serialized[file] for file in order]


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


class ServerReflection:
    """The ServerReflectionInfo stream of both reflection versions, over one index."""

    def __init__(self, service_names: Iterable[str], files: Sequence[FileProto]) -> None:
        self.service_names = tuple(sorted(set(service_names)))
        self.index = Index(files)

    async def ServerReflectionInfo(  # noqa: N802 (the contract's RPC name)
        self,
        requests: AsyncIterator[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[
            reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
        ],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        sent: set[str] = set()
        async for request in requests:
            yield self.answer(request, sent)

    def answer(
        self, request: reflection_pb2.ServerReflectionRequest, sent: set[str]
    ) -> reflection_pb2.ServerReflectionResponse:
        """The response to one request of a stream that has already been sent `sent`."""
        response = reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request
        )
        index = self.index
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            services = [reflection_pb2.ServiceResponse(name=n) for n in self.service_names]
            response.list_services_response.service.extend(services)
            return response
        file: str | None = None
        if kind == "file_by_filename":
            wanted = request.file_by_filename
            file = wanted if wanted in index.serialized else None
            missing = f"no file {wanted!r}"
        elif kind == "file_containing_symbol":
            wanted = request.file_containing_symbol
            file = index.by_symbol.get(wanted)
            missing = f"no symbol {wanted!r}"
        elif kind == "file_containing_extension":
            wanted = request.file_containing_extension.containing_type
            number = request.file_containing_extension.extension_number
            file = index.extensions.get(wanted, {}).get(number)
            missing = f"no extension {number} of {wanted!r}"
        elif kind == "all_extension_numbers_of_type":
            wanted = request.all_extension_numbers_of_type
            if wanted not in index.messages:
                return _error(response, grpc.StatusCode.NOT_FOUND, f"no message {wanted!r}")
            numbers = sorted(index.extensions.get(wanted, {}))
            response.all_extension_numbers_response.base_type_name = wanted
            response.all_extension_numbers_response.extension_number.extend(numbers)
            return response
        else:
            return _error(response, grpc.StatusCode.INVALID_ARGUMENT, "no request kind set")
        if file is None:
            return _error(response, grpc.StatusCode.NOT_FOUND, missing)
        protos = index.with_dependencies(file, sent)
        response.file_descriptor_response.file_descriptor_proto.extend(protos)
        return response


def _error(
    response: reflection_pb2.ServerReflectionResponse, code: grpc.StatusCode, message: str
) -> reflection_pb2.ServerReflectionResponse:
    response.error_response.error_code = code.value[0]
    response.error_response.error_message = message
    return response


def add_to_server(server: grpc.aio.Server, service_names: Iterable[str]) -> ServerReflection:
    """Serve reflection v1alpha and v1 on `server`, listing `service_names` and both
    reflection services."""
    servicer = ServerReflection((*service_names, *SERVICE_NAMES), served_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # v1 has the same messages as v1alpha: only the service's name differs on the wire.
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
    return servicer
