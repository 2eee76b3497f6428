"""The records of the optional compacted topic ``<app>.latest``: each instance's latest state.

For consumers that want a table rather than a log (a cache, a search index, a join in
another stream processor): with ``GARRISON_HISTORY_LATEST_TOPIC=true`` the worker
produces, in the same transaction as each state change, one record keyed by the
instance's address with its latest state, and a tombstone (no value) when the instance
ends, so log compaction keeps exactly one record per live instance.

The key is readable, ``tenant/machine/instance``: ids cannot contain ``/``
(:mod:`pipeline.address`), so the key is unambiguous. Records go to the tenant's
partition, like every garrison topic, so one instance's records are in order.
"""

from __future__ import annotations

import orjson

from pipeline.outcome import StateChange

__all__ = ["latest_key", "latest_value"]


def latest_key(tenant: str, machine: str, instance: str) -> bytes:
    """The record key of an instance: ``b"acme/order/o-1"``.

    >>> latest_key("acme", "order", "o-1")
    b'acme/order/o-1'
    """
    return f"{tenant}/{machine}/{instance}".encode()


def latest_value(change: StateChange) -> bytes | None:
    """The record value after ``change``: the instance's latest state with its seq,
    version and time; None (a tombstone) when the change ended the instance."""
    if change.state is None:
        return None
    return orjson.dumps(
        {
            "tenant": change.tenant,
            "machine": change.machine,
            "instance": change.instance,
            "seq": change.seq,
            "version": change.version,
            "event_id": change.event_id,
            "time_ms": change.time_ms,
            "state": change.state,
        }
    )
