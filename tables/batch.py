"""A batch of state writes for one partition: read-your-writes, one write per key.

The dispatcher applies many events per batch; the same instance may be touched many
times. Reads go through the batch's overlay, and at the end each key is written once,
to the changelog and then to RocksDB, so the changelog carries one record per key per
batch instead of one per event. Timer index entries follow from the outcome's timer
writes (``tables.timers``).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any

from pipeline.address import Address
from pipeline.outcome import Outcome
from pipeline.record import Record, copy_state, load_record, load_state
from tables.history import purge_writes, slot_write
from tables.keys import OFFSET_KEY, encode_key, read_part, tenant_prefix
from tables.scan import instance_ranges, merge
from tables.store import PartitionStore
from tables.timers import index_writes

__all__ = ["StateBatch", "applied_offset"]

_ABSENT: Any = object()


class StateBatch:
    """Pending writes to the state table and the timer index of one partition."""

    def __init__(
        self,
        state: PartitionStore,
        timers: PartitionStore,
        partition: int,
        parent: StateBatch | None = None,
        *,
        keep_history: int = 0,
    ) -> None:
        self._state = state
        self.keep_history = keep_history
        self._timers = timers
        self.partition = partition
        # A batch whose writes are committed to the changelog but not yet in RocksDB:
        # reads see them first. Set it to None once the parent is applied.
        self.parent = parent
        self.state_writes: dict[bytes, bytes | None] = {}
        self.timer_writes: dict[bytes, bytes | None] = {}
        self._records: dict[Address, Record | None] = {}
        self._keys: dict[Address, bytes] = {}
        self._get = state.getter(partition)
        # The keys of the instances this batch wrote, sorted, for scans; built by the
        # first scan only, so a batch that none of its events scans pays nothing.
        self._written: list[bytes] | None = None
        self._addresses: dict[bytes, Address] = {}

    def load(self, address: Address) -> Record | None:
        """The instance's record as of this batch (its own writes included)."""
        records = self._records
        if address in records:
            return records[address]
        parent = self.parent
        if parent is not None and address in parent._records:  # noqa: SLF001 - same class
            record = records[address] = parent._records[address]  # noqa: SLF001
            return record
        raw = self._get(self._key(address))
        record = records[address] = None if raw is None else load_record(raw)
        return record

    def state(self, address: Address) -> Any:
        """A copy of the instance's state as of this batch (None: none, or ended), for a
        view (a :data:`pipeline.view.StateReader`): a record the batch or its parent
        holds is copied; one read from the store is decoded straight into new objects,
        without building (or keeping) its record."""
        records = self._records
        record = records.get(address, _ABSENT)
        if record is _ABSENT and self.parent is not None:
            record = self.parent._records.get(address, _ABSENT)  # noqa: SLF001 - same class
        if record is _ABSENT:
            raw = self._get(self._key(address))
            return None if raw is None else load_state(raw)
        if record is None or record.state is None:
            return None
        return copy_state(record.state)

    def _key(self, address: Address) -> bytes:
        key = self._keys.get(address)
        if key is None:
            key = self._keys[address] = encode_key(*address)
        return key

    def store(
        self, address: Address, outcome: Outcome, stored: bytes | None, change: bytes | None = None
    ) -> None:
        """Record what ``outcome`` changes for the instance at ``address``; ``stored`` is
        the new record's bytes (None: the instance is deleted), ``change`` the published
        state change's (kept in the instance's history, if the batch keeps one)."""
        key = self._key(address)
        self._records[address] = outcome.record
        writes = self.state_writes
        if self._written is not None and key not in writes:
            insort(self._written, key)
            self._addresses[key] = address
        writes[key] = stored
        keep = self.keep_history
        if keep:
            if change is not None and outcome.change is not None:
                slot, value = slot_write(key, outcome.change.seq, change, keep)
                writes[slot] = value
            elif outcome.status == "purged":
                writes.update(purge_writes(key, keep))
        if outcome.timers:
            self.timer_writes.update(index_writes(key, outcome.timers))

    def scan(self, tenant: str, machine: str, prefix: str = "") -> Iterator[tuple[str, Record]]:
        """``machine``'s instances of ``tenant`` whose id starts with ``prefix``, as of
        this batch (its own writes and its parent's laid over the store), in key order:
        a :data:`pipeline.view.Scanner`."""
        ranges = instance_ranges(tenant, machine, prefix)
        overlay: dict[bytes, Record | None] = {}
        parent = self.parent
        for batch in (parent, self) if parent is not None else (self,):
            written = batch._written_keys()  # noqa: SLF001 - same class
            for start, stop in ranges:
                at = bisect_left(written, start)
                while at < len(written) and written[at] < stop:
                    key = written[at]
                    overlay[key] = batch._records[batch._addresses[key]]  # noqa: SLF001
                    at += 1
        stored = self._state.scan_ranges(self.partition, ranges)
        skip = len(tenant_prefix(tenant, machine))
        for key, record in merge(stored, sorted(overlay.items())):
            yield read_part(key, skip)[0], record

    def _written_keys(self) -> list[bytes]:
        if self._written is None:
            writes = self.state_writes
            self._addresses = {k: a for a, k in self._keys.items() if k in writes}
            self._written = sorted(self._addresses)
        return self._written

    def applied_up_to(self, next_offset: int) -> None:
        """Record, with the state, that the partition's events before ``next_offset``
        are applied (so they are skipped if they are ever consumed again)."""
        self.state_writes[OFFSET_KEY] = b"%d" % next_offset

    def __len__(self) -> int:
        return len(self.state_writes) + len(self.timer_writes)

    def apply_locally(self) -> None:
        """Write the batch into RocksDB (after the changelog transaction committed)."""
        self._state.write(self.partition, self.state_writes)
        self._timers.write(self.partition, self.timer_writes)


def applied_offset(state: PartitionStore, partition: int) -> int:
    """The next events offset to apply in ``partition``, as its state stores it
    (:meth:`StateBatch.applied_up_to`); -1 before any."""
    stored = state.get(partition, OFFSET_KEY)
    return -1 if stored is None else int(stored)
