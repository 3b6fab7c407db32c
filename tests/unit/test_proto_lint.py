"""The contract passes `buf lint` (STANDARD rules) and documents every element.

Goal: `protos/budgetd/v1/budget.proto` stays lint-clean and self-explanatory for client
authors in any language. Method: run buf from the repo root (installed by `npm ci`; it
fails, never skips, when missing), then compile the proto with source info and check that
every message, field, oneof, enum, enum value (except `*_UNSPECIFIED`), service and rpc
carries a leading comment.
"""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/budgetd/v1/budget.proto"

# Field numbers of descriptor.proto, used to build SourceCodeInfo location paths.
FILE_MESSAGE_TYPE = 4
FILE_ENUM_TYPE = 5
FILE_SERVICE = 6
MESSAGE_FIELD = 2
MESSAGE_NESTED_TYPE = 3
MESSAGE_ENUM_TYPE = 4
MESSAGE_ONEOF_DECL = 8
ENUM_VALUE = 2
SERVICE_METHOD = 2


def test_buf_lint_passes() -> None:
    npx = shutil.which("npx")
    if npx is None or not (ROOT / "node_modules" / ".bin" / "buf").exists():
        pytest.fail("buf is not installed: run `npm ci` (or `make setup`) in the repo root")
    result = subprocess.run(
        [npx, "--no-install", "buf", "lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"


def load_descriptor(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compile the contract with source info (comments) and return its descriptor."""
    out = tmp_path / "budget.binpb"
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        "protos",
        f"-I{well_known}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        PROTO,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"protoc failed:\n{result.stdout}{result.stderr}"
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(descriptor_set.file) == 1
    return descriptor_set.file[0]


def documented_elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> list[tuple[str, tuple[int, ...]]]:
    """Every element that must carry a comment, as (full name, location path)."""
    elements: list[tuple[str, tuple[int, ...]]] = []

    def add_enum(
        enum: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...]
    ) -> None:
        elements.append((f"{scope}.{enum.name}", path))
        for index, value in enumerate(enum.value):
            if not value.name.endswith("_UNSPECIFIED"):
                elements.append((f"{scope}.{enum.name}.{value.name}", (*path, ENUM_VALUE, index)))

    def add_message(
        message: descriptor_pb2.DescriptorProto, scope: str, path: tuple[int, ...]
    ) -> None:
        if message.options.map_entry:
            return
        name = f"{scope}.{message.name}"
        elements.append((name, path))
        for index, field in enumerate(message.field):
            elements.append((f"{name}.{field.name}", (*path, MESSAGE_FIELD, index)))
        for index, oneof in enumerate(message.oneof_decl):
            if not oneof.name.startswith("_"):  # synthetic oneof of a proto3 `optional`
                elements.append((f"{name}.{oneof.name}", (*path, MESSAGE_ONEOF_DECL, index)))
        for index, nested in enumerate(message.nested_type):
            add_message(nested, name, (*path, MESSAGE_NESTED_TYPE, index))
        for index, enum in enumerate(message.enum_type):
            add_enum(enum, name, (*path, MESSAGE_ENUM_TYPE, index))

    for index, message in enumerate(file.message_type):
        add_message(message, file.package, (FILE_MESSAGE_TYPE, index))
    for index, enum in enumerate(file.enum_type):
        add_enum(enum, file.package, (FILE_ENUM_TYPE, index))
    for index, service in enumerate(file.service):
        name = f"{file.package}.{service.name}"
        elements.append((name, (FILE_SERVICE, index)))
        for method_index, method in enumerate(service.method):
            elements.append(
                (f"{name}.{method.name}", (FILE_SERVICE, index, SERVICE_METHOD, method_index))
            )
    return elements


def test_every_element_has_a_leading_comment(tmp_path: Path) -> None:
    file = load_descriptor(tmp_path)
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
    }
    elements = documented_elements(file)
    assert len(elements) > 100, "the walk over the descriptor found too few elements"
    undocumented = [name for name, path in elements if not comments.get(path)]
    assert not undocumented, (
        f"{PROTO}: add a leading comment (units, default, limits, meaning of empty) to: "
        + ", ".join(undocumented)
    )
