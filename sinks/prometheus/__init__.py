"""Prometheus exporter: metrics of a worker, collected at scrape time."""
