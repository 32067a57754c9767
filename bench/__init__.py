"""Benchmarks: ``python -m bench`` prints figures next to an in-run baseline and
writes them to docs/benchmarks.md."""
