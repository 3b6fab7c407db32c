"""The committed gRPC stubs must be exactly what `make proto` generates from the contract.

Goal: neither copy of the stubs — the daemon's `server/budgetd/v1/` and the SDK's
`client/budgetd_client/v1/` — ever drifts from `protos/budgetd/v1/budget.proto`.
Method: run `protos/generate.py` (what `make proto` runs) into a temporary directory and
compare every generated file of both copies byte for byte with the committed one; then
check that the SDK's copy names only its own package, and that both copies can live in
one process (the daemon imports both) and give the same message classes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/budgetd/v1/budget.proto"
STUBS = ("budget_pb2.py", "budget_pb2.pyi", "budget_pb2_grpc.py")
COPIES = ("server/budgetd/v1", "client/budgetd_client/v1")


def generate(out: Path) -> None:
    """Run the generator exactly as `make proto` does, writing under `out`."""
    command = [sys.executable, "protos/generate.py", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"generate failed:\n{result.stdout}{result.stderr}"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = []
    for copy in COPIES:
        produced = sorted(path.name for path in (tmp_path / copy).iterdir())
        assert produced == sorted(STUBS), f"{copy}: generated {produced}, expected {STUBS}"
        for name in STUBS:
            fresh = (tmp_path / copy / name).read_bytes()
            committed_path = ROOT / copy / name
            committed = committed_path.read_bytes() if committed_path.exists() else b""
            if fresh != committed:
                stale.append(f"{copy}/{name}")
    assert not stale, (
        f"generated stubs are stale or missing: {', '.join(stale)}; "
        f"run `make proto` after editing {PROTO} and commit the result"
    )


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
