"""The budgetctl commands: one function each, from parsed arguments to output.

Each command makes its calls with the raw generated stubs (the operator tool must not
depend on the SDK's retry or fail-open behaviour: it reports what the daemon says), then
either prints the answer as ProtoJSON (`--json`) or renders it for humans. gRPC errors
propagate to `cli`, which maps them to exit codes in one place.
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from rich.text import Text

from budgetd_client.ctl import events, policyfile
from budgetd_client.ctl import formats as fmt
from budgetd_client.ctl.errors import CtlError, Exit, from_rpc
from budgetd_client.ctl.output import Cell, Column, Output, message_dict
from budgetd_client.v1 import budget_pb2 as pb

# ListLedgers is paginated; `status` and `runs` fetch every page but stop at a bound so
# a daemon with millions of ledgers cannot make an operator's terminal hang.
PAGE_SIZE = 1000
MAX_PAGES = 100


@dataclass(frozen=True, slots=True)
class Ctl:
    """What a command needs: its arguments, where to print, the stubs and the deadline."""

    args: argparse.Namespace
    out: Output
    budget: Any  # budget_pb2_grpc.BudgetServiceStub (the generated stubs are untyped)
    admin: Any  # budget_pb2_grpc.BudgetAdminServiceStub
    target: str
    timeout: float

    @property
    def json(self) -> bool:
        return bool(self.args.json)


def warn(message: str) -> None:
    """A warning that does not change the exit code (stderr, one line)."""
    print(f"budgetctl: warning: {message}", file=sys.stderr)


# --- status -----------------------------------------------------------------


def fetch_ledgers(ctl: Ctl) -> pb.ListLedgersResponse:
    """Every matching ledger, sorted by key, over at most MAX_PAGES pages; a non-empty
    next_page_token in the result means the bound was hit (and a warning was printed)."""
    request = pb.ListLedgersRequest(
        policy=ctl.args.policy or "",
        selector=ctl.args.selector,
        min_state=ctl.args.min_state,
        page_size=PAGE_SIZE,
    )
    found: list[pb.LedgerStatus] = []
    for _ in range(MAX_PAGES):
        page: pb.ListLedgersResponse = ctl.budget.ListLedgers(request, timeout=ctl.timeout)
        found.extend(page.ledgers)
        request.page_token = page.next_page_token
        if not page.next_page_token:
            break
    if request.page_token:
        warn(
            f"stopped after {MAX_PAGES} pages ({len(found):,} ledgers); more exist: "
            "narrow with --policy, --selector or --min-state"
        )
    found.sort(key=lambda ledger: ledger.key)
    return pb.ListLedgersResponse(ledgers=found, next_page_token=request.page_token)


def status(ctl: Ctl) -> int:
    """Capped ledgers and meters in two tables: a meter has no used / limit to show, so
    mixing them in one table would leave most of its columns empty."""
    page = fetch_ledgers(ctl)
    if ctl.json:
        ctl.out.json(message_dict(page))
        return Exit.OK
    capped = [ledger for ledger in page.ledgers if ledger.dimensions]
    meters = [ledger for ledger in page.ledgers if not ledger.dimensions]
    if not capped and not meters:
        ctl.out.line("no ledgers match" if _filtered(ctl.args) else "no ledgers yet")
    if capped:
        ctl.out.table(CAPPED_COLUMNS, _capped_rows(capped), title="Ledgers with caps")
    if meters:
        if capped:
            ctl.out.line()
        ctl.out.table(METER_COLUMNS, [_meter_row(m) for m in meters], title="Meters")
    return Exit.OK


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.policy or args.selector or args.min_state)


CAPPED_COLUMNS = (
    Column("LEDGER", whole=True),
    Column("STATE"),
    Column("DIMENSION"),
    Column("USED", numeric=True),
    Column("LIMIT", numeric=True),
    Column("%", numeric=True),
    Column("RESERVED", numeric=True),
)
METER_COLUMNS = (
    Column("LEDGER", whole=True),
    Column("TOKENS", numeric=True),
    Column("REQUESTS", numeric=True),
    Column("COST", numeric=True),
)


def _capped_rows(ledgers: Iterable[pb.LedgerStatus]) -> list[list[Cell | str]]:
    rows: list[list[Cell | str]] = []
    for ledger in ledgers:
        for i, d in enumerate(ledger.dimensions):
            first = i == 0
            rows.append(
                [
                    ledger.key if first else "",
                    _state_cell(ledger.state) if first else "",
                    fmt.dimension(d.dimension),
                    _used(d, ledger.totals),
                    fmt.amount(d.dimension, d.limit),
                    _percent_cell(d.percent),
                    fmt.amount(d.dimension, d.reserved),
                ]
            )
    return rows


def _used(d: pb.DimensionStatus, totals: pb.Totals) -> str:
    """Used, and next to a cost cap the usage it does not cover (no known price)."""
    text = fmt.amount(d.dimension, d.used)
    if d.dimension == pb.DIMENSION_COST_MICRO_USD and totals.unpriced_requests:
        text += f" (+{totals.unpriced_requests:,} unpriced)"
    return text


def _meter_row(ledger: pb.LedgerStatus) -> list[Cell | str]:
    totals = ledger.totals
    return [
        ledger.key,
        fmt.count(totals.total_tokens),
        fmt.count(totals.requests),
        fmt.cost(totals),
    ]


def _state_cell(state: int) -> Cell:
    return Cell(fmt.state(state), fmt.STATE_STYLES.get(state, ""))


def _percent_cell(percent: int) -> Cell:
    style = "bold red" if percent >= 100 else "yellow" if percent >= 75 else ""
    return Cell(f"{percent}%", style)


# --- one ledger ------------------------------------------------------------------------


def ledger(ctl: Ctl) -> int:
    response = ctl.budget.GetLedger(pb.GetLedgerRequest(key=ctl.args.key), timeout=ctl.timeout)
    if ctl.json:
        ctl.out.json(message_dict(response))
        return Exit.OK
    show_ledger(ctl.out, response.ledger)
    return Exit.OK


def show_ledger(out: Output, status: pb.LedgerStatus) -> None:
    out.pairs(
        [
            ("ledger", Cell(status.key, whole=True)),
            ("policy", status.policy),
            ("labels", fmt.joined([fmt.labels(status.labels)] if status.labels else [])),
            ("state", _state_cell(status.state)),
            ("enforcement", fmt.enforcement(status.enforcement)),
            ("window", _window_span(status)),
            ("open runs", fmt.count(status.open_runs)),
            ("reservations", fmt.count(status.reservations)),
        ]
    )
    out.line()
    if status.dimensions:
        out.table(DIMENSION_COLUMNS, [_dimension_row(d, status.totals) for d in status.dimensions])
    else:
        out.line("no caps: a meter (totals only)")
    if status.HasField("share"):
        _show_share(out, status.share)
    out.line()
    out.line("totals of the current window", "bold")
    out.pairs(fmt.totals_rows(status.totals), indent=2)


SHARE_COLUMNS = (
    Column("DIMENSION"),
    Column("GLOBAL USED", numeric=True),
    Column("LEASE LEFT", numeric=True),
    Column("BOUND", numeric=True),
    Column("UNSETTLED", numeric=True),
)


def _show_share(out: Output, share: pb.GlobalShare) -> None:
    """A global ledger: this sidecar's share of it, as Redis last answered."""
    out.line()
    reach = "reachable" if share.reachable else "out of reach"
    until = fmt.instant(share.lease_until) if share.HasField("lease_until") else "-"
    out.line(f"shared through Redis ({reach}): {share.sidecars} sidecars hold a lease", "bold")
    out.pairs(
        [
            ("lease until", until),
            ("synced", fmt.instant(share.synced_at) if share.HasField("synced_at") else "never"),
        ],
        indent=2,
    )
    rows = [
        [
            fmt.dimension(d.dimension),
            fmt.amount(d.dimension, d.global_used),
            fmt.amount(d.dimension, d.lease_remaining),
            fmt.amount(d.dimension, d.bound),
            fmt.amount(d.dimension, d.unsettled),
        ]
        for d in share.dimensions
    ]
    out.table(SHARE_COLUMNS, rows)


