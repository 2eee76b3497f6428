"""An instance's history: which of its applied changes a read wants, and time travel.

A history read (``GET /state/{tenant}/{machine}/{instance}/history``, ``Client.history``,
``garrison history``) returns an instance's applied changes in seq order, bounded by a
seq range (``from_seq``, ``to_seq``) and a time range (``since``, ``until``, on the
change's ``time``: the event's time, which the change carries and a replay repeats), a
page at a time. Time travel asks for one state instead: ``as_of_seq`` (the state after
that change) or ``as_of`` (the state at a time: after the last change before the first
one dated later than it).

Two sources serve a read, and this module decides how to join them, purely:

- the worker's store keeps the last N changes of each instance (``tables.history``);
- older ones are on ``<app>.state-changes``, in the tenant's partition, in seq order
  among the tenant's other changes. A :class:`Window` takes that partition's changes
  of the instance as they are streamed, keeps only what the read wants, and says when
  the scan can stop (at the stored changes). A seq that starts again at 1 is a new
  life of the address (its ended record was purged and the address used again): what
  came before is forgotten.

The topic's records are stamped when the worker produced them, after the event, so a
read from a time starts there (the offsets-for-times lookup) ``clock_skew_ms`` earlier,
for events dated ahead of the worker's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jsonpatch
import orjson

from pipeline.envelope import format_time, parse_time
from pipeline.errors import GarrisonError, InvalidEvent
from pipeline.outcome import StateChange

__all__ = [
    "MAX_LIMIT",
    "AsOf",
    "HistoryQuery",
    "InvalidQuery",
    "Plan",
    "Window",
    "as_of",
    "change_prefix",
    "entry",
    "parse_query",
    "plan",
    "select",
]

MAX_LIMIT = 1000


class InvalidQuery(GarrisonError, ValueError):
    """A history read's parameters do not make sense; the message says what to fix."""


class HistoryQuery(NamedTuple):
    """Which changes a history read wants: seqs ``from_seq``..``to_seq`` and times
    ``since_ms``..``until_ms`` (both inclusive; None: unbounded), the first ``limit``
    of them; ``diff`` adds each change's JSON patch from ``prev`` to ``state``."""

    from_seq: int = 1
    to_seq: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 100
    diff: bool = False

    def wants(self, change: StateChange) -> bool:
        """Whether ``change`` is in the ranges."""
        if change.seq < self.from_seq or (self.to_seq is not None and change.seq > self.to_seq):
            return False
        if self.since_ms is not None and change.time_ms < self.since_ms:
            return False
        return self.until_ms is None or change.time_ms <= self.until_ms


class AsOf(NamedTuple):
    """Time travel: the state after change ``seq``, or at time ``time_ms``."""

    seq: int | None = None
    time_ms: int | None = None


def _int(params: Mapping[str, str], name: str, low: int = 1) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < low:
        raise InvalidQuery(f"{name} must be a whole number of at least {low}, got {raw!r}")
    return int(raw)


