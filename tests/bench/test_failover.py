"""The failover benchmark's pure helpers: probe tenants and the worker-log timeline."""

from __future__ import annotations

from datetime import datetime

import pytest

from agents.kafka import partition_of
from bench.failover import log_steps
from bench.probe import probe_tenants


def test_probe_tenants_cover_every_partition_once() -> None:
    for partitions in (1, 4, 6, 12):
        tenants = probe_tenants(partitions)
        assert sorted(tenants) == list(range(partitions))
        for p, tenant in tenants.items():
            assert partition_of(tenant.encode(), partitions) == p


def _at(seconds: float) -> str:
    stamp = datetime.fromtimestamp(1_796_000_000 + seconds)  # noqa: DTZ006 - logs are local
    return stamp.strftime("%Y-%m-%d %H:%M:%S,") + f"{stamp.microsecond // 1000:03d}"


def test_log_steps_reads_the_timeline_after_the_kill() -> None:
    killed = 1_796_000_010.0
    lines = [
        f"[{_at(5)}] [1] [INFO] [^_Worker]: Starting... ",  # the killed process: before
        f"[{_at(9)}] [1] [INFO] serving partitions [0, 1] ",
        "+Topic Partition Set----+",  # Faust's tables have no timestamp
        f"[{_at(16.8)}] [2] [WARNING] Heartbeat failed for group g because it is rebalancing ",
        f"[{_at(17.0)}] [2] [INFO] Joined group 'g' (generation 3) with member_id g.w0-1 ",
        f"[{_at(17.1)}] [2] [INFO] serving partitions none ",
        f"[{_at(17.5)}] [2] [INFO] restored 1200 changelog records in 0.3 s ",
        f"[{_at(17.9)}] [2] [INFO] restored 34 changelog records in 0.1 s ",
        f"[{_at(18.25)}] [2] [INFO] serving partitions [0, 1, 2, 3] ",
        f"[{_at(19)}] [2] [INFO] restored 5 changelog records in 0.0 s ",  # after: not counted
    ]
    t = log_steps("\n".join(lines), killed, 8.5)
    assert list(t.steps) == ["rebalance noticed", "joined", "serving"]
    assert abs(t.steps["rebalance noticed"] - 6.8) < 0.01
    assert abs(t.steps["serving"] - 8.25) < 0.01
    assert (t.joins, t.restored) == (1, 1234)
    assert abs(t.restore_s - 0.4) < 1e-9


def test_log_steps_keeps_the_last_join_and_serving_before_serving_again() -> None:
    killed = 1_796_000_000.0
    lines = [
        f"[{_at(4.9)}] [3] [INFO] [^_Worker]: Starting... ",
        f"[{_at(5.2)}] [3] [INFO] Joined group 'g' (generation 1) with member_id g.w0-2 ",
        f"[{_at(10.2)}] [3] [INFO] serving partitions [0, 1, 2, 3] ",
        f"[{_at(11.4)}] [3] [WARNING] Heartbeat failed: local member_id was not recognized ",
        f"[{_at(11.5)}] [3] [INFO] Joined group 'g' (generation 3) with member_id g.w0-3 ",
        f"[{_at(13.1)}] [3] [INFO] serving partitions [0, 1, 2, 3] ",
    ]
    t = log_steps("\n".join(lines), killed, 14.0)
    expected = {"process up": 4.9, "rebalance noticed": 11.4, "joined": 11.5, "serving": 13.1}
    assert t.steps == pytest.approx(expected, abs=0.01)
    assert t.joins == 2
