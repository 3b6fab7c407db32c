"""Errors of the daemon around the core (the core's own are in `budgetd.core.errors`);
`budgetd.status` maps both to gRPC status codes in one table."""

from __future__ import annotations


class Unavailable(Exception):
    """The daemon cannot take this call now (starting, draining, disk trouble); retry."""


class FailedPrecondition(Exception):
    """The call cannot work in the daemon's configuration (e.g. a snapshot in memory mode)."""


class PermissionDenied(Exception):
    """The caller may not do this (its role or its label scope); the message names the
    rule, never another tenant."""
