"""`budgetd` (and `python -m budgetd`): run the daemon, or `budgetd check-config FILE`.

Exit codes: 0 clean stop, 1 could not start (a listener is taken, ...), 2 invalid
configuration (the message says file:key: reason) or a state directory that cannot be
used (unreadable, unwritable, locked by another daemon, damaged beyond a torn tail).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from budgetd import __version__, config, logs
from budgetd.core import COMPILED
from budgetd.daemon import Daemon
from budgetd.persistence.statedir import StateDirError
from budgetd.unix_socket import StartError

EXIT_START_FAILED = 1
EXIT_BAD_CONFIG = 2

log = logging.getLogger("budgetd")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="budgetd",
        description="Budget sidecar for LLM agents. `budgetd check-config FILE` validates "
        "a config file and prints the effective policies.",
    )
    parser.add_argument("--version", action="version", version=f"budgetd {__version__}")
    config.add_arguments(parser)
    return parser


def check_config(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: budgetd check-config FILE", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        settings = config.load_file(Path(argv[0]))
    except config.ConfigError as error:
        print(f"budgetd: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        print(f"{argv[0]}: OK, {len(settings.policies)} policies\n")
        print(config.describe_policies(settings.policies), flush=True)
    except BrokenPipeError:  # `budgetd check-config FILE | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay open until exit
    return 0


def _run_loop(settings: config.Settings) -> None:
    async def serve() -> None:
        await Daemon(settings).run()

    if settings.loop == "uvloop":
        uvloop.run(serve())
    else:
        asyncio.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["check-config"]:
        return check_config(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        settings = config.resolve(args, os.environ)
    except config.ConfigError as error:
        print(f"budgetd: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    logs.setup(settings.log_format, settings.log_level)
    if os.environ.get("BUDGETD_CORE") == "compiled" and not COMPILED:
        # `make run` asks for the compiled core; running the sources instead would only
        # show up as a slower daemon.
        log.error(
            "cannot start",
            extra=logs.fields(
                reason="BUDGETD_CORE=compiled but the "
                "core was imported from the sources; run `make native`"
            ),
        )
        return EXIT_START_FAILED
    os.umask(0o077)  # the socket and snapshots are the owner's alone
    try:
        _run_loop(settings)
    except StartError as error:
        log.error("cannot start", extra=logs.fields(reason=str(error)))
        return EXIT_START_FAILED
    except StateDirError as error:  # the state cannot be read or written: fix, then start
        log.error("cannot start", extra=logs.fields(reason=str(error)))
        return EXIT_BAD_CONFIG
    except OSError as error:  # a listener or directory the system refused
        log.error("cannot start", extra=logs.fields(reason=f"{error.strerror or error}"))
        return EXIT_START_FAILED
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
