"""An instance's recent history in the worker's store: the last N changes, in slots.

The state table keeps, beside each instance's record, its last ``keep`` applied changes
(``GARRISON_HISTORY_KEEP``, default 10) as a ring: change ``seq`` goes to slot
``seq % keep`` (key layout: :func:`tables.keys.history_key`), overwriting the change
``keep`` before it. The value is the state change's JSON exactly as it was published
on ``<app>.state-changes``, so keeping it costs no serialisation, and the write needs
no read. Slots go to the changelog with the record, in the batch's transaction; a
batch that touches an instance many times writes each slot once.

Why slots and not one list per instance: a list is a read, a decode, an append and a
re-encode of up to ``keep`` changes per event, and each batch's changelog record then
carries all ``keep`` changes of every instance it touched; a slot is one put of bytes
the event produced anyway (the bench measures what it costs, ``bench/replay.py``).

A reader trusts only the slots within ``keep`` of the record's seq: slots left from a
larger ``keep`` or from before a purge are never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pipeline.outcome import StateChange
from tables.keys import history_key, history_prefix

__all__ = ["Scan", "purge_writes", "slot_write", "stored_changes"]

Scan = Callable[[int, bytes], Iterable[tuple[bytes, bytes]]]
"""A store's prefix scan, ``PartitionStore.scan_prefix(partition, prefix)``."""


def slot_write(state_key: bytes, seq: int, change: bytes, keep: int) -> tuple[bytes, bytes]:
    """The put that keeps change ``seq`` (its published bytes) of the instance."""
    return history_key(state_key, seq % keep), change


def purge_writes(state_key: bytes, keep: int) -> Iterator[tuple[bytes, None]]:
    """The deletes of every slot, when the instance's record is purged."""
    for slot in range(keep):
        yield history_key(state_key, slot), None


def stored_changes(
    scan: Scan, partition: int, state_key: bytes, seq: int, keep: int
) -> list[StateChange]:
    """The kept changes of the instance whose record is at ``seq``, oldest first: at
    most ``keep``, all with a seq in ``(seq - keep, seq]``."""
    if keep <= 0:
        return []
    found: dict[int, StateChange] = {}
    for _, value in scan(partition, history_prefix(state_key)):
        change = StateChange.from_json(value)
        if seq - keep < change.seq <= seq:
            found[change.seq] = change
    return [found[s] for s in sorted(found)]
