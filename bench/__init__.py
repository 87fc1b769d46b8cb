"""Benchmarks: each measures gremio against a baseline run side by side in the same run.

Run one with `make bench BENCH=<name>` (or `.venv/bin/python -m bench.<name>`); results and
their commands are recorded in docs/BENCHMARKS.md.
"""
