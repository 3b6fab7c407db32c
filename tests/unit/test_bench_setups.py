"""The server set-ups bench (`bench/setups.py`): its servers answer with the recorded
bytes, its options are budgetd's with the set-up's changes, its cells rotate, and its
report has a row per set-up with ratios taken within each repetition. Nothing about
speed is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from bench import floor, recording, setups
from bench.processes import Processes
from budgetd.server import MAX_UNARY_IN_FLIGHT, ConnectionLimits, server_options
from budgetd.v1 import budget_pb2 as pb

REPLY = pb.ConsumeResponse(cost_known=True, cost_micro_usd=42).SerializeToString()
CONSUME = "/budgetd.v1.BudgetService/Consume"


def _consume(target: str) -> bytes:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            CONSUME,
            request_serializer=pb.ConsumeRequest.SerializeToString,
            response_deserializer=None,
        )
        answer: bytes = call(pb.ConsumeRequest(request_id="r"), timeout=30)
        return answer


def test_the_sync_floor_answers_a_real_call_with_the_recorded_bytes(tmp_path: Path) -> None:
    server = setups.sync_server({"Consume": REPLY}, tmp_path / "s.sock", workers=2)
    try:
        assert _consume(f"unix:{tmp_path / 's.sock'}") == REPLY
    finally:
        server.stop(None).wait()


def test_a_floor_process_on_asyncio_with_an_option_answers_and_says_its_loop(
    tmp_path: Path,
) -> None:
    replies = tmp_path / "replies.json"
    recording.write_replies({"Consume": REPLY}, replies)
    processes = Processes()
    try:
        server = setups.start_floor(processes, tmp_path, setups.BY_NAME["aio-asyncio"], replies)
        assert server.loop == "asyncio"
        assert _consume(server.target) == REPLY
    finally:
        processes.stop_all()


def test_options_are_budgetds_with_the_set_ups_changes() -> None:
    budgetd = dict(server_options(floor.MAX_MESSAGE_BYTES, ConnectionLimits()))
    assert dict(setups.options_for(())) == budgetd
    changed = setups.options_for((("grpc.so_reuseport", 1), ("grpc.http2.bdp_probe", 0)))
    assert [name for name, _ in changed].count("grpc.so_reuseport") == 1
    assert dict(changed) == budgetd | {"grpc.so_reuseport": 1, "grpc.http2.bdp_probe": 0}
    assert setups.max_rpcs(False) is None
    assert setups.max_rpcs(True) == ConnectionLimits().max_streams_total + MAX_UNARY_IN_FLIGHT


def test_every_cell_runs_once_a_repetition_in_a_rotated_order() -> None:
    cells = setups.plan(setups.Settings())
    assert len(cells) == sum(len(s.operations) for s in setups.SETUPS)
    first, second = setups.order(cells, 0, 3), setups.order(cells, 1, 3)
    assert first[0] != second[0]
    assert sorted(map(str, first)) == sorted(map(str, second))


def _cell(setup: str, operation: str, repetition: int, cpu: float) -> dict[str, Any]:
    return {
        "setup": setup,
        "operation": operation,
        "repetition": repetition,
        "ops_per_s": 1e6 / cpu,
        "p50_us": cpu * 10,
        "p99_us": cpu * 20,
        "server_cpu_us_per_op": cpu,
        "own_busy": 0.5,
        "others_busy": 0.1,
        "errors": 0,
    }


def test_the_report_has_every_set_up_and_ratios_per_repetition() -> None:
    """Each set-up costs its index + 1 times the baseline in every repetition, while the
    repetitions' scale differs: every ratio is exact because it is taken per repetition."""
    cells = [
        _cell(s.name, operation, repetition, 100.0 * scale * (index + 1))
        for repetition, scale in enumerate((1.0, 1.3))
        for index, s in enumerate(setups.SETUPS)
        for operation in s.operations
    ]
    rows = setups.rows(cells)
    assert [(r.setup, r.operation) for r in rows] == [
        (s.name, op) for s in setups.SETUPS for op in setups.BOTH if op in s.operations
    ]
    index = {s.name: i + 1 for i, s in enumerate(setups.SETUPS)}
    for row in rows:
        if row.setup == setups.BASELINE:
            assert row.reference == "" and row.ratios == {}
            continue
        expected = index[row.setup] / index[row.reference]
        median, low, high = row.ratios["server_cpu_us_per_op"]
        assert abs(median - expected) < 1e-9 and abs(high - low) < 1e-9
    document = {
        "meta": {
            "grpc": "x",
            "uvloop": "y",
            "python": "3",
            "machine": "m",
            "cpus": 2,
            "core": "compiled",
            "seconds": 60,
            "settings": {"warmup": 0.5, "duration": 2.0, "repetitions": 2},
        },
        "cells": cells,
    }
    text = setups.markdown(document)
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == len(rows)
    for s in setups.SETUPS:
        assert any(line.startswith(f"| `{s.name}`: {s.title} |") for line in table)
    assert "| `budgetd-asyncio`: budgetd --loop asyncio | consume |" in text
    assert len(document["rows"]) == len(rows)
