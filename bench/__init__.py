"""Benchmarks of the rate limiter against its peers: `python -m bench` (or `make bench`).

Every figure comes from one run on one machine, so the ratios in docs/BENCHMARKS.md compare like with
like. Measuring (library, http, memory, profile) is kept apart from reporting (report), which reads only
the JSON the measurements produce.
"""