def _time(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw.lstrip("-").isdigit():
        return int(raw)  # epoch milliseconds
    try:
        return parse_time(raw)
    except InvalidEvent:
        raise InvalidQuery(
            f"{name} must be RFC 3339 (e.g. '2026-01-31T12:00:00Z') or epoch ms, got {raw!r}"
        ) from None


def parse_query(params: Mapping[str, str]) -> HistoryQuery | AsOf:
    """A read from its query parameters: ``from_seq``, ``to_seq``, ``since``, ``until``
    (RFC 3339 or epoch ms), ``limit`` (1 to 1000, default 100), ``diff`` (true/false);
    or one of ``as_of_seq``, ``as_of``. Raises :class:`InvalidQuery` saying what to fix.

    >>> parse_query({"from_seq": "3", "limit": "2"})
    HistoryQuery(from_seq=3, to_seq=None, since_ms=None, until_ms=None, limit=2, diff=False)
    """
    known = {"from_seq", "to_seq", "since", "until", "limit", "diff", "as_of_seq", "as_of"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidQuery(
            f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    as_seq, as_time = _int(params, "as_of_seq"), _time(params, "as_of")
    if as_seq is not None or as_time is not None:
        others = sorted(set(params) - {"as_of_seq", "as_of"})
        if (as_seq is not None and as_time is not None) or others:
            raise InvalidQuery(
                "time travel takes one of as_of_seq or as_of, and no range or page parameters"
            )
        return AsOf(as_seq, as_time)
    diff = params.get("diff", "false").lower()
    if diff not in ("true", "false", "1", "0"):
        raise InvalidQuery(f"diff must be true or false, got {params['diff']!r}")
    limit = _int(params, "limit")
    if limit is not None and limit > MAX_LIMIT:
        raise InvalidQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit}")
    query = HistoryQuery(
        from_seq=_int(params, "from_seq") or 1,
        to_seq=_int(params, "to_seq"),
        since_ms=_time(params, "since"),
        until_ms=_time(params, "until"),
        limit=limit or 100,
        diff=diff in ("true", "1"),
    )
    if query.to_seq is not None and query.to_seq < query.from_seq:
        raise InvalidQuery(f"to_seq {query.to_seq} is below from_seq {query.from_seq}")
    since, until = query.since_ms, query.until_ms
    if since is not None and until is not None and until < since:
        raise InvalidQuery("until is before since")
    return query


class Plan(NamedTuple):
    """Whether a read needs the topic and, if so, the time to start it from (the
    offsets-for-times lookup; None: the partition's start)."""

    topic: bool
    start_ms: int | None = None


def plan(read: HistoryQuery | AsOf, stored: Sequence[StateChange], skew_ms: int) -> Plan:
    """What a read needs beyond the ``stored`` changes (oldest first) of the instance."""
    oldest = stored[0].seq if stored else None
    if oldest == 1:
        return Plan(False)  # the store holds the whole history
    if isinstance(read, AsOf):
        if read.seq is not None:
            return Plan(oldest is None or read.seq < oldest)
        assert read.time_ms is not None
        # The first change dated after the time can only be in a record stamped after
        # it, less the skew: the scan starts there.
        return Plan(True, read.time_ms - skew_ms)
    if oldest is not None and read.from_seq >= oldest:
        return Plan(False)
    # From a time, the changes in range are in records stamped after it, less the skew.
    return Plan(True, None if read.since_ms is None else read.since_ms - skew_ms)


class Window:
    """The instance's changes read from the topic, as far as the stored ones.

    ``feed`` each change of the instance in partition order; it keeps the ones ``keep``
    accepts (at most ``cap``) and returns True when the scan can stop: at the first
    stored change (same seq, same event id). A change at seq 1 begins a new life of the
    address, and what was kept before it is dropped.
    """

    def __init__(
        self,
        stored: Sequence[StateChange],
        keep: Callable[[StateChange], bool],
        cap: int,
    ) -> None:
        self._stored = {c.seq: c.event_id for c in stored}
        self._keep = keep
        self._cap = cap
        self.changes: list[StateChange] = []
        self.read = 0

    def feed(self, change: StateChange) -> bool:
        """Take one change of the instance; True: the scan has reached the store."""
        self.read += 1
        if self._stored.get(change.seq) == change.event_id:
            return True
        if change.seq == 1:
            self.changes.clear()
        if len(self.changes) < self._cap and self._keep(change):
            self.changes.append(change)
        return False


def select(
    older: Iterable[StateChange], stored: Sequence[StateChange], query: HistoryQuery
) -> tuple[list[StateChange], int | None]:
    """The changes a page returns (``older`` from the topic, then ``stored``, the seqs
    increasing) and the ``from_seq`` of the next page (None: this is the last)."""
    out: list[StateChange] = []
    first_stored = stored[0].seq if stored else None
    last = 0
    # The store's changes are the instance's own; the topic's are taken below them.
    below = [c for c in older if first_stored is None or c.seq < first_stored]
    for change in [*below, *stored]:
        if change.seq <= last:
            continue
        if not query.wants(change):
            continue
        if len(out) == query.limit:
            return out, change.seq
        out.append(change)
        last = change.seq
    return out, None


def as_of(
    read: AsOf,
    older: Iterable[StateChange],
    stored: Sequence[StateChange],
    current: tuple[int, Any],
) -> tuple[int, Any] | None:
    """(seq, state) of the instance as ``read`` asks, given the changes found (``older``
    from the topic, then ``stored``) and its ``current`` (seq, state); None if it did
    not exist then (or the change is not kept anywhere)."""
    changes = [*older, *stored]
    if read.seq is not None:
        if read.seq == current[0]:
            return current
        for change in changes:
            if change.seq == read.seq:
                return change.seq, change.state
        return None
    assert read.time_ms is not None
    for change in changes:
        if change.time_ms > read.time_ms:  # the first change dated after the time
            return None if change.seq == 1 else (change.seq - 1, change.prev)
    return current


def change_prefix(tenant: str, machine: str, instance: str) -> bytes:
    """The first bytes of every published change of the instance
    (:meth:`StateChange.to_json` writes the address first), so a scan of the topic
    decodes only its own records."""
    return (
        b'{"tenant":'
        + orjson.dumps(tenant)
        + b',"machine":'
        + orjson.dumps(machine)
        + b',"instance":'
        + orjson.dumps(instance)
        + b","
    )


def entry(change: StateChange, *, diff: bool = False) -> dict[str, Any]:
    """A change as a history read returns it (JSON-ready)."""
    out: dict[str, Any] = {
        "seq": change.seq,
        "version": change.version,
        "event_id": change.event_id,
        "event_type": change.event_type,
        "time": format_time(change.time_ms),
        "time_ms": change.time_ms,
        "prev": change.prev,
        "state": change.state,
    }
    if diff:
        out["diff"] = jsonpatch.make_patch(change.prev, change.state).patch
    return out
