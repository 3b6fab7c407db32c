"""Durability of the real daemon: kill -9 under load, clean stops, damaged files, a full disk.

Goal: every mutation the daemon acknowledged survives `kill -9`, exactly once; nothing
unacknowledged is counted twice when a client retries it; hard caps still hold; a clean
stop leaves one snapshot and an empty journal; damage is cut, fallen back from, or
refused — never silently half-applied; a disk that cannot take the journal refuses
mutations with UNAVAILABLE until it can again.
Method: real daemon processes on a state directory in tmp_path; client processes
(`tests.e2e.load_client`) that log every answer they got; the daemon killed at a
random moment (seeded, printed) chosen by how many answers the clients have logged.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from budgetd.persistence import snapshot
from budgetd.persistence.frames import read_frames
from budgetd.v1 import budget_pb2 as pb
from tests.e2e.support import REPO, WAIT_S, Daemon, whole_lines

ROUNDS = int(os.environ.get("BUDGETD_KILL_ROUNDS", "20"))
CLIENTS = 3
OPS = 60
CAP = 40_000
CONFIG = f"""
[[policies]]
name = "per-user"
per = ["user"]

[[policies]]
name = "tenant-cap"
per = ["tenant"]
caps = {{ total_tokens = {CAP} }}

[[policies]]
name = "one-run-per-user"
per = ["user"]
caps = {{ concurrency = 1 }}
"""


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def configured_home(tmp_path: Path) -> Path:
    """A daemon's home: its config file (CONFIG), its socket and its state directory."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "budgetd.toml").write_text(CONFIG)
    return home


def launch(daemons: list[Daemon], home: Path, *args: str) -> Daemon:
    daemon = Daemon(home, ("--config", str(home / "budgetd.toml"), *args))
    daemons.append(daemon)
    return daemon.start()


def log_lines(paths: list[Path]) -> list[dict[str, object]]:
    lines = []
    for path in paths:
        if path.exists():
            lines += [json.loads(line) for line in whole_lines(path)]
    return lines


def wait_until_logged(
    paths: list[Path], count: int, clients: list[subprocess.Popen[bytes]]
) -> None:
    """Until the clients have logged `count` answers (or all have finished)."""
    pause = threading.Event()
    for _ in range(int(WAIT_S / 0.005)):
        if len(log_lines(paths)) >= count or all(c.poll() is not None for c in clients):
            return
        pause.wait(0.005)
    raise AssertionError(f"the clients logged fewer than {count} answers in {WAIT_S} s")


def ledger(daemon: Daemon, key: str) -> pb.LedgerStatus | None:
    try:
        answer = daemon.budget().GetLedger(pb.GetLedgerRequest(key=key), timeout=WAIT_S)
        return answer.ledger  # type: ignore[no-any-return]
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return None


def tokens_of(daemon: Daemon, key: str) -> int:
    status = ledger(daemon, key)
    return 0 if status is None else status.totals.total_tokens


def capped_use(daemon: Daemon, key: str, dimension: int) -> tuple[int, int]:
    """(used, reserved) of one capped dimension of a ledger."""
    status = ledger(daemon, key)
    if status is None:
        return 0, 0
    (found,) = [d for d in status.dimensions if d.dimension == dimension]
    return found.used, found.reserved


def test_kill_9_under_load_loses_no_acknowledged_mutation(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    seed = int(os.environ.get("BUDGETD_KILL_SEED", random.randrange(1 << 30)))
    print(f"kill -9 rounds: {ROUNDS}, seed {seed} (BUDGETD_KILL_SEED={seed} repeats them)")
    rng = random.Random(seed)
    home = configured_home(tmp_path)
    daemon = launch(daemons, home, "--tick", "0.05", "--snapshot-seconds", "0.3")
    logs: list[Path] = []
    for round_number in range(ROUNDS):
        paths = [tmp_path / f"r{round_number}-c{c}.log" for c in range(CLIENTS)]
        logs += paths
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.e2e.load_client",
                    daemon.unix_target,
                    str(seed + round_number),
                    str(c),
                    str(OPS),
                    str(path),
                ],
                cwd=REPO,
            )
            for c, path in enumerate(paths)
        ]
        wait_until_logged(paths, rng.randint(1, CLIENTS * OPS - 1), clients)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.kill()
        daemon = launch(daemons, home, "--tick", "0.05", "--snapshot-seconds", "0.3")
        for client in clients:
            assert client.wait(timeout=WAIT_S * 2) == 0
        _check_acknowledged(daemon, logs, f"round {round_number}, seed {seed}")