DIMENSION_COLUMNS = (
    Column("DIMENSION"),
    Column("USED", numeric=True),
    Column("RESERVED", numeric=True),
    Column("LIMIT", numeric=True),
    Column("REMAINING", numeric=True),
    Column("%", numeric=True),
    Column("COMES BACK"),
)


def _dimension_row(d: pb.DimensionStatus, totals: pb.Totals) -> list[Cell | str]:
    return [
        fmt.dimension(d.dimension),
        _used(d, totals),
        fmt.amount(d.dimension, d.reserved),
        fmt.amount(d.dimension, d.limit),
        fmt.amount(d.dimension, d.remaining),
        _percent_cell(d.percent),
        fmt.instant(d.resets_at) if d.HasField("resets_at") else "-",
    ]


def _window_span(status: pb.LedgerStatus) -> str:
    start = fmt.instant(status.window_start)
    if status.HasField("window_end"):
        return f"{start} .. {fmt.instant(status.window_end)}"
    return f"since {start} (lifetime)"


# --- policies --------------------------------------------------------------------------


def policies_list(ctl: Ctl) -> int:
    response = ctl.admin.ListPolicies(pb.ListPoliciesRequest(), timeout=ctl.timeout)
    if ctl.json:
        ctl.out.json(message_dict(response))
        return Exit.OK
    if not response.policies:
        ctl.out.line("no policies: requests are allowed and nothing is counted")
        return Exit.OK
    ctl.out.table(POLICY_COLUMNS, [_policy_row(p) for p in response.policies])
    return Exit.OK


