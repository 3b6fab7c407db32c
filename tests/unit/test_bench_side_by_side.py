"""The side-by-side bench: its wire encoding, histogram and ratios, and a tiny real run
(budgetd and the floor, two cells, one repetition) whose JSON has the rows and ratios it
should. Nothing about speed is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.histogram import Histogram
from bench.loadgen import Options, Requests
from bench.side_by_side import Cell, Settings, main, order, plan
from budgetd.v1 import budget_pb2 as pb


def test_encoded_requests_parse_as_the_messages_they_stand_for() -> None:
    """bench.wire's bytes parse back to what the protobuf classes would have sent."""
    requests = Requests(
        Options("unix:/x", "batch", 1, 0, 0, 0, batch_size=3, mix=("check", "consume"))
    )
    batch = pb.BatchRequest.FromString(requests.batch())
    assert [op.WhichOneof("operation") for op in batch.operations] == ["check", "consume", "check"]
    consume = batch.operations[1].consume
    assert consume.request_id.startswith(requests.prefix)
    assert set(consume.labels) == {"agent", "thread"}
    assert consume.usage == pb.Usage(
        input_tokens=120, output_tokens=80, model="gpt-4o", latency_us=350_000
    )
    commit = pb.CommitRequest.FromString(requests.commit("res-7"))
    assert commit.reservation_id == "res-7"
    assert commit.actual.input_tokens == 120
    stream = pb.BatchStreamRequest.FromString(requests.batch_stream(300))
    assert stream.sequence == 300
    assert len(stream.batch.operations) == 3
    single = pb.ConsumeStreamRequest.FromString(requests.consume_stream(5))
    assert single.sequence == 5
    assert single.request.labels["agent"].startswith("a")


def test_request_ids_are_unique_and_threads_bounded() -> None:
    requests = Requests(Options("unix:/x", "consume", 1, 0, 0, 0, threads=10))
    ids = {pb.ConsumeRequest.FromString(requests.consume()).request_id for _ in range(100)}
    threads = {pb.CheckRequest.FromString(requests.check()).labels["thread"] for _ in range(100)}
    assert len(ids) == 100
    assert threads == {f"t{i}" for i in range(10)}


def test_histogram_percentiles_fall_within_a_bucket() -> None:
    histogram = Histogram()
    for microseconds in range(1, 1001):
        histogram.record(microseconds * 1000)
    assert histogram.percentile_us(0.5) == pytest.approx(500, rel=0.02)
    assert histogram.percentile_us(0.99) == pytest.approx(990, rel=0.02)
    assert histogram.percentile_us(0.999) == pytest.approx(999, rel=0.02)
    assert Histogram().percentile_us(0.5) == 0.0


def test_cells_rotate_between_repetitions() -> None:
    settings = Settings(cells=[("consume", 64, "uds"), ("check", 1, "uds"), ("redis", 1, "tcp")])
    groups = plan(settings)
    assert groups[2] == [Cell("peer", "redis", 1, "tcp")]
    first, second = order(groups, 0, 2), order(groups, 1, 2)
    assert first[0] == Cell("budgetd", "consume", 64, "uds")
    assert second[0] != first[0]
    assert sorted(map(str, first)) == sorted(map(str, second))


def _cell(system: str, repetition: int, cpu: float, ops: float) -> dict[str, object]:
    figures = {name: 1.0 for name in report.FIGURES}
    figures |= {"server_cpu_us_per_op": cpu, "ops_per_s": ops, "ops": 10}
    return {"system": system, "operation": "consume", "concurrency": 64, "transport": "uds",
            "repetition": repetition, **figures}  # fmt: skip


def test_ratios_are_taken_within_each_repetition() -> None:
    """The median of per-repetition ratios, not the ratio of the medians."""
    cells = [
        _cell("budgetd", 0, 200, 1), _cell("floor", 0, 100, 1),
        _cell("budgetd", 1, 330, 1), _cell("floor", 1, 300, 1),
        _cell("budgetd", 2, 800, 1), _cell("floor", 2, 400, 1),
    ]  # fmt: skip
    budgetd = report.find(report.rows(cells), "budgetd", "consume", 64, "uds")
    assert budgetd is not None
    cpu = budgetd.vs_floor["cpu_per_op"]
    assert (cpu.median, cpu.low, cpu.high) == (2.0, 1.1, 2.0)
    assert budgetd.figures["server_cpu_us_per_op"].median == 330


def test_a_tiny_run_reports_rows_and_ratios(tmp_path: Path) -> None:
    argv = ["--cells", "consume:64:uds,check:1:tcp", "--repetitions", "1",
            "--duration", "0.3", "--warmup", "0.2", "--systems", "budgetd,floor",
            "--threads", "50", "--subscribers", "0", "--million-ledgers", "0",
            "--embedded", "none", "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((tmp_path / "side-by-side.json").read_text(encoding="utf-8"))
    rows = {
        (r["system"], r["operation"], r["concurrency"], r["transport"]): r for r in document["rows"]
    }
    assert set(rows) == {
        (system, op, c, t)
        for system in ("budgetd", "floor")
        for op, c, t in (("consume", 64, "uds"), ("check", 1, "tcp"))
    }
    for key, row in rows.items():
        assert row["repetitions"] == 1, (key, row)
        assert row["errors"] == 0, key
        assert row["figures"]["ops_per_s"]["median"] > 0
    for op, c, t in (("consume", 64, "uds"), ("check", 1, "tcp")):
        ratios = rows[("budgetd", op, c, t)]["vs_floor"]
        assert set(ratios) == {"cpu_per_op", "p50", "p999", "ops_per_s"}
        assert rows[("floor", op, c, t)]["vs_floor"] == {}
    names = {t["name"]: t for t in document["targets"]}
    assert names["Consume server CPU/call, c=64 uds, vs floor"]["measured"] is not None
    assert "Check p50, c=1 uds, vs floor" not in names  # its cell was not part of the run
    assert (
        (tmp_path / "side-by-side.md")
        .read_text(encoding="utf-8")
        .startswith("# budgetd side by side")
    )
