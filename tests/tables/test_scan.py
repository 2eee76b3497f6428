"""Scans for collects on a real RocksDB store (the app is built, not started): key order
agrees with the pure core's, a batch's scan lays its own and its parent's uncommitted
writes over the store, and a partition applied in batches replays identically."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.app import create_app
from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.outcome import Outcome
from pipeline.record import Record, dump_record
from pipeline.registry import Registry
from pipeline.replay import Comparer, MemoryScratch, Replayer
from pipeline.settings import Settings, WebSettings
from pipeline.view import Reads, instance_order
from tables.batch import StateBatch
from tables.keys import encode_key
from tables.scan import instance_ranges
from tables.scratch import DiskScratch
from tables.store import PartitionStore
from tests.pipeline.shop import shop_registry
from tests.samples import consumed, event

ids = st.text(alphabet="ab-1", min_size=1, max_size=12)


@given(st.lists(ids, min_size=2, max_size=30, unique=True))
def test_instance_order_is_the_state_tables_key_order(instances: list[str]) -> None:
    by_key = sorted(instances, key=lambda i: encode_key("t", "m", i))
    assert sorted(instances, key=instance_order) == by_key


def test_prefix_ranges_cover_exactly_the_ids_with_the_prefix() -> None:
    ranges = instance_ranges("t", "m", "ab")
    assert ranges == sorted(ranges)
    for instance, inside in (("ab", True), ("abc", True), ("a" * 100 + "b", False), ("b", False)):
        key = encode_key("t", "m", instance)
        assert any(lo <= key < hi for lo, hi in ranges) is inside, instance
    assert not any(lo <= encode_key("t", "mm", "ab") < hi for lo, hi in ranges)
    [(lo, hi)] = instance_ranges("t", "m")
    assert lo <= encode_key("t", "m", "x" * 128) < hi
    assert not lo <= encode_key("t", "m2", "x") < hi


def _stores(folder: Path) -> tuple[PartitionStore, PartitionStore]:
    app = create_app(
        Settings(app="scantest", data_dir=folder, web=WebSettings(enabled=False)), Registry()
    )
    return app.state_store, app.timer_store


def _record(n: int) -> Record:
    return Record({"n": n}, 1, 1, 0, 0)


def _put(batch: StateBatch, instance: str, n: int | None) -> None:
    record = None if n is None else _record(n)
    outcome = Outcome("applied" if record else "purged", record)
    stored = None if record is None else dump_record(record)
    batch.store(Address("t", "m", instance), outcome, stored)


writes = st.lists(st.tuples(ids, st.none() | st.integers(0, 9)), max_size=12)


@settings(max_examples=40, deadline=None)
@given(committed=writes, parent=writes, own=writes, prefix=st.sampled_from(["", "a", "ab", "b-"]))
def test_a_batchs_scan_is_the_store_with_its_parents_and_its_own_writes_laid_over(
    committed: list[tuple[str, int | None]],
    parent: list[tuple[str, int | None]],
    own: list[tuple[str, int | None]],
    prefix: str,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        state, timers = _stores(Path(folder))
        expected: dict[str, int | None] = {}
        base = StateBatch(state, timers, 0)
        for instance, n in committed:
            _put(base, instance, n)
            expected[instance] = n
        base.apply_locally()
        # Another machine and tenant in the same store: never in the scan.
        state.write(0, {encode_key("t", "m2", "a"): dump_record(_record(1))})
        state.write(0, {encode_key("u", "m", "a"): dump_record(_record(1))})
        first = StateBatch(state, timers, 0)
        for instance, n in parent:
            _put(first, instance, n)
            expected[instance] = n
        second = StateBatch(state, timers, 0, parent=first)
        half = len(own) // 2
        for instance, n in own[:half]:
            _put(second, instance, n)
            expected[instance] = n
        list(second.scan("t", "m", prefix))  # a scan before more writes: its index is kept up
        for instance, n in own[half:]:
            _put(second, instance, n)
            expected[instance] = n
        want = sorted(
            ((i, {"n": n}) for i, n in expected.items() if n is not None and i.startswith(prefix)),
            key=lambda x: instance_order(x[0]),
        )
        got = [(i, r.state) for i, r in second.scan("t", "m", prefix)]
        assert got == want
        # A view's read of one state agrees, and is a copy nothing else holds.
        for instance, n in expected.items():
            seen = second.state(Address("t", "m", instance))
            assert seen == (None if n is None else {"n": n})
            if seen is not None:
                seen["n"] = -1
                assert second.state(Address("t", "m", instance)) == {"n": n}
        assert second.state(Address("t", "m", "never")) is None


def test_a_partition_applied_in_batches_replays_identically_with_views(tmp_path: Path) -> None:
    state, timers = _stores(tmp_path)
    registry = shop_registry()
    rules = Rules(registry, Settings(app="scantest").topics)
    log: list[Any] = []
    for n in range(120):
        sku = "ab"[n % 2]
        if n % 5 == 0:
            e = event(
                "inventory.stocked", {"qty": 3}, machine="inventory", instance=sku, id=f"e{n}"
            )
        elif n % 7 == 0:
            e = event("dashboard.refresh", {"prefix": "o-1"}, machine="dashboard", instance="d")
            e = e._replace(id=f"e{n}")
        else:
            e = event("order.placed", {"sku": sku, "qty": 1 + n % 3}, machine="order")
            e = e._replace(id=f"e{n}", instance=f"o-{n}")
        log.append(consumed(e, offset=n))
    live: list[bytes] = []
    committing: StateBatch | None = None
    batch = StateBatch(state, timers, 0)
    for n, rec in enumerate(log):
        applied = apply_record(rules, batch.load, rec, Reads(batch.scan, batch.state))
        assert applied.verdict == "applied", applied.reason
        assert applied.outcome is not None
        assert applied.address is not None
        batch.store(applied.address, applied.outcome, applied.stored, applied.change)
        assert applied.change is not None
        live.append(applied.change)
        if n % 17 == 16:  # the lane's group commit: one batch in flight, one being applied
            if committing is not None:
                committing.apply_locally()
                batch.parent = None
            committing, batch = batch, StateBatch(state, timers, 0, parent=batch)
    dashboards = [c for c in live if b'"machine":"dashboard"' in c]
    assert any(b'"more":true' in c for c in dashboards)  # the limit was reached somewhere
    for scratch in (MemoryScratch(), DiskScratch(tmp_path)):
        comparer = Comparer()
        replayer = Replayer(Rules(registry, rules.topics, trust_firings=True), scratch, comparer)
        for rec in log:
            replayer.event(rec)
        for change in live:
            comparer.live(change)
        comparer.finish()
        assert comparer.stats.diverged == 0, comparer.divergences
        assert comparer.stats.identical == len(log)
        if isinstance(scratch, DiskScratch):
            scratch.close()