POLICY_COLUMNS = (
    Column("NAME", whole=True),
    Column("MATCH"),
    Column("PER"),
    Column("CAPS"),
    Column("WINDOW"),
    Column("ENFORCEMENT"),
    Column("THRESHOLDS"),
)


def _policy_row(policy: pb.Policy) -> list[Cell | str]:
    return [
        Cell(policy.name, "bold"),
        fmt.labels(policy.match) or "*",
        fmt.joined(policy.per),
        fmt.joined(
            (
                f"{fmt.dimension(c.dimension)} {fmt.amount(c.dimension, c.limit)}"
                for c in policy.caps
            ),
            empty="none (meter)",
        ),
        _window_text(policy.window),
        fmt.enforcement(policy.enforcement),
        fmt.joined(f"{t.percent}% {fmt.severity(t.severity)}" for t in policy.thresholds),
    ]


def _window_text(window: pb.Window) -> str:
    kind = window.WhichOneof("kind") or "lifetime"
    if kind == "calendar":
        unit = fmt.enum_name(pb.CalendarUnit, window.calendar.unit, "CALENDAR_UNIT_")
        return f"calendar {unit} ({window.calendar.time_zone or 'UTC'})"
    if kind == "fixed":
        return f"fixed {fmt.seconds_spec(window.fixed.duration.seconds)}"
    if kind == "sliding":
        return f"sliding {fmt.seconds_spec(window.sliding.duration.seconds)}"
    return "lifetime"


def policies_get(ctl: Ctl) -> int:
    """There is no GetPolicy call: ListPolicies, then pick (unknown names are NOT_FOUND)."""
    response = ctl.admin.ListPolicies(pb.ListPoliciesRequest(), timeout=ctl.timeout)
    wanted: Sequence[str] = ctl.args.names
    by_name = {p.name: p for p in response.policies}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise CtlError(Exit.NOT_FOUND, f"policy {missing[0]!r} not found")
    chosen = [by_name[name] for name in wanted] if wanted else list(response.policies)
    if ctl.json:
        ctl.out.json(message_dict(pb.ListPoliciesResponse(policies=chosen)))
    else:
        # TOML is the human form too: the operator edits it and puts it back.
        ctl.out.stream.write(policyfile.dump(chosen))
    return Exit.OK


def policies_put(ctl: Ctl) -> int:
    path = Path(ctl.args.file)
    policies = policyfile.load(path)  # validated locally first: all or nothing is sent
    answers: list[pb.PutPolicyResponse] = []
    for policy in policies:
        request = pb.PutPolicyRequest(policy=policy, apply_to_existing=ctl.args.apply_to_existing)
        try:
            answers.append(ctl.admin.PutPolicy(request, timeout=ctl.timeout))
        except grpc.RpcError as error:
            raise _partial_put(error, ctl, policy.name, answers) from None
    if ctl.json:
        ctl.out.json({"results": [message_dict(answer) for answer in answers]})
        return Exit.OK
    for answer in answers:
        verb = "created" if answer.created else "replaced"
        ctl.out.line(f"{verb} policy {answer.policy.name}")
    return Exit.OK


def _partial_put(
    error: grpc.RpcError, ctl: Ctl, name: str, done: Sequence[pb.PutPolicyResponse]
) -> CtlError:
    """The daemon's refusal of one policy, saying which earlier ones were already put."""
    failure = from_rpc(error, ctl.target, ctl.timeout)
    message = f"policy {name!r}: {failure.message}"
    if done:
        message += f" (already put: {', '.join(answer.policy.name for answer in done)})"
    return CtlError(failure.code, message)