def _check_acknowledged(daemon: Daemon, logs: list[Path], where: str) -> None:
    lines = log_lines(logs)
    rids = Counter(str(line["rid"]) for line in lines if line["rid"])
    assert max(rids.values()) == 1, f"{where}: an answer logged twice"
    expected: Counter[str] = Counter()
    for line in lines:
        if line["op"] in ("consume", "commit"):
            user = str(line["rid"]).split("-")[1].replace("c", "u")
            expected[user] += int(str(line["tokens"]))
    for user, tokens in expected.items():
        used = tokens_of(daemon, f"per-user{{user={user}}}")
        assert used == tokens, f"{where}: {user} has {used} tokens, the clients were told {tokens}"
    # Every run the clients closed is closed: no slot leaked, none freed twice.
    for user in expected:
        key = f"one-run-per-user{{user={user}}}"
        assert capped_use(daemon, key, pb.DIMENSION_CONCURRENCY) == (0, 0), f"{where}: {key}"
    # Consume may pass the cap (usage is a fact); holds alone never do.
    used, reserved = capped_use(daemon, "tenant-cap{tenant=t}", pb.DIMENSION_TOTAL_TOKENS)
    consumed = sum(int(str(line["tokens"])) for line in lines if line["op"] == "consume")
    assert used - consumed <= CAP and reserved == 0, f"{where}: tenant-cap"


