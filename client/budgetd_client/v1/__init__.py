"""The SDK's own copy of the budgetd.v1 gRPC stubs (`make proto`; do not edit)."""
