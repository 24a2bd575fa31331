"""Benchmarks: `uv run python -m bench.<name>`; each prints a table with units in the headers."""
