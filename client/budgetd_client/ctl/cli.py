"""budgetctl's command line: arguments, the connection, and the exit codes.

`main` is the console script and is also called in-process by tests. It never lets a
traceback reach the user: every failure becomes one line on stderr, `budgetctl: ...`,
and an exit code a script can branch on (see EXIT_CODES).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from budgetd_client import __version__
from budgetd_client._credentials import (
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_TLS_SERVER_NAME,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    Credentials,
    check_transport,
    open_channel,
    resolve,
    tls_options,
)
from budgetd_client.ctl import commands, operator, prices
from budgetd_client.ctl.errors import CtlError, Exit, from_rpc
from budgetd_client.ctl.events import KIND_NAMES
from budgetd_client.ctl.output import Output
from budgetd_client.errors import CredentialsError
from budgetd_client.paths import as_target, default_target
from budgetd_client.v1 import budget_pb2 as pb
from budgetd_client.v1 import budget_pb2_grpc as rpc

EXIT_CODES = """\
exit codes:
  0    success
  1    unexpected error (a bug in budgetctl, or an internal error in the daemon)
  2    usage error (bad command line, unreadable file)
  3    daemon unavailable (cannot connect, starting or draining, call cancelled, or no
       answer in --timeout)
  4    not found (unknown ledger or policy)
  5    invalid argument (refused by the daemon, or a policy file error: file:key: reason)
  6    refused in the daemon's current state (a server bound was hit, already exists,
       failed precondition)
  7    not allowed (unauthenticated or permission denied)
  8    not supported (the server does not implement the call: an older budgetd?)
  130  interrupted by Ctrl-C (except watch, where Ctrl-C is the normal way out: 0)

JSON (--json) is the contract's ProtoJSON mapping with the .proto field names. Fields
without presence are always there, even at their default (0, "", false, [], {}; enums
as names, e.g. LEDGER_STATE_OK). Fields with presence are there only when set: message
fields such as instants (window_end is absent for a lifetime window), optional scalars
(usage.cost_micro_usd is absent when the caller gave no cost) and oneof members (one
payload key per event). int64 values are numbers, money is integer micro-USD and
instants are RFC 3339 strings.
"""

STATES = ("ok", "warning", "critical", "final", "exhausted")
SEVERITIES = ("warning", "critical", "final")

Handler = Callable[[commands.Ctl], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run budgetctl with `argv` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _normalise(args)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2, already printed)
        return stop.code if isinstance(stop.code, int) else Exit.USAGE
    except CtlError as error:
        return _fail(error)
    try:
        return _run(args)
    except CtlError as error:
        return _fail(error)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:  # `budgetctl watch | head -3`: the reader has gone, not an error
        _detach_stdout()
        return Exit.OK
    except Exception as error:  # a bug: still one line, no traceback
        return _fail(CtlError(Exit.ERROR, f"unexpected error: {type(error).__name__}: {error}"))


def _run(args: argparse.Namespace) -> int:
    target = args.target
    credentials: Credentials = args.credentials
    out = Output.open(args.color)
    channel = open_channel(target, credentials, tls_options(credentials))
    if credentials.metadata is not None:
        channel = grpc.intercept_channel(channel, _Metadata(credentials.metadata))
    with channel:
        ctl = commands.Ctl(
            args,
            out,
            rpc.BudgetServiceStub(channel),
            rpc.BudgetAdminServiceStub(channel),
            target,
            args.timeout,
        )
        handler: Handler = args.handler
        try:
            return int(handler(ctl))
        except grpc.RpcError as error:
            raise from_rpc(error, target, args.timeout) from None


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the credentials' metadata (the bearer token) to every call, `watch`'s stream
    too: the commands use the raw stubs and need not know about tokens."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """gRPC's ClientCallDetails is abstract: the documented way is a namedtuple."""


def _fail(error: CtlError) -> int:
    message = " ".join(error.message.split())
    print(f"budgetctl: {message}", file=sys.stderr)
    return int(error.code)


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# --- arguments -------------------------------------------------------------------------


def _normalise(args: argparse.Namespace) -> None:
    """Turn the strings argparse collected into what the commands send."""
    args.target = _target(args.target) if args.target else default_target()
    args.credentials = _credentials(args)
    args.selector = _selector(getattr(args, "selector", None) or [])
    state = getattr(args, "min_state", None)
    args.min_state = pb.LedgerState.Value(f"LEDGER_STATE_{state.upper()}") if state else 0
    severity = getattr(args, "min_severity", None)
    args.min_severity = pb.Severity.Value(f"SEVERITY_{severity.upper()}") if severity else 0


DEFAULT_PORT = 50051


