"""Benchmarks: scripts run as ``python benchmarks/<name>.py``, outside the product packages; a
package so that their tests import them (``benchmarks.stream``)."""
