"""Benchmarks that print figures (not timed tests). Run `python -m bench.bench_entity`."""
