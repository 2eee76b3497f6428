"""The timer index: one partition's armed timers in due-time order.

An entry's key is the due time as 8 big-endian bytes, then the instance's state key and
the timer's name (both length-prefixed, ``tables.keys``), so RocksDB's byte order is
due-time order and "what is due" is one range scan from the start. Its value is the
encoded firing that ``step`` built when it armed the timer. The instance record holds
the timer too (``Record.timers``); this index only finds what is due. Nothing else
builds or parses these keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from pipeline.envelope import encode_event
from pipeline.outcome import TimerWrite
from pipeline.partitioning import NOT_HOT, Partitioning
from tables.keys import part, read_part

__all__ = ["Due", "Scanner", "due", "index_key", "index_writes", "read_index_key"]


class Scanner(Protocol):
    """What :func:`due` reads: a store's key-ordered scan (``PartitionStore.scan``)."""

    def scan(
        self, partition: int, start: bytes = b"", stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...


def index_key(due_ms: int, state_key: bytes, name: str) -> bytes:
    """The index key of timer ``name`` of the instance at ``state_key``."""
    # Times before 1970 sort first; the firing carries its exact due time in the value.
    return max(due_ms, 0).to_bytes(8, "big", signed=False) + state_key + part(name)


def read_index_key(raw: bytes) -> tuple[int, bytes, str]:
    """Due time, state key and timer name of an index key."""
    pos = 8
    for _ in range(3):  # tenant, machine, instance
        _, pos = read_part(raw, pos)
    name, end = read_part(raw, pos)
    if end != len(raw):
        raise ValueError("trailing bytes after timer key")
    return int.from_bytes(raw[:8], "big"), raw[8:pos], name


def index_writes(
    state_key: bytes, writes: Iterable[TimerWrite]
) -> Iterator[tuple[bytes, bytes | None]]:
    """The index entries to delete (None) and put for an instance's timer writes."""
    for write in writes:
        if write.old_due_ms is not None:
            yield index_key(write.old_due_ms, state_key, write.name), None
        if write.timer is not None and write.firing is not None:
            yield index_key(write.timer.due_ms, state_key, write.name), encode_event(write.firing)


class Due(NamedTuple):
    """A due entry: its index key, the Kafka key of its firing and the firing's bytes."""

    key: bytes
    kafka_key: bytes
    firing: bytes


def due(
    store: Scanner, partition: int, now_ms: int, partitioning: Partitioning = NOT_HOT
) -> Iterator[Due]:
    """The entries of ``partition`` due at ``now_ms`` or earlier, in due order, each
    with its firing's Kafka key as ``partitioning`` keys the instance (the tenant, or
    ``tenant/instance`` when hot)."""
    stop = (max(now_ms, -1) + 1).to_bytes(8, "big")
    hot = partitioning.any_hot
    for key, value in store.scan(partition, b"", stop):
        tenant, pos = read_part(key, 8)
        if hot:
            machine, pos = read_part(key, pos)
            instance, _ = read_part(key, pos)
            yield Due(key, partitioning.key(tenant, machine, instance), value)
        else:
            yield Due(key, tenant.encode(), value)
