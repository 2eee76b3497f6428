"""The record kept per instance, and its compact serialisation.

A record is what the state table holds for one address: the machine's state, the
sequence number of the last applied event, the machine version the instance runs,
timestamps, the expiry, the ids of the last events applied (for de-duplication) and
its armed timers. The pure core builds new records; ``tables/`` stores their bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from pipeline.errors import GarrisonError
from pipeline.jsonbytes import dumps_kept

__all__ = ["NO_TIMERS", "Record", "Timer", "copy_state", "dump_record", "load_record", "load_state"]


def copy_state(state: Any) -> Any:
    """A copy of a JSON-compatible state that shares nothing with it: states are stored
    as JSON, so a round trip through orjson is the copy (TypeError: not JSON)."""
    return orjson.loads(orjson.dumps(state))


@dataclass(frozen=True, slots=True)
class Timer:
    """An armed timer: when it is due, its period (0 = once), what it delivers."""

    due_ms: int
    every_ms: int
    event_type: str
    data: Any = None


NO_TIMERS: Mapping[str, Timer] = MappingProxyType({})


class Record(NamedTuple):
    """The durable record of one instance. ``seq`` counts applied events (1, 2, ...).

    Immutable (a NamedTuple: built per event, see :class:`pipeline.envelope.Event`);
    ``timers`` is never changed in place, a new record gets a new mapping.
    """

    state: Any
    seq: int
    version: int
    created_ms: int
    updated_ms: int
    expires_ms: int | None = None
    recent: tuple[str, ...] = ()
    timers: Mapping[str, Timer] = NO_TIMERS


_FORMAT = 1


def dump_record(record: Record) -> bytes:
    """Serialise a record (orjson; a list, so field names are not repeated per key)."""
    timers = {n: (t.due_ms, t.every_ms, t.event_type, t.data) for n, t in record.timers.items()}
    return dumps_kept(
        (
            _FORMAT,
            record.state,
            record.seq,
            record.version,
            record.created_ms,
            record.updated_ms,
            record.expires_ms,
            record.recent,
            timers,
        )
    )


def load_record(raw: bytes) -> Record:
    """Inverse of :func:`dump_record`."""
    try:
        fmt, state, seq, version, created, updated, expires, recent, timers = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise GarrisonError(f"stored record is not a garrison record: {exc}") from None
    if fmt != _FORMAT:
        raise GarrisonError(f"stored record has format {fmt}; this garrison reads {_FORMAT}")
    return Record(
        state,
        seq,
        version,
        created,
        updated,
        expires,
        tuple(recent),
        {n: Timer(*t) for n, t in timers.items()} if timers else NO_TIMERS,
    )


def load_state(raw: bytes) -> Any:
    """Only the state of a record's bytes (None: an ended instance's tombstone), decoded
    into new objects: what a view of a sibling reads, without building its record."""
    try:
        fmt, state, *_ = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise GarrisonError(f"stored record is not a garrison record: {exc}") from None
    if fmt != _FORMAT:
        raise GarrisonError(f"stored record has format {fmt}; this garrison reads {_FORMAT}")
    return state
