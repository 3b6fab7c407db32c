"""Monitoring examples: Grafana dashboard, Prometheus rules and config, collector config."""