def test_sigterm_leaves_one_final_snapshot_and_an_empty_journal(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = configured_home(tmp_path)
    daemon = launch(daemons, home)
    daemon.budget().Consume(
        pb.ConsumeRequest(request_id="c1", labels={"user": "ann"}, usage=pb.Usage(input_tokens=7))
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    final = daemon.wait_for("final snapshot")
    state = home / "state"
    assert [p.name for p in sorted(state.glob("journal-*.log"))] == []
    newest = snapshot.load(Path(str(final["path"])))
    assert newest.lsn == final["lsn"] and newest.lsn >= 1
    again = launch(daemons, home)
    assert again.wait_for("recovered")["replayed"] == 0
    assert tokens_of(again, "per-user{user=ann}") == 7
    # A retry of the request acknowledged before the stop is answered, not applied again.
    retry = again.budget().Consume(
        pb.ConsumeRequest(request_id="c1", labels={"user": "ann"}, usage=pb.Usage(input_tokens=7))
    )
    assert retry.replayed
    assert tokens_of(again, "per-user{user=ann}") == 7


def consume_request(rid: str, tokens: int, user: str = "ann") -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=rid, labels={"user": user}, usage=pb.Usage(input_tokens=tokens)
    )


def crashed_with_records(daemons: list[Daemon], home: Path, count: int) -> Daemon:
    """A daemon that took `count` consumes of 10 tokens (c1..) and was killed -9."""
    configured_home(home.parent)
    daemon = launch(daemons, home)
    for number in range(1, count + 1):
        daemon.budget().Consume(consume_request(f"c{number}", 10))
    daemon.kill()
    return daemon


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def journal_frames(state: Path) -> list[tuple[Path, int]]:
    """(segment, payload offset) of every journal record, oldest first."""
    found = []
    for path in sorted(state.glob("journal-*.log")):
        data, offset = path.read_bytes(), 0
        payloads, damage = read_frames(data)
        assert damage is None
        for payload in payloads:
            found.append((path, offset + 12))
            offset += 12 + len(payload)
    return found


def test_a_torn_journal_tail_is_cut_with_a_warning(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "home"
    crashed_with_records(daemons, home, 3)
    (segment, _) = journal_frames(home / "state")[-1]
    with open(segment, "r+b") as handle:  # the last record half written
        handle.truncate(segment.stat().st_size - 5)
    daemon = launch(daemons, home)
    torn = daemon.wait_for("journal tail torn; cut")
    assert torn["path"] == str(segment) and torn["level"] == "warning"
    assert daemon.wait_for("recovered")["replayed"] == 2
    assert tokens_of(daemon, "per-user{user=ann}") == 20


def test_a_bad_record_with_good_ones_after_it_stops_the_start(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    crashed_with_records(daemons, home, 3)
    segment, offset = journal_frames(home / "state")[1]  # the middle record
    flip_bit(segment, offset + 3)
    daemon = Daemon(home, ("--config", str(home / "budgetd.toml")))
    daemons.append(daemon)
    assert daemon.wait() == 2
    failure = daemon.wait_for("cannot start")
    assert segment.name in failure["reason"] and "records follow it" in failure["reason"]


def test_a_corrupt_snapshot_falls_back_to_the_previous_one_without_loss(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = configured_home(tmp_path)
    daemon = launch(daemons, home)
    daemon.budget().Consume(consume_request("c1", 10))
    newest = Path(daemon.admin().Snapshot(pb.SnapshotRequest()).path)
    daemon.budget().Consume(consume_request("c2", 10))
    daemon.kill()
    flip_bit(newest, newest.stat().st_size - 20)
    again = launch(daemons, home)
    corrupt = again.wait_for("SNAPSHOT CORRUPT; falling back to the previous one")
    assert corrupt["level"] == "error" and corrupt["path"] == str(newest)
    assert again.wait_for("recovered")["snapshot"] != newest.name
    assert tokens_of(again, "per-user{user=ann}") == 20  # the journal reaches back far enough


def test_no_usable_snapshot_stops_the_start(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "home"
    crashed_with_records(daemons, home, 1)
    for path in (home / "state").glob("snapshot-*.snap"):
        flip_bit(path, 30)
    daemon = Daemon(home, ("--config", str(home / "budgetd.toml")))
    daemons.append(daemon)
    assert daemon.wait() == 2
    assert "no usable snapshot" in daemon.wait_for("cannot start")["reason"]
    assert not daemon.socket.exists()  # nothing half-started is left behind


def test_an_unusable_or_shared_state_directory_stops_the_start_with_code_2(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = configured_home(tmp_path)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    daemon = Daemon(home, ("--state-dir", str(not_a_dir)))
    daemons.append(daemon)
    assert daemon.wait() == 2
    assert str(not_a_dir) in daemon.wait_for("cannot start")["reason"]
    first = launch(daemons, home)
    second = Daemon(home / "other", ("--state-dir", str(home / "state")), socket=None)
    daemons.append(second)
    assert second.wait() == 2
    assert "in use by another budgetd" in second.wait_for("cannot start")["reason"]
    assert first.health() == 1  # SERVING: the first one is unaffected


def test_policies_put_at_run_time_survive_restarts_and_reloads(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    home = configured_home(tmp_path)
    config = home / "budgetd.toml"
    daemon = launch(daemons, home)
    daemon.admin().PutPolicy(
        pb.PutPolicyRequest(
            policy=pb.Policy(name="api-meter", per=["agent"], description="put over the API")
        )
    )
    config.write_text(CONFIG.replace(str(CAP), "5000") + '\n[[policies]]\nname = "new-meter"\n')
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for("policies reloaded")
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == (
        ["new-meter"],
        ["tenant-cap"],
        [],
    )
    daemon.kill()  # no final snapshot: the journal carries the put and the reload
    again = launch(daemons, home)
    names = {p.name for p in again.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert names == {"per-user", "tenant-cap", "one-run-per-user", "new-meter", "api-meter"}
    config.write_text(CONFIG)  # the file drops new-meter; api-meter is not the file's
    again.signal(signal.SIGHUP)
    reloaded = again.wait_for("policies reloaded")
    assert (reloaded["added"], reloaded["removed"]) == ([], ["new-meter"])
    names = {p.name for p in again.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert "api-meter" in names and "new-meter" not in names


class FullDisk:
    """A state directory on a disk that can be made full and then freed again: a small
    tmpfs when this process may mount one (root, as in CI), else RLIMIT_FSIZE on the
    daemon (`prlimit`), which fails its writes with EFBIG instead of ENOSPC."""

    def __init__(self, root: Path, how: str) -> None:
        self.mount = root / "disk"
        self.mount.mkdir()
        self.tmpfs = how == "tmpfs"
        if self.tmpfs:
            assert self._mount(), "root but cannot mount a tmpfs"
        self.filler = self.mount / "filler"
        self.pid = 0

    def _mount(self) -> bool:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(self.mount)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def fill(self) -> None:
        if not self.tmpfs:
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            return
        with open(self.filler, "wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass

    def free(self) -> None:
        if not self.tmpfs:
            infinity = resource.RLIM_INFINITY
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (infinity, infinity))
            return
        self.filler.unlink()

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)


def health_is(daemon: Daemon, wanted: int) -> None:
    pause = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if daemon.health() == wanted:
            return
        pause.wait(0.01)
    raise AssertionError(f"health never became {wanted}")


# Both where this process may mount (root, as in CI); RLIMIT_FSIZE alone elsewhere.
DISKS = ["rlimit", "tmpfs"] if os.geteuid() == 0 else ["rlimit"]


@pytest.mark.parametrize("how", DISKS)
def test_a_full_disk_refuses_mutations_until_it_has_room_again(
    daemons: list[Daemon], tmp_path: Path, how: str
) -> None:
    disk = FullDisk(tmp_path, how)
    try:
        home = configured_home(tmp_path)
        state = disk.mount / "state"
        daemon = launch(daemons, home, "--state-dir", str(state), "--snapshot-seconds", "0.2")
        disk.pid = daemon.process.pid
        budget = daemon.budget()
        budget.Consume(consume_request("before", 5))
        disk.fill()
        # The journal's last page may still have room for a few records: the first
        # write that needs more fails, and it must not be acknowledged.
        acknowledged = 0
        for _ in range(10_000):
            try:
                budget.Consume(consume_request(f"during-{acknowledged}", 7))
            except grpc.RpcError as error:
                failed = error
                break
            acknowledged += 1
        assert failed.code() == grpc.StatusCode.UNAVAILABLE
        assert "journal write failed" in (failed.details() or "")
        health_is(daemon, 2)  # NOT_SERVING
        for attempt in range(5):  # refused up front, changing nothing, logged once
            with pytest.raises(grpc.RpcError) as refused:
                budget.Consume(consume_request(f"refused-{attempt}", 1000))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (
            budget.Check(
                pb.CheckRequest(labels={"user": "ann"}, estimate=pb.Usage(input_tokens=1))
            ).decision
            == pb.DECISION_ALLOW
        )  # reads still answer
        disk.free()
        daemon.wait_for("journal writable again; accepting mutations")
        health_is(daemon, 1)  # SERVING
        retried = budget.Consume(consume_request(f"during-{acknowledged}", 7))  # a retry
        assert retried.replayed  # written when the disk had room: counted once
        expected = 5 + 7 * (acknowledged + 1)
        assert tokens_of(daemon, "per-user{user=ann}") == expected
        failures = [
            r for r in daemon.lines if r.get("event") == "journal unavailable; refusing mutations"
        ]
        assert len(failures) == 1
        daemon.kill()
        again = launch(daemons, home, "--state-dir", str(state))
        assert tokens_of(again, "per-user{user=ann}") == expected  # and it was durable
        again.stop()
    finally:
        disk.close()


def test_snapshot_mode_never_numbers_an_event_twice(daemons: list[Daemon], tmp_path: Path) -> None:
    home = configured_home(tmp_path)
    daemon = launch(daemons, home, "--durability", "snapshot")
    for number in range(3):
        daemon.budget().Consume(consume_request(f"c{number}", 10))
    published = daemon.budget().Subscribe(pb.SubscribeRequest(after_seq=0), timeout=WAIT_S)
    seen = [next(published).event.seq for _ in range(3)]
    published.cancel()
    daemon.kill()  # before any snapshot: the events' seqs are gone with the state
    again = launch(daemons, home, "--durability", "snapshot")
    again.budget().Consume(consume_request("after", 10))
    stream = again.budget().Subscribe(pb.SubscribeRequest(after_seq=seen[-1]), timeout=WAIT_S)
    gap, fresh = next(stream).event, next(stream).event
    stream.cancel()
    assert gap.HasField("gap")
    assert fresh.seq > seen[-1]  # numbered past everything the first run published
    again.signal(signal.SIGTERM)
    assert again.wait() == 0
    third = launch(daemons, home, "--durability", "snapshot")  # after a clean stop: no jump
    third.budget().Consume(consume_request("third", 10))
    stream = third.budget().Subscribe(pb.SubscribeRequest(after_seq=fresh.seq), timeout=WAIT_S)
    assert next(stream).event.seq == fresh.seq + 1
    stream.cancel()


def test_a_stop_while_the_disk_is_full_exits_and_keeps_what_was_acknowledged(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    disk = FullDisk(tmp_path, "rlimit")
    home = configured_home(tmp_path)
    daemon = launch(daemons, home)
    disk.pid = daemon.process.pid
    daemon.budget().Consume(consume_request("kept", 5))
    disk.fill()
    with pytest.raises(grpc.RpcError) as failed:
        daemon.budget().Consume(consume_request("lost", 1000))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0  # the drain does not wait forever for the disk
    assert daemon.wait_for("final snapshot failed; the journal is kept")["level"] == "error"
    again = launch(daemons, home)
    assert tokens_of(again, "per-user{user=ann}") == 5  # never acknowledged: not there
