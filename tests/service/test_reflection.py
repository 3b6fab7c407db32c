"""Server reflection serves the contract with its comments, in v1alpha and in v1.

Goal: a generic tool (grpcurl, grpcui, Postman) that learns the contract through
reflection sees what the .proto says, comments included, and can build every served
file. Method: speak the reflection protocol to a real in-process server over its Unix
socket, both versions (v1 with v1alpha's messages: they are the same on the wire), and
check the answers: the files with source info and their dependencies once per stream,
every symbol of the contract resolvable, the services listed, and the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionRequest as Request
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionResponse as Response

from budgetd.v1 import budget_pb2
from tests.service.support import Served

Ask = Callable[[list[Request]], list[Response]]

CONTRACT = "budgetd/v1/budget.proto"
CHECK_COMMENT = "Would this estimate fit in every matching ledger? Changes nothing."
FILE_SERVICE, SERVICE_METHOD = 6, 2  # field numbers of descriptor.proto (location paths)
LISTED = [
    "budgetd.v1.BudgetAdminService",
    "budgetd.v1.BudgetService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
]


@pytest.fixture(params=["v1alpha", "v1"])
def ask(request: pytest.FixtureRequest, served: Served) -> Iterator[Ask]:
    """Send requests on one reflection stream of the given version; all the answers."""
    if request.param == "v1alpha":
        stream = reflection_pb2_grpc.ServerReflectionStub(served.channel).ServerReflectionInfo
    else:
        stream = served.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )

    def send(requests: list[Request]) -> list[Response]:
        return list(stream(iter(requests), timeout=30))

    yield send


def files_of(response: Response) -> list[descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]


def leading_comment(file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
    for location in file.source_code_info.location:
        if tuple(location.path) == path:
            return str(location.leading_comments.strip())
    raise AssertionError(f"no location {path} in {file.name}")


def test_a_method_comes_with_its_comment_and_the_imports_once_per_stream(ask: Ask) -> None:
    symbol = Request(file_containing_symbol="budgetd.v1.BudgetService.Check", host="h")
    first, again = ask([symbol, symbol])
    assert first.valid_host == "h" and first.original_request == symbol
    files = files_of(first)
    assert [f.name for f in files] == [
        CONTRACT,
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
    ]
    contract = files[0]
    service = [s.name for s in contract.service].index("BudgetService")
    method = [m.name for m in contract.service[service].method].index("Check")
    path = (FILE_SERVICE, service, SERVICE_METHOD, method)
    assert leading_comment(contract, path) == CHECK_COMMENT
    assert all(f.source_code_info.location for f in files), "every file has its comments"
    # The same stream has the imports already: only the asked-for file comes again.
    assert [f.name for f in files_of(again)] == [CONTRACT]


def test_every_symbol_of_the_contract_resolves_to_it(ask: Ask) -> None:
    file = budget_pb2.DESCRIPTOR
    symbols = [*file.message_types_by_name.values(), *file.enum_types_by_name.values()]
    names = [d.full_name for d in symbols]
    for message in file.message_types_by_name.values():
        names.extend(field.full_name for field in message.fields)
        names.extend(nested.full_name for nested in message.nested_types)
        names.extend(enum.full_name for enum in message.enum_types)
    for enum in file.enum_types_by_name.values():
        names.extend(f"{file.package}.{value.name}" for value in enum.values)
    for service in file.services_by_name.values():
        names.append(service.full_name)
        names.extend(method.full_name for method in service.methods)
    assert len(names) > 300
    answers = ask([Request(file_containing_symbol=name) for name in names])
    unresolved = [
        name
        for name, answer in zip(names, answers, strict=True)
        if answer.WhichOneof("message_response") != "file_descriptor_response"
        or files_of(answer)[0].name != CONTRACT
    ]
    assert not unresolved


def test_the_files_of_every_listed_service_build_one_pool(ask: Ask) -> None:
    """What a client does with the answers: every listed service's file, resolvable."""
    (listed,) = ask([Request(list_services="")])
    names = [service.name for service in listed.list_services_response.service]
    assert names == LISTED
    answers = ask([Request(file_containing_symbol=name) for name in names])
    received = {file.name: file for answer in answers for file in files_of(answer)}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:  # dependencies first; each file once
        if name not in added:
            for dependency in received[name].dependency:
                add(dependency)
            pool.Add(received[name])
            added.add(name)

    for name in received:
        add(name)
    for name in names:
        service = pool.FindServiceByName(name)
        assert service.methods, name
    v1 = pool.FindServiceByName("grpc.reflection.v1.ServerReflection")
    method = v1.methods_by_name["ServerReflectionInfo"]
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"
    assert [f.name for f in method.input_type.fields] == [
        f.name for f in Request.DESCRIPTOR.fields
    ], "v1's messages are v1alpha's, field for field"


def test_files_by_name(ask: Ask) -> None:
    wanted = [
        CONTRACT,
        "google/protobuf/timestamp.proto",
        "grpc_health/v1/health.proto",
        "grpc_reflection/v1alpha/reflection.proto",
        "grpc/reflection/v1/reflection.proto",
    ]
    answers = ask([Request(file_by_filename=name) for name in wanted])
    assert [files_of(answer)[0].name for answer in answers] == wanted
    contract = files_of(answers[0])[0]
    assert contract.package == "budgetd.v1" and contract.source_code_info.location


def test_unknown_names_are_not_found_and_an_empty_request_is_invalid(ask: Ask) -> None:
    extension = reflection_pb2.ExtensionRequest(
        containing_type="budgetd.v1.Usage", extension_number=100
    )
    requests = [
        Request(file_by_filename="budgetd/v1/nope.proto"),
        Request(file_containing_symbol="budgetd.v1.Nope"),
        Request(file_containing_extension=extension),
        Request(all_extension_numbers_of_type="budgetd.v1.Nope"),
        Request(host="only-a-host"),
    ]
    answers = ask(requests)
    codes = [answer.error_response.error_code for answer in answers]
    not_found, invalid = grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.INVALID_ARGUMENT
    assert codes == [not_found] * 4 + [invalid.value[0]]
    assert "budgetd.v1.Nope" in answers[1].error_response.error_message
    assert [answer.original_request for answer in answers] == requests


def test_a_message_without_extensions_has_none(ask: Ask) -> None:
    (answer,) = ask([Request(all_extension_numbers_of_type="budgetd.v1.Usage")])
    numbers = answer.all_extension_numbers_response
    assert numbers.base_type_name == "budgetd.v1.Usage"
    assert list(numbers.extension_number) == []
