"""Ordered reads of one tenant's instances of one machine, for collects (``pipeline.view``).

An instance id is written in its state key as ``<length>:<id>`` (``tables.keys``), so
the ids starting with a prefix are not one key range but one per id length: a scan by
id prefix visits up to :data:`~pipeline.address.MAX_ID_LENGTH` short ranges, in key
order (:func:`pipeline.view.instance_order`). A scan inside a batch also sees the
batch's records not yet in RocksDB: :func:`merge` lays them over the store's scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.address import MAX_ID_LENGTH
from pipeline.record import Record, load_record
from tables.keys import tenant_prefix

__all__ = ["in_ranges", "instance_ranges", "merge"]

# Instance ids are ASCII (pipeline.address), so no key byte after a prefix is 0xff.
_TOP = b"\xff"


def instance_ranges(tenant: str, machine: str, prefix: str = "") -> list[tuple[bytes, bytes]]:
    """The ``(start, stop)`` key ranges holding ``machine``'s instances of ``tenant``
    whose id starts with ``prefix``, in key order."""
    base = tenant_prefix(tenant, machine)
    if not prefix:
        return [(base, base + _TOP)]
    raw = prefix.encode()
    starts = sorted(base + b"%d:" % size + raw for size in range(len(raw), MAX_ID_LENGTH + 1))
    return [(start, start + _TOP) for start in starts]


def in_ranges(db: Any, ranges: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """A RocksDB's (rocksdict ``Rdict``, raw mode) keys and values within each ``(start,
    stop)`` range, the ranges one after another, with one iterator: a seek per range,
    as a collect by id prefix is many short ones."""
    it = db.iter()
    for start, stop in ranges:
        it.seek(start)
        while it.valid():
            key = bytes(it.key())
            if key >= stop:
                break
            yield key, bytes(it.value())
            it.next()


def merge(
    stored: Iterable[tuple[bytes, bytes]], overlay: list[tuple[bytes, Record | None]]
) -> Iterator[tuple[bytes, Record]]:
    """The store's ``(key, record bytes)`` in key order with ``overlay`` (the batch's
    records, in key order, None: deleted) laid over it: an overlaid key takes the
    overlay's record, a deleted one is left out."""
    i, n = 0, len(overlay)
    for key, raw in stored:
        while i < n and overlay[i][0] < key:
            k, rec = overlay[i]
            i += 1
            if rec is not None:
                yield k, rec
        if i < n and overlay[i][0] == key:
            rec = overlay[i][1]
            i += 1
            if rec is not None:
                yield key, rec
            continue
        yield key, load_record(raw)
    for k, rec in overlay[i:]:
        if rec is not None:
            yield k, rec
