"""The committed gRPC stubs and descriptor set must be exactly what `make proto` generates.

Goal: neither copy of the stubs — the daemon's `server/budgetd/v1/` and the SDK's
`client/budgetd_client/v1/` — nor the descriptor set the daemon serves through
reflection (`server/budgetd/v1/budget.binpb`) ever drifts from
`protos/budgetd/v1/budget.proto`. Method: run `protos/generate.py` (what `make proto`
runs) into a temporary directory and compare every generated file byte for byte with the
committed one; then check that the descriptor set carries the contract's comments and
its imports and describes what the stubs describe, that the SDK's copy names only its
own package, and that both copies can live in one process (the daemon imports both) and
give the same message classes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from budgetd.v1 import budget_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/budgetd/v1/budget.proto"
STUBS = ("budget_pb2.py", "budget_pb2.pyi", "budget_pb2_grpc.py")
COPIES = ("server/budgetd/v1", "client/budgetd_client/v1")
DESCRIPTOR_SET = "server/budgetd/v1/budget.binpb"


def generate(out: Path) -> None:
    """Run the generator exactly as `make proto` does, writing under `out`."""
    command = [sys.executable, "protos/generate.py", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"generate failed:\n{result.stdout}{result.stderr}"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = []
    for copy in COPIES:
        produced = sorted(path.name for path in (tmp_path / copy).glob("*.py*"))
        assert produced == sorted(STUBS), f"{copy}: generated {produced}, expected {STUBS}"
        for name in STUBS:
            fresh = (tmp_path / copy / name).read_bytes()
            committed_path = ROOT / copy / name
            committed = committed_path.read_bytes() if committed_path.exists() else b""
            if fresh != committed:
                stale.append(f"{copy}/{name}")
    fresh_set = (tmp_path / DESCRIPTOR_SET).read_bytes()
    committed_set_path = ROOT / DESCRIPTOR_SET
    if not committed_set_path.exists() or committed_set_path.read_bytes() != fresh_set:
        stale.append(DESCRIPTOR_SET)
    assert not stale, (
        f"generated files are stale or missing: {', '.join(stale)}; "
        f"run `make proto` after editing {PROTO} and commit the result"
    )


def test_the_descriptor_set_carries_comments_imports_and_what_the_stubs_describe() -> None:
    """What reflection serves: the contract with its comments, after what it imports."""
    committed = descriptor_pb2.FileDescriptorSet.FromString((ROOT / DESCRIPTOR_SET).read_bytes())
    names = [file.name for file in committed.file]
    assert names == [
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
        "budgetd/v1/budget.proto",
    ]
    contract = committed.file[-1]
    comments = [location.leading_comments for location in contract.source_code_info.location]
    assert any("Would this estimate fit in every matching ledger?" in c for c in comments)
    # Without its source info and the json names protoc adds to a descriptor set, it is
    # the very file the stubs were generated from.
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(contract)
    stripped.ClearField("source_code_info")
    clear_json_names(stripped.message_type)
    from_stubs = descriptor_pb2.FileDescriptorProto()
    budget_pb2.DESCRIPTOR.CopyToProto(from_stubs)
    assert stripped == from_stubs


def clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        clear_json_names(message.nested_type)


def test_the_sdk_copy_names_only_its_own_package() -> None:
    for name in ("budget_pb2.py", "budget_pb2_grpc.py"):
        text = (ROOT / "client/budgetd_client/v1" / name).read_text()
        assert "budgetd.v1.budget_pb2" not in text and "from budgetd.v1" not in text, name
    grpc_stub = (ROOT / "client/budgetd_client/v1/budget_pb2_grpc.py").read_text()
    assert "from budgetd_client.v1 import budget_pb2 as" in grpc_stub


def test_both_copies_load_in_one_process_in_either_order() -> None:
    """Both register budgetd/v1/budget.proto in the default pool: accepted when identical."""
    check = (
        "import importlib, sys\n"
        "first, second = sys.argv[1:]\n"
        "a = importlib.import_module(first + '.budget_pb2')\n"
        "importlib.import_module(first + '.budget_pb2_grpc')\n"
        "b = importlib.import_module(second + '.budget_pb2')\n"
        "importlib.import_module(second + '.budget_pb2_grpc')\n"
        "assert a.Policy is b.Policy and a.DESCRIPTOR is b.DESCRIPTOR\n"
    )
    for order in (("budgetd.v1", "budgetd_client.v1"), ("budgetd_client.v1", "budgetd.v1")):
        result = subprocess.run(
            [sys.executable, "-c", check, *order],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{order}: {result.stderr}"
