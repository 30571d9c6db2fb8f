"""Benchmarks: ``make bench`` or ``python -m tests.benchmarks``.

Each benchmark starts the coordinator (and, for the agent footprint, the agent) as the
separate program an operator runs, talks to it over HTTPS with TLS 1.3 on loopback,
and reports every figure next to a baseline measured in the same run. The files are
named ``bench_*.py`` so that pytest never collects them: speed is measured here, never
asserted by the test suite.
"""
