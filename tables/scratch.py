"""A replay's scratch records on disk: a throwaway RocksDB (rocksdict) for replays of more
instances than fit in memory (``garrison replay --scratch disk``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict

from pipeline.address import Address
from pipeline.record import Record, load_record
from tables.keys import encode_key, read_part, tenant_prefix
from tables.scan import in_ranges, instance_ranges

__all__ = ["DiskScratch"]


class DiskScratch:
    """Records by address in a RocksDB under a temporary folder, removed by :meth:`close`."""

    def __init__(self, parent: Path | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="garrison-replay-", dir=parent))
        self._n = 0
        self._db = self._open()

    def _open(self) -> Rdict:
        self._n += 1
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        return Rdict(str(self._dir / f"scratch-{self._n}"), options)

    def load(self, address: Address) -> Record | None:
        """The instance's scratch record."""
        raw = self._db.get(encode_key(*address))
        return None if raw is None else load_record(bytes(raw))

    def save(self, address: Address, record: Record | None, stored: bytes | None) -> None:
        """Keep the record's bytes (None: forget it)."""
        key = encode_key(*address)
        if stored is None:
            self._db.delete(key)
        else:
            self._db.put(key, stored)

    def scan(self, tenant: str, machine: str, prefix: str) -> Iterator[tuple[str, Record]]:
        """The records of ``machine``'s instances of ``tenant`` whose id starts with
        ``prefix``, in key order (the live store's)."""
        skip = len(tenant_prefix(tenant, machine))
        for key, value in in_ranges(self._db, instance_ranges(tenant, machine, prefix)):
            yield read_part(key, skip)[0], load_record(value)

    def clear(self) -> None:
        """Start afresh (a new database: faster than deleting every key)."""
        self._db.close()
        self._db = self._open()

    def close(self) -> None:
        """Close and remove everything."""
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)