def _target(text: str) -> str:
    """`--target`: a gRPC address. A host without a port means budgetd's port (gRPC
    itself would pick 443); a URL is a usage error (gRPC targets have no scheme://)."""
    if text.startswith(("http://", "https://")):
        rest = text.split("://", 1)[1].rstrip("/")
        tls = " --tls" if text.startswith("https://") else ""
        raise CtlError(
            Exit.USAGE,
            f"--target takes a gRPC address, not a URL: try --target {rest or 'HOST:PORT'}"
            f"{tls} (HOST:PORT, unix:/path/budgetd.sock or /path/budgetd.sock)",
        )
    if text.startswith(("unix:", "/", "dns:", "ipv4:", "ipv6:")):
        return as_target(text)
    host, _, port = text.rpartition(":")
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed or not host or host.endswith(":") or "]" in port:
        return f"{text}:{DEFAULT_PORT}"  # no port (a name, an IPv4 or a [v6] address)
    return text


def _credentials(args: argparse.Namespace) -> Credentials:
    """The token and TLS of the flags, else of the environment (as the SDK reads them);
    a file that cannot be used, or a token bound for plaintext beyond loopback, is a
    usage error naming it."""
    try:
        credentials = resolve(
            token=args.token,
            token_file=args.token_file,
            tls=True if args.tls else None,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_server_name=args.tls_server_name,
        )
        check_transport(args.target, credentials)
    except CredentialsError as error:
        raise CtlError(Exit.USAGE, _flag_names(error.message)) from None
    return credentials


_SDK_NAMES = re.compile(
    r"\b(?:token=|token_file=|token_file(?= )|tls=True|tls_ca|tls_cert|tls_key|tls_server_name)"
)


def _flag_names(message: str) -> str:
    """The SDK's argument names as budgetctl's flags (`tls_ca` -> `--tls-ca`)."""

    def flag(match: re.Match[str]) -> str:
        name = match.group().removesuffix("=True").removesuffix("=")
        return "--" + name.replace("_", "-")

    return _SDK_NAMES.sub(flag, message)


def _selector(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for key, value in pairs:
        if selector.get(key, value) != value:
            raise CtlError(Exit.USAGE, f"--selector {key} given twice with different values")
        selector[key] = value
    return selector


def _label_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (VALUE * = key present), got {text!r}"
        )
    return key, value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _natural(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after its name. Under a subcommand
    their default is SUPPRESS, so they only override what was given before it."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--target",
        default=default(None),
        help=f"daemon address, e.g. unix:/path/budgetd.sock (or just /path/budgetd.sock) or "
        f"127.0.0.1:50051 (default: $BUDGETD_TARGET, else {default_target()})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(5.0),
        metavar="SECONDS",
        help="deadline of each call (default 5; watch waits for events indefinitely)",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=default("auto"),
        help="tables and colour: auto = when stdout is a terminal (default)",
    )
    _credential_options(parser, default)


def _credential_options(
    parser: argparse.ArgumentParser, default: Callable[[object], object]
) -> None:
    """Token and TLS flags; each group falls back to its environment variables when
    none of its flags is given (read by the SDK's resolver, `_credentials`)."""
    group = parser.add_argument_group("credentials (for a daemon's TCP listener)")
    group.add_argument(
        "--token",
        default=default(None),
        metavar="TOKEN",
        help=f"bearer token (default: ${ENV_TOKEN}); visible to other local users in ps: "
        "prefer --token-file",
    )
    group.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help=f"file holding the bearer token (default: ${ENV_TOKEN_FILE})",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="connect with TLS (implied by the --tls-* flags); without --tls-ca the "
        "system's trusted roots verify the daemon",
    )
    group.add_argument(
        "--tls-ca",
        default=default(None),
        metavar="FILE",
        help=f"PEM CA that signed the daemon's certificate (default: ${ENV_TLS_CA})",
    )
    group.add_argument(
        "--tls-cert",
        default=default(None),
        metavar="FILE",
        help=f"PEM client certificate, for mTLS (default: ${ENV_TLS_CERT})",
    )
    group.add_argument(
        "--tls-key",
        default=default(None),
        metavar="FILE",
        help=f"PEM key of --tls-cert (default: ${ENV_TLS_KEY})",
    )
    group.add_argument(
        "--tls-server-name",
        default=default(None),
        metavar="NAME",
        help="the name the daemon's certificate must have, when not the --target host "
        f"(default: ${ENV_TLS_SERVER_NAME})",
    )


