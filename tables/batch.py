"""A batch of state writes for one partition: read-your-writes, one write per key.

The dispatcher applies many events per batch; the same instance may be touched many
times. Reads go through the batch's overlay, and at the end each key is written once,
to the changelog and then to RocksDB, so the changelog carries one record per key per
batch instead of one per event. Timer index entries follow from the outcome's timer
writes (``tables.timers``).
"""

from __future__ import annotations

from pipeline.address import Address
from pipeline.outcome import Outcome
from pipeline.record import Record, load_record
from tables.history import purge_writes, slot_write
from tables.keys import OFFSET_KEY, encode_key
from tables.store import PartitionStore
from tables.timers import index_writes

__all__ = ["StateBatch"]


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
