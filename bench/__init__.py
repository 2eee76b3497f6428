"""Benchmarks: ``bench/run`` compares garrison with baselines on one workload.

See ``bench/README.md``.
"""
