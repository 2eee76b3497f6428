"""What ``bench/run`` chooses to run from its command line (no broker)."""

from bench.harness import parse_args
from bench.parts import registered


def test_quick_leaves_out_the_feature_parts_and_restore() -> None:
    parts = parse_args(["--quick"]).parts
    assert not parts & set(registered())
    assert "restore" not in parts
    assert {"garrison", "aiokafka_loop", "latency", "transactions"} <= parts


def test_quick_runs_a_feature_part_that_only_names() -> None:
    parts = parse_args(["--quick", "--only", "replay"]).parts
    assert parts == {"replay"}


def test_peer_latency_brings_garrison_with_it() -> None:
    assert parse_args(["--quick", "--only", "peer_latency"]).parts == {"peer_latency", "garrison"}


def test_a_full_run_has_every_part() -> None:
    parts = parse_args([]).parts
    assert set(registered()) <= parts
    assert "restore" in parts
