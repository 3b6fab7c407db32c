"""The committed gRPC stubs must be exactly what `make proto` generates from the contract.

Goal: `server/budgetd/v1/*_pb2*.py[i]` never drift from `protos/budgetd/v1/budget.proto`.
Method: run the same protoc invocation as the Makefile into a temporary directory and
compare every generated file byte for byte with the committed one.
"""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/budgetd/v1/budget.proto"
STUBS = ("budget_pb2.py", "budget_pb2.pyi", "budget_pb2_grpc.py")


def generate(out: Path) -> None:
    """Run protoc exactly as `make proto` does, writing into `out`."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        "protos",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        PROTO,
        f"-I{well_known}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"protoc failed:\n{result.stdout}{result.stderr}"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    produced = sorted(path.name for path in (tmp_path / "budgetd" / "v1").iterdir())
    assert produced == sorted(STUBS), f"protoc now produces {produced}, expected {sorted(STUBS)}"
    stale = []
    for name in STUBS:
        fresh = (tmp_path / "budgetd" / "v1" / name).read_bytes()
        committed_path = ROOT / "server" / "budgetd" / "v1" / name
        committed = committed_path.read_bytes() if committed_path.exists() else b""
        if fresh != committed:
            stale.append(str(committed_path.relative_to(ROOT)))
    assert not stale, (
        f"generated stubs are stale or missing: {', '.join(stale)}; "
        f"run `make proto` after editing {PROTO} and commit the result"
    )
