"""JSON values kept in memory are the size of their bytes (``pipeline.jsonbytes``)."""

from __future__ import annotations

import tracemalloc

import orjson

from pipeline.jsonbytes import dumps_kept


def _allocated_per_value(make: object) -> float:
    tracemalloc.start()
    try:
        kept = [make() for _ in range(2000)]  # type: ignore[operator]
        size = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename"))
    finally:
        tracemalloc.stop()
    assert len(kept) == 2000
    return size / 2000


def test_a_kept_value_is_the_json_orjson_makes_in_an_allocation_of_its_size() -> None:
    doc = [1, {"count": 3, "total": 12, "last": "e-1"}, 3, 1, [], {}]
    assert dumps_kept(doc) == orjson.dumps(doc)
    assert type(dumps_kept(doc)) is bytes
    # The bytes object's header and its 50-odd bytes; orjson 3.12's own takes 4 KiB.
    assert _allocated_per_value(lambda: dumps_kept(doc)) < 200
