"""A batch of state writes for one partition: read-your-writes, one write per key.

The dispatcher applies many events per batch; the same instance may be touched many
times. Reads go through the batch's overlay, and at the end each key is written once,
to the changelog and then to RocksDB, so the changelog carries one record per key per
batch instead of one per event. Timer index entries are derived here from the
outcome's timer writes.
"""

from __future__ import annotations

from pipeline.envelope import encode_event
from pipeline.outcome import Outcome
from pipeline.record import Record, dump_record, load_record
from pipeline.step import timer_firing
from tables.keys import OFFSET_KEY, decode_key, timer_key
from tables.store import PartitionStore

__all__ = ["StateBatch"]


class StateBatch:
    """Pending writes to the state table and the timer index of one partition."""

    def __init__(self, state: PartitionStore, timers: PartitionStore, partition: int,
                 parent: StateBatch | None = None) -> None:
        self._state = state
        self._timers = timers
        self.partition = partition
        # A batch whose writes are committed to the changelog but not yet in RocksDB:
        # reads see them first. Set it to None once the parent is applied.
        self.parent = parent
        self.state_writes: dict[bytes, bytes | None] = {}
        self.timer_writes: dict[bytes, bytes | None] = {}
        self._records: dict[bytes, Record | None] = {}
        self._get = state.getter(partition)

    def load(self, key: bytes) -> Record | None:
        """The instance's record as of this batch (its own writes included)."""
        records = self._records
        if key in records:
            return records[key]
        parent = self.parent
        if parent is not None and key in parent._records:  # noqa: SLF001 - same class
            record = records[key] = parent._records[key]  # noqa: SLF001
            return record
        raw = self._get(key)
        record = records[key] = None if raw is None else load_record(raw)
        return record

    def store(self, key: bytes, outcome: Outcome) -> None:
        """Record what ``outcome`` changes for the instance at ``key``."""
        if outcome.status in ("duplicate", "stale"):
            return
        self._records[key] = outcome.record
        self.state_writes[key] = None if outcome.record is None else dump_record(outcome.record)
        if not outcome.timers:
            return
        address = decode_key(key)
        for write in outcome.timers:
            if write.old_due_ms is not None:
                self.timer_writes[timer_key(write.old_due_ms, key, write.name)] = None
            if write.timer is not None:
                firing = timer_firing(*address, write.name, write.timer)
                self.timer_writes[timer_key(write.timer.due_ms, key, write.name)] = (
                    encode_event(firing))

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


