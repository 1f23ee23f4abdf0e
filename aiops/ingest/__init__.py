"""Metric and trace ingestion: Prometheus sources, PromQL, CSV loaders shared with training."""
