"""Per-partition access to a Faust RocksDB table, for batched writers and readers.

Faust's table API writes one key at a time and picks the changelog partition from a
context variable, which a batched dispatcher does not have. This module is the one
place that reaches into the store: the RocksDB database of a partition, raw-mode
write batches, and the changelog offset Faust's recovery resumes from. Values written
here are the same bytes the changelog carries, so recovery restores them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from faust.stores.rocksdb import RocksDBOptions
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
)

from pipeline.settings import RocksDBSettings
from tables.scan import in_ranges

__all__ = ["PartitionStore", "options_for", "shared_cache", "write_all"]


def shared_cache(settings: RocksDBSettings) -> Cache:
    """The RocksDB block cache of one worker, for every database of every table it
    holds (each partition's, active or standby, is a database of its own).

    Faust gives each database a cache of its own (128 MiB each, garrison's old
    default), so a worker's cache memory could grow with its partitions: with 32, 64
    databases, up to 8 GiB. Shared, it is ``block_cache_size`` whatever the partition
    count. The memtables stay each database's own: a shared WriteBufferManager limit
    counts every open memtable's arena block and bloom filter (64 databases: 268 MiB
    with 32 MiB memtables, 166 with 16, all but empty), and with 64 databases a 64 MiB
    limit flushed on nearly every write (measured: 383 SST files from 5 MiB of writes,
    127 us a batch write against 47; a worker with 32 partitions at 2,000 events/s, p99
    431.6 ms in the full bench/run at d0e56fa, against 184.9 before). Peak RSS of a
    worker with 4 partitions applying 1.2M events to 1M instances (``bench/run --only
    restore``, one run each): 679-709 MiB before; with JSON values trimmed
    (``pipeline.jsonbytes``) and this cache of 64 MiB, 568 with 32 MiB memtables and
    516 with 16 (the default; 16,931 and 16,838 events/s)."""
    return Cache(settings.block_cache_size)


class _Options(RocksDBOptions):
    """garrison's RocksDB settings as Faust's options, plus a whole-key bloom filter on
    the memtables.

    A dispatcher looks up every event's instance before applying it. Without the
    filter, a key not in the newest memtable is searched for in every memtable's skip
    list (a new instance: in all of them, and then the files); with it, most of those
    searches end at the filter. Measured here with 300k keys of 240 bytes: a lookup of
    a new key 2.1 -> 0.5 us, of an existing one 5.5 -> 3.8 us, a write +0.3 us."""

    def __init__(self, settings: RocksDBSettings, cache: Cache, *, use_rocksdict: bool) -> None:
        super().__init__(
            max_open_files=settings.max_open_files,
            write_buffer_size=settings.write_buffer_size,
            max_write_buffer_number=settings.max_write_buffer_number,
            block_cache_size=settings.block_cache_size,
            bloom_filter_size=settings.bloom_bits_per_key,
            use_rocksdict=use_rocksdict,
        )
        self.memtable_bloom_ratio = settings.memtable_bloom_ratio
        self.cache = cache

    def as_options(self) -> Options:
        options: Options = super().as_options()
        # Faust's table options again, with the worker's one cache instead of a new one.
        table = BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.cache)
        table.set_index_type(BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        if self.memtable_bloom_ratio > 0:
            options.set_memtable_prefix_bloom_ratio(self.memtable_bloom_ratio)
            options.set_memtable_whole_key_filtering(True)
        return options


def write_all(db: Rdict, writes: Mapping[bytes, bytes | None]) -> None:
    """Apply puts (bytes) and deletes (None) to ``db`` in one write batch."""
    batch = WriteBatch(raw_mode=True)
    for key, value in writes.items():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    db.write(batch)


def options_for(settings: RocksDBSettings, cache: Cache) -> Options:
    """The options garrison opens each partition's database with (``bench``'s
    restore comparison opens its own with them)."""
    options: Options = _Options(settings, cache, use_rocksdict=True).as_options()
    return options


class PartitionStore:
    """The RocksDB databases behind one Faust table (``rocksdb://`` store, raw serde)."""

    def __init__(self, table: Any, settings: RocksDBSettings, cache: Cache) -> None:
        self._table = table
        # Faust has no app-wide RocksDB setting; its store builds options from the
        # table's and opens each partition's database with whatever is on the store
        # when the partition is assigned. Ours go there before that.
        store = table.data
        store.rocksdb_options = _Options(settings, cache, use_rocksdict=store.use_rocksdict)

    @property
    def changelog_topic(self) -> str:
        """The table's changelog topic name (Faust names it)."""
        return str(self._table.changelog_topic.get_topic_name())

    def db(self, partition: int) -> Rdict:
        """The database of ``partition`` (opened on first use)."""
        db: Rdict = self._table.data._db_for_partition(partition)  # noqa: SLF001 - module doc
        return db

    def get(self, partition: int, key: bytes) -> bytes | None:
        """One value, or None."""
        value = self.db(partition).get(key)
        return None if value is None else bytes(value)

    def getter(self, partition: int) -> Callable[[bytes], bytes | None]:
        """``get`` for many keys of one partition (the store is raw-mode, so values are
        bytes already). It finds the database on each call, in Faust's dict of open
        ones, instead of holding it: a getter outliving the partition's revoke (a
        stopped lane's batch, still referenced) held RocksDB's lock, and the partition
        could not be opened again in this process (4 such batches kept a worker from
        taking its partition back after broker outages). 0.81 against 0.77 us a get."""
        dbs: dict[int, Rdict] = self._table.data._dbs  # noqa: SLF001 - module doc
        open_db = self.db

        def get(key: bytes) -> bytes | None:
            db = dbs.get(partition)
            value: bytes | None = (open_db(partition) if db is None else db).get(key)
            return value

        return get

    def write(self, partition: int, writes: Mapping[bytes, bytes | None]) -> None:
        """Apply puts (bytes) and deletes (None) atomically."""
        if writes:
            write_all(self.db(partition), writes)

    def clear(self, partition: int) -> None:
        """Delete everything in ``partition``'s database (its restored offset too)."""
        db = self.db(partition)
        keys = [key for key in db.keys() if isinstance(key, bytes)]  # raw mode: all bytes
        for start in range(0, len(keys), 10_000):
            batch = WriteBatch(raw_mode=True)
            for key in keys[start : start + 10_000]:
                batch.delete(key)
            db.write(batch)

    def changelog_offset(self, partition: int) -> int | None:
        """The changelog offset the local store of ``partition`` is restored up to."""
        from faust.types import TP

        offset = self._table.data.persisted_offset(TP(self.changelog_topic, partition))
        return None if offset is None else int(offset)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        """Record that the changelog up to ``offset`` is in the local store, so a restart
        recovers only what came after."""
        from faust.types import TP

        self._table.data.set_persisted_offset(TP(self.changelog_topic, partition), offset)

    def scan(
        self, partition: int, start: bytes = b"", stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Key order from ``start`` up to (not including) ``stop``."""
        it = self.db(partition).iter()
        it.seek(start)
        while it.valid():
            key = bytes(it.key())
            if stop is not None and key >= stop:
                return
            yield key, bytes(it.value())
            it.next()

    def scan_ranges(
        self, partition: int, ranges: Iterable[tuple[bytes, bytes]]
    ) -> Iterator[tuple[bytes, bytes]]:
        """Key order within each ``(start, stop)`` range (:func:`tables.scan.in_ranges`)."""
        return in_ranges(self.db(partition), ranges)

    def scan_prefix(
        self, partition: int, prefix: bytes, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every key starting with ``prefix``, from ``start`` (a key within the prefix:
        where a page of a listing goes on) or the first."""
        for key, value in self.scan(partition, prefix if start is None else max(start, prefix)):
            if not key.startswith(prefix):
                return
            yield key, value
