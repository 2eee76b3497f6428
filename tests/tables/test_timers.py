"""The timer index: keys sort by due time, parse back, and ``due`` finds exactly what
is due, on a real RocksDB database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from pipeline.outcome import TimerWrite
from pipeline.partitioning import Partitioning
from pipeline.record import Timer
from pipeline.step import timer_firing
from tables.keys import encode_key
from tables.timers import due, index_key, index_writes, read_index_key
from tests.samples import event

anything = st.text(max_size=12)
addresses = st.tuples(anything, anything, anything)


@given(st.integers(0, 2**60), st.integers(0, 2**60), addresses, anything)
def test_index_keys_sort_by_due_time_and_parse_back(
    d1: int, d2: int, a: tuple[str, str, str], name: str
) -> None:
    state_key = encode_key(*a)
    k1, k2 = index_key(d1, state_key, name), index_key(d2, state_key, name)
    if d1 < d2:
        assert k1 < k2
    assert read_index_key(k1) == (d1, state_key, name)


class _Store:
    """A real RocksDB database behind the scan the index reads."""

    def __init__(self, path: Path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))

    def scan(
        self, partition: int, start: bytes = b"", stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start)
        while it.valid() and (stop is None or it.key() < stop):
            yield it.key(), it.value()
            it.next()


def test_due_finds_what_is_due_with_its_tenant(tmp_path: Path) -> None:
    store = _Store(tmp_path / "timers")
    arming = event(tenant="acme", instance="c1", time_ms=1_000)
    writes = []
    for name, at in (("a", 1_500), ("b", 2_000), ("c", 2_001)):
        timer = Timer(at, 0, "counter.rang")
        writes.append(TimerWrite(name, None, timer, timer_firing(arming, name, timer)))
    key = encode_key("acme", "counter", "c1")
    for k, v in index_writes(key, writes):
        assert v is not None
        store.db[k] = v
    found = list(due(store, 0, 2_000))
    assert [read_index_key(d.key)[2] for d in found] == ["a", "b"]
    assert {d.kafka_key for d in found} == {b"acme"}
    hot = Partitioning(hot_tenants=frozenset({"acme"}))
    assert {d.kafka_key for d in due(store, 0, 2_000, hot)} == {b"acme/c1"}
    assert b'"timer":"b"' in found[1].firing
    # Moving a timer deletes its old entry.
    moved = TimerWrite("a", 1_500, None)
    assert list(index_writes(key, [moved])) == [(index_key(1_500, key, "a"), None)]
    store.db.close()
