"""`python -m budgetd_client.ctl`: the same as the `budgetctl` console script."""

import sys

from budgetd_client.ctl import main

sys.exit(main())
