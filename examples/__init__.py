"""Example files shipped with budgetd; a package so tests import examples.monitoring.queries."""