def policies_delete(ctl: Ctl) -> int:
    response = ctl.admin.DeletePolicy(
        pb.DeletePolicyRequest(name=ctl.args.name), timeout=ctl.timeout
    )
    if ctl.json:
        ctl.out.json({"name": ctl.args.name, **message_dict(response)})
        return Exit.OK
    ctl.out.line(
        f"deleted policy {ctl.args.name}; closed {response.closed_ledgers:,} ledgers "
        "(their final totals are in ledger_closed events)"
    )
    return Exit.OK


# --- reset and snapshot ------------------------------------------------------------------


def reset(ctl: Ctl) -> int:
    """A fresh request_id per invocation: running `reset` twice means two resets."""
    request = pb.ResetLedgerRequest(
        request_id=f"budgetctl-reset-{uuid.uuid4().hex}", key=ctl.args.key
    )
    response = ctl.admin.ResetLedger(request, timeout=ctl.timeout)
    if ctl.json:
        ctl.out.json(message_dict(response))
        return Exit.OK
    final = response.final
    ctl.out.line(f"reset {final.key} (policy {final.policy}); totals before the reset:")
    ctl.out.pairs(
        [("window", _window_span(final)), *fmt.totals_rows(final.totals)],
        indent=2,
    )
    return Exit.OK


def snapshot(ctl: Ctl) -> int:
    response = ctl.admin.Snapshot(pb.SnapshotRequest(), timeout=ctl.timeout)
    if ctl.json:
        ctl.out.json(message_dict(response))
        return Exit.OK
    ctl.out.pairs(
        [
            ("snapshot", Cell(response.path, whole=True)),
            ("size", f"{response.size_bytes:,} bytes"),
            ("seq", str(response.sequence)),
            ("taken at", fmt.instant(response.taken_at)),
        ]
    )
    return Exit.OK


# --- watch -------------------------------------------------------------------------------


def watch(ctl: Ctl) -> int:
    """Print events as they come until Ctrl-C (exit 0), `--count` events, or an error
    (whose message says which --after-seq resumes without losing anything)."""
    args = ctl.args
    request = pb.SubscribeRequest(
        selector=args.selector,
        kinds=[f"EVENT_KIND_{kind.upper()}" for kind in args.kinds],
        min_severity=args.min_severity,
    )
    if args.after_seq is not None:
        request.after_seq = args.after_seq
    _interruptible()
    last_seq: int | None = args.after_seq
    shown = 0
    try:
        # Inside the try: a Ctrl-C during the call's start is a clean stop too.
        stream = ctl.budget.Subscribe(request)  # no deadline: a watch lasts until stopped
        for response in stream:
            _show_event(ctl, response.event)
            last_seq = response.event.seq
            shown += 0 if response.event.HasField("gap") else 1
            if args.count and shown >= args.count:
                return Exit.OK
    except KeyboardInterrupt:
        return Exit.OK
    except grpc.RpcError as error:
        failure = from_rpc(error, ctl.target, ctl.timeout)
        raise CtlError(failure.code, failure.message + _resume_hint(last_seq)) from None
    finally:
        stream.cancel()
    raise CtlError(Exit.UNAVAILABLE, "the daemon ended the event stream" + _resume_hint(last_seq))


def _interruptible() -> None:
    """Ctrl-C ends a watch even when started as a background job (`budgetctl watch &`):
    a non-interactive shell starts those with SIGINT ignored, and Python then never
    installs its KeyboardInterrupt handler, so `kill -INT` would do nothing."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _resume_hint(last_seq: int | None) -> str:
    return "" if last_seq is None else f"; resume with --after-seq {last_seq}"


def _show_event(ctl: Ctl, event: pb.Event) -> None:
    if ctl.json:
        ctl.out.json(message_dict(event), one_line=True)
        return
    line = events.describe(event)
    console = ctl.out.console
    if console is None:
        ctl.out.line(line.plain(), flush=True)
        return
    text = Text()
    text.append(f"{line.seq:>6} ", style="dim")
    text.append(f"{line.at} ", style="dim")
    text.append(f"{line.kind:<19}", style=line.style or "bold")
    if line.labels:
        text.append(f" {{{line.labels}}}", style="cyan")
    text.append(f" {line.text}", style=line.style)
    console.print(text, soft_wrap=True)
    ctl.out.stream.flush()
