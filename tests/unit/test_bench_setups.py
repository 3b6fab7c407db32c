"""The server set-ups bench (`bench/setups.py`): its servers answer, its table reports.

Goal: the comparison of server set-ups measures what it says. Method: start the blocking
thread-pool floor and the asyncio floor as the bench does, make a real call to each over
its Unix socket and compare the answer with the recorded reply bytes; build the table
from a small set of results and check every set-up's row and its ratio to the baseline.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from bench import recording, setups
from bench.processes import Processes
from budgetd.v1 import budget_pb2 as pb


@pytest.mark.parametrize("setup", [setups.SETUPS[1], setups.SETUPS[2]], ids=lambda s: s.name)
def test_a_floor_set_up_answers_with_the_recorded_reply(
    tmp_path: Path, setup: setups.Setup
) -> None:
    reply = pb.ConsumeResponse(cost_known=True, cost_micro_usd=42).SerializeToString()
    replies = tmp_path / "replies.json"
    recording.write_replies({"Consume": reply}, replies)
    processes = Processes()
    try:
        with (
            setups.started(setup, processes, tmp_path, replies) as server,
            grpc.insecure_channel(server.target) as channel,
        ):
            call = channel.unary_unary(
                "/budgetd.v1.BudgetService/Consume",
                request_serializer=pb.ConsumeRequest.SerializeToString,
                response_deserializer=bytes,
            )
            assert call(pb.ConsumeRequest(request_id="r"), timeout=30) == reply
    finally:
        processes.stop_all()


def _result(cpu: float) -> dict[str, float]:
    return {
        "ops_per_s": 1e6 / cpu,
        "p50_us": cpu * 10,
        "p99_us": cpu * 20,
        "server_cpu_us_per_op": cpu,
    }


def test_the_table_has_a_row_per_set_up_and_its_ratio_to_the_baseline() -> None:
    cells = []
    for repetition, scale in enumerate((1.0, 1.2)):
        for setup, cpu in ((setups.BASELINE, 100.0), ("floor: sync, 4 threads", 150.0)):
            for operation in setups.OPERATIONS:
                cell = {"setup": setup, "operation": operation, "repetition": repetition}
                cells.append(cell | {"result": _result(cpu * scale)})
    rows = setups.table(cells)[2:]
    assert len(rows) == 2 * len(setups.OPERATIONS)
    baseline = [r for r in rows if r.startswith(f"| {setups.BASELINE} |")]
    threads = [r for r in rows if r.startswith("| floor: sync, 4 threads |")]
    assert all(r.endswith("| 1.00x |") for r in baseline)
    # Each repetition's ratio is 1.5 whatever the repetition's scale: ratios are per round.
    assert all(r.endswith("| 1.50x |") for r in threads)
    assert all("(150-180)" in r for r in threads)
