"""`make proto`: the Python stubs of the contract, for the daemon and for the SDK.

The same protoc output goes to two packages, each committed:

- `server/budgetd/v1/` (the daemon's), exactly as protoc writes it;
- `client/budgetd_client/v1/` (the SDK's, which installs without the daemon), with the
  two places that name the Python module rewritten to `budgetd_client.v1`: the import in
  `budget_pb2_grpc.py` and the module name the classes are built under.

Both copies register the same `budgetd/v1/budget.proto` file in protobuf's default
descriptor pool; an identical file added twice is accepted, so a process may import both
(the daemon does, and the suite does) and gets the same message classes from either.

Beside the daemon's stubs, `server/budgetd/v1/budget.binpb`: the FileDescriptorSet that
`protoc --include_source_info --include_imports` writes (the contract with its comments,
and the well-known files it imports). The daemon serves it through server reflection
(`budgetd.reflection`), so `grpcurl describe` shows the contract's comments; the
descriptors of protobuf's runtime pool carry none.

`python protos/generate.py [--out DIR]` writes under DIR (default: the repository);
tests/unit/test_proto_fresh.py generates into a temporary directory and compares.
"""

from __future__ import annotations

import argparse
import importlib.resources
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = "protos/budgetd/v1/budget.proto"
STUBS = ("budget_pb2.py", "budget_pb2.pyi", "budget_pb2_grpc.py")
# Where each copy goes (relative to the output root) and the Python package it is in.
COPIES = {
    Path("server/budgetd/v1"): "budgetd.v1",
    Path("client/budgetd_client/v1"): "budgetd_client.v1",
}
PROTOC_PACKAGE = "budgetd.v1"  # what protoc names the module after (the proto's path)
# The descriptor set with source info, beside the daemon's stubs only (it serves it).
DESCRIPTOR_SET = Path("server/budgetd/v1/budget.binpb")


def protoc(out: Path, descriptor_set: Path) -> Path:
    """Run protoc into `out`, writing the descriptor set (source info, imports) to
    `descriptor_set`; return the directory holding the generated stubs."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        "protos",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        "--include_source_info",
        "--include_imports",
        f"--descriptor_set_out={descriptor_set}",
        PROTO,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stdout}{result.stderr}")
    return out / "budgetd" / "v1"


def for_package(name: str, text: str, package: str) -> str:
    """The stub `name` as it must read inside `package`."""
    if package == PROTOC_PACKAGE:
        return text
    replacements = {
        "budget_pb2_grpc.py": (
            f"from {PROTOC_PACKAGE} import budget_pb2 as",
            f"from {package} import budget_pb2 as",
        ),
        "budget_pb2.py": (f"'{PROTOC_PACKAGE}.budget_pb2'", f"'{package}.budget_pb2'"),
    }
    if name not in replacements:
        return text
    old, new = replacements[name]
    if text.count(old) != 1:
        raise SystemExit(f"{name}: expected {old!r} once in protoc's output")
    return text.replace(old, new)


def generate(root: Path) -> list[Path]:
    """Write both copies and the descriptor set under `root`; return the files written."""
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        stubs = Path(scratch) / "stubs"
        stubs.mkdir()
        descriptor_set = Path(scratch) / DESCRIPTOR_SET.name
        produced = protoc(stubs, descriptor_set)
        names = sorted(path.name for path in produced.iterdir())
        if names != sorted(STUBS):
            raise SystemExit(f"protoc now produces {names}, expected {sorted(STUBS)}")
        for where, package in COPIES.items():
            target = root / where
            target.mkdir(parents=True, exist_ok=True)
            for name in STUBS:
                text = (produced / name).read_bytes().decode()
                path = target / name
                path.write_bytes(for_package(name, text, package).encode())
                written.append(path)
        path = root / DESCRIPTOR_SET
        path.write_bytes(descriptor_set.read_bytes())
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repo)")
    args = parser.parse_args()
    generate(args.out)


if __name__ == "__main__":
    main()
