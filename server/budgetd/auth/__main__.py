"""`python -m budgetd.auth new NAME ROLE [KEY=VALUE ...]`: a new bearer token.

Prints the token once (give it to the caller; budgetd never stores it) on stderr, and
on stdout the `[[tokens]]` entry to append to a token file (only its sha256), e.g.

    python -m budgetd.auth new acme-agents agent tenant=acme >> tokens.toml
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from budgetd.auth.caller import ROLE_NAMES
from budgetd.auth.tokens import TOKEN_NAME, entry_text, new_token

USAGE = "usage: python -m budgetd.auth new NAME agent|reader|admin [LABEL=VALUE ...]"
HELP = """\
Prints a new token once on stderr (give it to the caller; budgetd never stores it) and,
on stdout, the [[tokens]] entry to append to a token file (its sha256 only). LABEL=VALUE
pairs scope an agent or reader token, e.g.

    python -m budgetd.auth new acme-agents agent tenant=acme >> tokens.toml"""


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"{USAGE}\n\n{HELP}")
        return 0
    if len(argv) < 3 or argv[0] != "new":
        print(USAGE, file=sys.stderr)
        return 2
    name, role, pairs = argv[1], argv[2], argv[3:]
    if TOKEN_NAME.fullmatch(name) is None:
        print(f"NAME must match [a-z0-9_.-]{{1,64}}, got {name!r}", file=sys.stderr)
        return 2
    if role not in ROLE_NAMES:
        print(f"ROLE must be one of {', '.join(ROLE_NAMES)}, got {role!r}", file=sys.stderr)
        return 2
    scope = [tuple(pair.split("=", 1)) for pair in pairs]
    if any(len(pair) != 2 or not all(pair) for pair in scope) or (scope and role == "admin"):
        print("scope: LABEL=VALUE pairs, and only for agent or reader", file=sys.stderr)
        return 2
    token = new_token()
    print(f"token (shown once): {token}", file=sys.stderr)
    sys.stdout.write(entry_text(name, token, role, [(k, v) for k, v in scope]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
