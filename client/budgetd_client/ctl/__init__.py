"""budgetctl, the operator CLI of budgetd (console script `budgetctl`).

It talks to the daemon with the generated stubs directly: an operator tool reports
what the daemon says, without the SDK's retries or fail-open behaviour.
"""

from budgetd_client.ctl.cli import main
from budgetd_client.ctl.errors import Exit

__all__ = ["Exit", "main"]
