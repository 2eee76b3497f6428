"""The RocksDB options of the state tables reach the databases Faust opens.

``tables.store`` swaps the options object of Faust's store for one that adds a whole-key
bloom filter to the memtables. Faust builds its own options object in the store's
constructor and opens each partition's database from whatever is on the store then; if
a Faust release moved that, this fails instead of lookups silently losing the filter.
No broker is needed: the app is built, not started.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from agents.app import create_app
from pipeline.registry import Registry
from pipeline.settings import RocksDBSettings, Settings, WebSettings
from tables.store import PartitionStore


def _app(tmp_path: Path, **rocksdb: object):  # type: ignore[no-untyped-def]
    settings = Settings(
        app="storetest",
        data_dir=tmp_path,
        rocksdb=RocksDBSettings(**rocksdb),
        web=WebSettings(enabled=False),
    )
    return create_app(settings, Registry())


def test_settings_reach_the_options_faust_opens_databases_with(tmp_path: Path) -> None:
    app = _app(
        tmp_path,
        memtable_bloom_ratio=0.05,
        bloom_bits_per_key=12,
        write_buffer_size=8 << 20,
        max_write_buffer_number=2,
        block_cache_size=16 << 20,
        max_open_files=99,
    )
    for store in (app.state_store, app.timer_store):
        options = store._table.data.rocksdb_options  # noqa: SLF001 - what Faust opens with
        assert options.memtable_bloom_ratio == 0.05
        assert options.bloom_filter_size == 12
        assert options.write_buffer_size == 8 << 20
        assert options.max_write_buffer_number == 2
        assert options.block_cache_size == 16 << 20
        assert options.max_open_files == 99


@pytest.mark.parametrize("ratio", [0.1, 0.0])
def test_a_database_with_the_memtable_filter_reads_back_what_was_written(
    tmp_path: Path, ratio: float
) -> None:
    store: PartitionStore = _app(tmp_path, memtable_bloom_ratio=ratio).state_store
    keys = [b"t%d\x00m\x00i%d" % (n % 7, n) for n in range(2000)]
    store.write(1, {key: b"v" + key for key in keys[:1000]})
    get = store.getter(1)
    assert all(get(key) == b"v" + key for key in keys[:1000])
    assert all(get(key) is None for key in keys[1000:])  # absent keys: the filter's case
    store.write(1, {keys[0]: None})
    assert store.get(1, keys[0]) is None
    listed = sorted((key, b"v" + key) for key in keys[:1000] if key.startswith(b"t1\x00"))
    assert list(store.scan_prefix(1, b"t1\x00")) == listed
    # From a key within the prefix (a page goes on), and a start before it is the prefix.
    assert list(store.scan_prefix(1, b"t1\x00", listed[3][0])) == listed[3:]
    assert list(store.scan_prefix(1, b"t1\x00", b"")) == listed


@pytest.mark.parametrize("held", ["strongly", "by a cycle, the collector off"])
def test_a_getter_kept_past_the_revoke_does_not_keep_the_database_open(
    tmp_path: Path, held: str
) -> None:
    """A lane's batches read through ``getter``. Faust's revoke drops a partition's
    handle without closing it; a getter still referenced after that (as a stopped
    lane's batches were, seen after broker outages), strongly or from a cycle the
    worker's rare collections leave alone, kept RocksDB's lock, and the partition
    could not be opened again when it was assigned back to the same worker."""
    store: PartitionStore = _app(tmp_path).state_store
    store.write(3, {b"k": b"v"})

    class Holder:  # a stopped lane's batch
        def __init__(self) -> None:
            self.get = store.getter(3)
            self.me = self if held != "strongly" else None

    holder = Holder()
    gc.disable()
    try:
        if held != "strongly":
            del holder  # only the cycle holds it now
        store._table.data._dbs.pop(3)  # noqa: SLF001 - as Faust's revoke_partitions does
        assert store.get(3, b"k") == b"v"  # opened again
        if held == "strongly":
            assert holder.get(b"k") == b"v"  # and the old getter reads the new handle
    finally:
        gc.enable()


def test_every_database_of_the_worker_shares_one_block_cache(tmp_path: Path) -> None:
    # Faust gives each partition's database its own; tables.store.shared_cache is one for
    # the worker, so its cache does not grow with its partitions.
    app = _app(tmp_path, block_cache_size=8 << 20)
    state, timers = app.state_store, app.timer_store
    cache = state._table.data.rocksdb_options.cache  # noqa: SLF001 - what Faust opens with
    assert timers._table.data.rocksdb_options.cache is cache  # noqa: SLF001
    value = b"v" * 200
    for store in (state, timers):
        for partition in (0, 1, 2):
            store.write(partition, {b"k%d" % n: value for n in range(2000)})
            store.db(partition).flush()  # to a file: reads then go through the cache
    before = cache.get_usage()
    for store in (state, timers):
        for partition in (0, 1, 2):
            assert store.get(partition, b"k1999") == value
    # Every database's blocks were read into the one cache.
    assert cache.get_usage() > before + 6 * 1000
    assert cache.get_usage() <= 8 << 20
