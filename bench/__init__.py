"""On-demand benchmarks (not part of the test suite): `uv run python -m bench`."""