def _ledger_filters(parser: argparse.ArgumentParser, with_state: bool) -> None:
    parser.add_argument("--policy", metavar="P", help="only ledgers of this policy")
    parser.add_argument(
        "--selector",
        type=_label_pair,
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="only ledgers with these labels (VALUE * = key present)",
    )
    if with_state:
        parser.add_argument(
            "--min-state", choices=STATES, help="only ledgers at this state or worse"
        )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="budgetctl",
        description="Look at and manage a running budgetd: ledgers, policies, events.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"budgetctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Handler, summary: str, description: str = ""
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common],
            help=summary,
            description=description or summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    status = command(
        "status",
        commands.status,
        "ledgers as a table: state, used / limit, percent and reserved per cap; meters' totals",
    )
    _ledger_filters(status, with_state=True)

    ledger = command(
        "ledger",
        commands.ledger,
        "one ledger in full: caps, totals (cost in USD), average latency, window, runs",
    )
    ledger.add_argument("key", metavar="KEY", help="ledger key, e.g. 'per-thread{thread=7f3a}'")

    _policies_command(sub, common)

    reset = command(
        "reset",
        commands.reset,
        "zero a ledger's counters and print its totals from before the reset",
    )
    reset.add_argument("key", metavar="KEY", help="ledger key (see status)")

    runs = command(
        "runs",
        operator.runs,
        "open runs: labels, opened, last heartbeat, expiry, deadline, usage so far",
    )
    runs.add_argument(
        "--selector",
        type=_label_pair,
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="only runs with these labels",
    )

    limits = command(
        "limits",
        operator.limits,
        "override one ledger's caps (creating it if needed), or --clear the override",
        "Override one ledger's caps: each flag sets one cap (the others are dropped: the "
        "override replaces the policy's caps for this ledger). --clear goes back to the "
        "policy's caps. Prints the ledger afterwards.",
    )
    limits.add_argument("key", metavar="KEY", help="ledger key, e.g. 'per-user{user=ann}'")
    for name in operator.LIMIT_FLAGS:
        example = {"cost_usd": "USD", "run_duration": "SPAN"}.get(name, "N")
        limits.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=example,
            help={"cost_usd": "e.g. 12.50", "run_duration": "e.g. 90m, 2h"}.get(name),
        )
    limits.add_argument("--clear", action="store_true", help="back to the policy's caps")

    command(
        "info",
        operator.info,
        "the daemon: version, listeners, durability, state dir, core, counts",
    )

    price = command(
        "prices",
        prices.prices,
        "how a model is priced: the entry it resolves to and why; no MODEL: the whole table",
    )
    price.add_argument("model", metavar="MODEL", nargs="?", help="e.g. openai/gpt-4o-2024-08-06")

    command("snapshot", commands.snapshot, "write a state snapshot now; print its path, size, seq")

    watch = command(
        "watch",
        commands.watch,
        "live event stream, one line per event (Ctrl-C exits 0)",
        "Live event stream, one line per event (with --json: one JSON object per line). "
        "Ctrl-C exits 0. If the stream breaks, the error says which --after-seq resumes it.",
    )
    watch.add_argument(
        "--selector",
        type=_label_pair,
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="only events with these labels (VALUE * = key present)",
    )
    watch.add_argument(
        "--kind",
        dest="kinds",
        choices=KIND_NAMES,
        nargs="+",
        action="extend",
        default=[],
        metavar="KIND",
        help=f"only these kinds: {', '.join(KIND_NAMES)}",
    )
    watch.add_argument(
        "--min-severity", choices=SEVERITIES, help="only threshold crossings at least this severe"
    )
    watch.add_argument(
        "--after-seq",
        type=_natural(0),
        metavar="N",
        help="first replay retained events after seq N (0 = all retained), then live ones",
    )
    watch.add_argument(
        "--count", type=_natural(1), metavar="N", help="exit 0 after N events (gaps not counted)"
    )
    return parser


def _policies_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    policies = sub.add_parser(
        "policies",
        parents=[common],
        help="list, get, put or delete policies",
        description="List, get, put or delete policies.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policies.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, parents=[common], help=summary, description=summary)
        p.set_defaults(handler=handler)
        return p

    action("list", commands.policies_list, "every policy as a table")
    get = action(
        "get",
        commands.policies_get,
        "policies as a TOML file that `policies put` takes back (get, edit, put)",
    )
    get.add_argument("names", metavar="NAME", nargs="*", help="policy names (default: all)")
    put = action(
        "put",
        commands.policies_put,
        "create or replace the policies of a TOML file: one policy at the top level, or a "
        "[[policies]] array with the daemon config's keys (match, per, caps, window, "
        "enforcement, thresholds, evictable, close_with_run, description); validated "
        "locally first",
    )
    put.add_argument("file", metavar="FILE", help="TOML policy file")
    put.add_argument(
        "--apply-to-existing",
        action="store_true",
        help="also apply changed caps, enforcement and thresholds to existing ledgers",
    )
    diff = action(
        "diff",
        operator.policies_diff,
        "what `policies put FILE` would change, and what a reload with FILE as the config "
        "file would remove; changes nothing",
    )
    diff.add_argument("file", metavar="FILE", help="TOML policy file")
    delete = action("delete", commands.policies_delete, "delete a policy and close its ledgers")
    delete.add_argument("name", metavar="NAME")
