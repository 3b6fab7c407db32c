"""Generated gRPC stubs of the budgetd.v1 contract (`make proto`; do not edit)."""
