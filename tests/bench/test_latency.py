"""Latency percentiles when some state changes were never seen."""

from __future__ import annotations

from bench.latency import _percentile


def test_percentiles_of_all_seen() -> None:
    seen = [float(x) for x in range(1, 101)]
    assert _percentile(seen, 0.50, 100) == 51.0
    assert _percentile(seen, 0.99, 100) == 100.0


def test_unseen_ones_count_as_later_than_any() -> None:
    seen = [float(x) for x in range(1, 91)]  # 10 of 100 never arrived
    assert _percentile(seen, 0.50, 100) == 51.0
    assert _percentile(seen, 0.99, 100) is None  # among the unseen: unknown
    assert _percentile([], 0.5, 0) is None
