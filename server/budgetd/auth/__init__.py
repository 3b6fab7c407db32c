"""Who may call budgetd: identities, roles, label scopes, TLS, and the gate that checks
every call (see `budgetd.auth.gate`).

The service layer asks `caller_of(context)` for the caller of the call it serves:
`caller.scope` (None: unscoped) and `caller.sees(labels)` filter what it reads back;
`caller.narrow(selector)` scopes a list or a subscription.
"""

from __future__ import annotations

from budgetd.auth.caller import UNRESTRICTED, Caller, Rate, Role, caller_of

__all__ = ["UNRESTRICTED", "Caller", "Rate", "Role", "caller_of"]
