"""The operator's commands beyond ledgers and policies: info, runs, limits, diff.

Same shape as `commands`: the raw stubs, `--json` as ProtoJSON, tables for humans.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from budgetd_client.ctl import formats as fmt
from budgetd_client.ctl import policyfile
from budgetd_client.ctl.commands import Ctl, show_ledger, warn
from budgetd_client.ctl.errors import CtlError, Exit
from budgetd_client.ctl.output import Cell, Column, message_dict
from budgetd_client.ctl.policy_grammar import PolicyError, parse_cap
from budgetd_client.v1 import budget_pb2 as pb

PAGE_SIZE = 1000
MAX_PAGES = 10  # runs are bounded by the daemon (10,000 by default)

# `limits KEY --NAME VALUE`: the caps table's names, as flags.
LIMIT_FLAGS = (
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "requests",
    "concurrency",
    "run_duration",
)


# --- info ----------------------------------------------------------------------------------


def info(ctl: Ctl) -> int:
    answer = ctl.admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=ctl.timeout)
    if ctl.json:
        ctl.out.json(message_dict(answer))
        return Exit.OK
    uptime = int(time.time()) - answer.started_at.seconds
    ctl.out.pairs(
        [
            ("version", f"budgetd {answer.version}"),
            ("pid", str(answer.pid)),
            ("started", f"{fmt.instant(answer.started_at)} (up {fmt.millis(uptime * 1000)})"),
            ("listeners", Cell(fmt.joined(answer.listeners), whole=True)),
            ("durability", answer.durability),
            ("state dir", Cell(answer.state_dir or "-", whole=True)),
            ("core", "compiled (mypyc)" if answer.core_compiled else "pure Python"),
            ("policies", fmt.count(answer.policies)),
            ("ledgers", fmt.count(answer.ledgers)),
            ("reservations", fmt.count(answer.reservations)),
            ("runs", fmt.count(answer.runs)),
            ("subscribers", fmt.count(answer.subscribers)),
            ("last event", f"seq {answer.last_event_seq:,}"),
            ("journal", f"record {answer.journal_lsn:,}, snapshot at {answer.snapshot_lsn:,}"),
            ("retries recognised", _idempotency(answer)),
            ("label text", f"{_mib(answer.label_bytes)} of {_mib(answer.label_bytes_max)}"),
            ("global policies", _global(answer)),
        ]
    )
    return Exit.OK


def _global(answer: pb.GetServerInfoResponse) -> Cell | str:
    """The link to Redis of global policies, or why there are none."""
    if not answer.HasField("global_info"):
        return "off (no [global] redis_url)"
    link = answer.global_info
    reach = "reachable" if link.reachable else "OUT OF REACH"
    text = (
        f"{link.redis} ({reach}) as {link.sidecar_id}: {link.shares:,} shares,"
        f" {link.closing_shares:,} ended windows to settle, {link.redis_calls:,} Redis calls"
    )
    if link.closing_shares_dropped:
        text += f", {link.closing_shares_dropped:,} ended windows DROPPED unsettled"
    return Cell(text, whole=True)


def _idempotency(answer: pb.GetServerInfoResponse) -> str:
    """How far back a retry is still answered from memory, and what bounds it."""
    window_ms = answer.idempotency_window.ToMilliseconds()
    held = f"{answer.remembered_requests:,} of {answer.remembered_requests_max:,} ids"
    most = fmt.millis(answer.idempotency_max_age.ToMilliseconds())
    return f"for {fmt.millis(window_ms)} back (at most {most}; {held})"


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


# --- runs ----------------------------------------------------------------------------------


RUN_COLUMNS = (
    Column("RUN", whole=True),
    Column("LABELS"),
    Column("OPENED"),
    Column("HEARTBEAT"),
    Column("EXPIRES"),
    Column("DEADLINE"),
    Column("TOKENS", numeric=True),
    Column("COST", numeric=True),
)


def runs(ctl: Ctl) -> int:
    found: list[pb.RunStatus] = []
    token = ""
    for _ in range(MAX_PAGES):
        page = ctl.budget.ListRuns(
            pb.ListRunsRequest(selector=ctl.args.selector, page_size=PAGE_SIZE, page_token=token),
            timeout=ctl.timeout,
        )
        found += page.runs
        token = page.next_page_token
        if not token:
            break
    if token:
        warn(f"stopped after {MAX_PAGES} pages ({len(found):,} runs); narrow with --selector")
    if ctl.json:
        ctl.out.json(message_dict(pb.ListRunsResponse(runs=found, next_page_token=token)))
        return Exit.OK
    if not found:
        ctl.out.line("no open runs")
        return Exit.OK
    ctl.out.table(RUN_COLUMNS, [_run_row(run) for run in found])
    return Exit.OK


def _run_row(run: pb.RunStatus) -> list[Cell | str]:
    return [
        run.run_id,
        fmt.labels(run.labels) or "-",
        fmt.instant(run.opened_at),
        fmt.instant(run.last_heartbeat),
        fmt.instant(run.expires_at),
        fmt.instant(run.deadline) if run.HasField("deadline") else "-",
        fmt.count(run.totals.total_tokens),
        fmt.cost(run.totals),
    ]


# --- limits --------------------------------------------------------------------------------


def limits(ctl: Ctl) -> int:
    args = ctl.args
    given = [(name, getattr(args, name)) for name in LIMIT_FLAGS if getattr(args, name) is not None]
    if bool(given) == bool(args.clear):
        raise CtlError(
            Exit.USAGE,
            "give one or more caps (--total-tokens N, --cost-usd 1.50, --run-duration 2h, ...) "
            "or --clear to go back to the policy's caps",
        )
    caps = []
    for name, raw in given:
        flag = "--" + name.replace("_", "-")
        try:
            dimension, limit = parse_cap(name, _typed(name, raw, flag), flag)
        except PolicyError as error:
            raise CtlError(Exit.USAGE, f"{error.field}: {error.rule}") from None
        caps.append(pb.Cap(dimension=dimension, limit=limit))
    answer = ctl.admin.SetLedgerLimits(
        pb.SetLedgerLimitsRequest(key=args.key, caps=caps), timeout=ctl.timeout
    )
    if ctl.json:
        ctl.out.json(message_dict(answer))
        return Exit.OK
    verb = "back to the policy's caps" if args.clear else "caps overridden"
    ctl.out.line(f"{args.key}: {verb}")
    show_ledger(ctl.out, answer.ledger)
    return Exit.OK


def _typed(name: str, raw: str, flag: str) -> object:
    """Flags arrive as text; the caps grammar wants what a TOML file would hold."""
    if name in ("cost_usd", "run_duration"):
        return raw  # "1.50" and "2h" are strings in a file too
    try:
        return int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        raise CtlError(Exit.USAGE, f"{flag}: not an integer: {raw!r}") from None


# --- policies diff -------------------------------------------------------------------------


def policies_diff(ctl: Ctl) -> int:
    """What `policies put FILE` would change, and what a reload with FILE as the config
    file would change — asking the daemon (validate_only), applying nothing."""
    wanted = policyfile.load(Path(ctl.args.file))
    current = ctl.admin.ListPolicies(pb.ListPoliciesRequest(), timeout=ctl.timeout)
    by_name = {policy.name: policy for policy in current.policies}
    added, changed, same = [], [], []
    for policy in wanted:
        answer = ctl.admin.PutPolicy(
            pb.PutPolicyRequest(policy=policy, validate_only=True), timeout=ctl.timeout
        )
        if answer.created:
            added.append(answer.policy)
        elif answer.changed:
            changed.append((by_name[policy.name], answer.policy))
        else:
            same.append(policy.name)
    names = {policy.name for policy in wanted}
    removed = sorted(set(current.config_file_policies) - names)
    if ctl.json:
        ctl.out.json(
            {
                "added": [policy.name for policy in added],
                "changed": [new.name for _, new in changed],
                "unchanged": same,
                "removed_by_reload": removed,
            }
        )
        return Exit.OK
    _show_diff(ctl, added, changed, same, removed)
    return Exit.OK


def _show_diff(
    ctl: Ctl,
    added: Sequence[pb.Policy],
    changed: Sequence[tuple[pb.Policy, pb.Policy]],
    same: Sequence[str],
    removed: Sequence[str],
) -> None:
    out = ctl.out
    if not (added or changed or removed):
        out.line(f"no change: the daemon already has every policy of {ctl.args.file}")
        return
    for policy in added:
        out.line(f"+ {policy.name} (new)", "green")
        for line in policyfile.dump([policy]).splitlines()[1:]:
            out.line(f"    {line}", "green")
    for old, new in changed:
        out.line(f"~ {new.name} (changed)", "yellow")
        before = policyfile.dump([old]).splitlines()[1:]
        after = policyfile.dump([new]).splitlines()[1:]
        for line in before:
            if line not in after:
                out.line(f"  - {line}", "red")
        for line in after:
            if line not in before:
                out.line(f"  + {line}", "green")
    if same:
        out.line(f"= unchanged: {', '.join(same)}", "dim")
    if removed:
        out.line(
            f"- a reload with this file as the config file would also remove: "
            f"{', '.join(removed)} (a put never removes)",
            "red",
        )
