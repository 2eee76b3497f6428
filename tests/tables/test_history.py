"""An instance's recent history in the state table: its key layout and what a batch
writes, on a real RocksDB store (the app is built, not started)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agents.app import create_app
from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.registry import Registry
from pipeline.settings import Settings, WebSettings
from tables.batch import StateBatch
from tables.history import stored_changes
from tables.keys import (
    HISTORY_PREFIX,
    OFFSET_KEY,
    encode_key,
    history_key,
    history_prefix,
    tenant_prefix,
)
from tests.samples import consumed, event, sample_registry

ids = st.text(alphabet="ab:.-_0123456789", min_size=1, max_size=6)


@given(ids, ids, ids, ids, ids, ids)
def test_one_instances_slots_are_exactly_its_keys_under_its_prefix(
    t1: str, m1: str, i1: str, t2: str, m2: str, i2: str
) -> None:
    a, b = encode_key(t1, m1, i1), encode_key(t2, m2, i2)
    for slot in (0, 1, 999):
        assert history_key(a, slot).startswith(history_prefix(a))
        if a != b:
            assert not history_key(b, slot).startswith(history_prefix(a))
    # Outside every tenant's listing, and apart from the applied offset.
    assert not history_key(a, 0).startswith(tenant_prefix(t1))
    assert not OFFSET_KEY.startswith(HISTORY_PREFIX)


def _stores(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(
        Settings(app="histtest", data_dir=tmp_path, web=WebSettings(enabled=False)), Registry()
    )
    return app.state_store, app.timer_store


def test_a_batch_keeps_the_last_n_changes_and_a_reader_gets_them_in_order(tmp_path: Path) -> None:
    state, timers = _stores(tmp_path)
    rules = Rules(sample_registry(), Settings(app="histtest").topics)
    address = Address("acme", "counter", "c1")
    batch = StateBatch(state, timers, 0, keep_history=4)
    published = []
    for n in range(1, 11):
        applied = apply_record(rules, batch.load, consumed(event(id=f"e{n}"), offset=n))
        assert applied.outcome is not None
        batch.store(address, applied.outcome, applied.stored, applied.change)
        published.append(applied.change)
    assert len(batch.state_writes) == 1 + 4  # the record and four slots, each written once
    batch.apply_locally()
    key = encode_key(*address)
    got = stored_changes(state.scan_prefix, 0, key, 10, 4)
    assert [c.seq for c in got] == [7, 8, 9, 10]
    assert [c.to_json() for c in got] == published[-4:]  # the bytes as published
    # A smaller keep later reads only what is within it; a larger one what there is.
    assert [c.seq for c in stored_changes(state.scan_prefix, 0, key, 10, 2)] == [9, 10]
    assert [c.seq for c in stored_changes(state.scan_prefix, 0, key, 10, 50)] == [7, 8, 9, 10]
    assert stored_changes(state.scan_prefix, 0, key, 10, 0) == []


def test_without_history_a_batch_writes_only_the_record(tmp_path: Path) -> None:
    state, timers = _stores(tmp_path)
    rules = Rules(sample_registry(), Settings(app="histtest").topics)
    batch = StateBatch(state, timers, 0)
    applied = apply_record(rules, batch.load, consumed(event(id="e1")))
    assert applied.outcome is not None
    batch.store(Address("acme", "counter", "c1"), applied.outcome, applied.stored, applied.change)
    assert list(batch.state_writes) == [encode_key("acme", "counter", "c1")]


def test_a_purged_record_takes_its_slots_with_it(tmp_path: Path) -> None:
    from pipeline.outcome import Outcome

    state, timers = _stores(tmp_path)
    rules = Rules(sample_registry(), Settings(app="histtest").topics)
    address = Address("acme", "counter", "c1")
    key = encode_key(*address)
    batch = StateBatch(state, timers, 0, keep_history=3)
    for n in range(1, 3):
        applied = apply_record(rules, batch.load, consumed(event(id=f"e{n}"), offset=n))
        assert applied.outcome is not None
        batch.store(address, applied.outcome, applied.stored, applied.change)
    batch.apply_locally()
    assert len(stored_changes(state.scan_prefix, 0, key, 2, 3)) == 2
    purge = StateBatch(state, timers, 0, keep_history=3)
    purge.store(address, Outcome("purged"), None)
    assert purge.state_writes == {key: None, **{history_key(key, s): None for s in range(3)}}
    purge.apply_locally()
    assert list(state.scan_prefix(0, history_prefix(key))) == []
