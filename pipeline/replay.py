"""Replay and the determinism check, purely: the log applied again, compared with what was.

``garrison replay APP`` (``garrison/replay.py`` reads the topics) streams each partition
of ``<app>.events`` through a :class:`Replayer`: every record goes through
:func:`~pipeline.decision.apply_record` with the app's current machines against a
scratch store, so rejections, duplicates, stale and re-armed timers, expiries and
tombstones are decided exactly as the worker decides them. Each change the replay makes
is compared by a :class:`Comparer` with the change the pipeline published on
``<app>.state-changes`` for the same event of the same instance.

Both topics are laid out alike (key = tenant, the lane writes partition p of both), so
the two streams of a partition come in the same order: the comparer first compares the
next change of each side as bytes (equal bytes: identical, nothing decoded) and only
when they differ matches by instance and event id, which re-aligns the streams after a
change one side has and the other has not. An instance is reported once, at the first
seq where the two part, with both values.

Timer firings: an event carrying ``timer`` is a firing only if garrison delivered it.
The replay applies firings as the log has them (a firing for a timer not armed is
stale, as in the worker) except the ones the pipeline dead-lettered (the dead-letter
topic names their source partition and offset: a producer's forged firing, refused by
the seal check): those are refused in the replay too, and counted.

With a range (a time or offset to start from), an instance whose life began before the
range cannot be rebuilt from it: it is counted as ``began_before`` and not compared.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from pipeline.address import Address
from pipeline.decision import Consumed, Rules, apply_record
from pipeline.envelope import decode_event
from pipeline.errors import Rejected
from pipeline.outcome import StateChange
from pipeline.record import Record
from pipeline.view import Reads, instance_order

__all__ = [
    "AddressFilter",
    "Comparer",
    "Divergence",
    "MemoryScratch",
    "ReplayStats",
    "Replayer",
    "Scratch",
]

_Key = tuple[str, str, str, str]  # tenant, machine, instance, event id


class Divergence(NamedTuple):
    """An instance whose replay parts from what the pipeline published: at ``seq``,
    ``why``, with both sides' change there (None: that side has none)."""

    tenant: str
    machine: str
    instance: str
    seq: int
    why: str
    live: dict[str, Any] | None
    replayed: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return self._asdict()


def _side(change: StateChange) -> dict[str, Any]:
    return {
        "seq": change.seq,
        "event_id": change.event_id,
        "event_type": change.event_type,
        "time_ms": change.time_ms,
        "version": change.version,
        "state": change.state,
    }


@dataclass
class ReplayStats:
    """What a replay read, did and found."""

    events: int = 0
    applied: int = 0
    duplicate: int = 0
    stale: int = 0
    rearmed: int = 0
    expired: int = 0
    purged: int = 0
    rejected: int = 0
    refused_firings: int = 0
    live_changes: int = 0
    identical: int = 0
    compared: int = 0
    diverged: int = 0
    began_before: int = 0
    unmatched_live: int = 0

    def count(self, verdict: str) -> None:
        """Count one record's verdict."""
        setattr(self, verdict, getattr(self, verdict) + 1)


class Comparer:
    """Matches replayed changes with live ones and keeps what differs.

    Feed :meth:`replayed` and :meth:`live` in each side's partition order, in any
    interleaving; :meth:`refused` the events the replay did not apply; then
    :meth:`finish`. ``divergences`` holds the first ``max_reports`` instances' reports
    (``stats.diverged`` counts them all).
    """

    def __init__(self, *, ranged: bool = False, max_reports: int = 1000) -> None:
        self.ranged = ranged
        self.max_reports = max_reports
        self.stats = ReplayStats()
        self._reports: dict[tuple[str, str, str], Divergence] = {}
        self._done: set[tuple[str, str, str]] = set()  # diverged
        self._skipped: set[tuple[str, str, str]] = set()  # began before the range
        self._r: deque[tuple[bytes, StateChange, str | None]] = deque()
        self._l: deque[bytes] = deque()
        self._r_wait: dict[_Key, deque[tuple[bytes, StateChange, str | None]]] = {}
        self._l_wait: dict[_Key, deque[tuple[bytes, StateChange]]] = {}
        self._refused: dict[_Key, str] = {}

    @property
    def divergences(self) -> list[Divergence]:
        """The reports, by instance."""
        return [self._reports[k] for k in sorted(self._reports)]

    @property
    def waiting_replayed(self) -> int:
        """Replayed changes not matched yet."""
        return len(self._r) + sum(len(q) for q in self._r_wait.values())

    @property
    def waiting_live(self) -> int:
        """Published changes not matched yet."""
        return len(self._l) + sum(len(q) for q in self._l_wait.values())

    def replayed(self, raw: bytes, change: StateChange, live_refusal: str | None = None) -> None:
        """A change the replay made (its published bytes); ``live_refusal`` says why the
        pipeline dead-lettered its event, if it did."""
        self._r.append((raw, change, live_refusal))
        self._drain()

    def live(self, raw: bytes) -> None:
        """A change the pipeline published (a record value of the state-change topic)."""
        self.stats.live_changes += 1
        self._l.append(raw)
        self._drain()

    def refused(self, address: Address, event_id: str, how: str) -> None:
        """An event of ``address`` that the replay did not apply, and why."""
        self._refused[(*address, event_id)] = how

    def _drain(self) -> None:
        r, lv = self._r, self._l
        while r and lv:
            raw, change, note = r[0]
            if raw == lv[0]:  # the common case: the same bytes, nothing to decode
                r.popleft()
                lv.popleft()
                self.stats.compared += 1
                self.stats.identical += 1
                continue
            other = StateChange.from_json(lv[0])
            mine: _Key = (change.tenant, change.machine, change.instance, change.event_id)
            theirs: _Key = (other.tenant, other.machine, other.instance, other.event_id)
            if mine == theirs:
                r.popleft()
                self._compare(change, raw, other, lv.popleft())
                continue
            waiting = self._r_wait.get(theirs)
            if waiting:
                wraw, wchange, _ = waiting.popleft()
                if not waiting:
                    del self._r_wait[theirs]
                self._compare(wchange, wraw, other, lv.popleft())
                continue
            waiting_l = self._l_wait.get(mine)
            if waiting_l:
                lraw, lchange = waiting_l.popleft()
                if not waiting_l:
                    del self._l_wait[mine]
                r.popleft()
                self._compare(change, raw, lchange, lraw)
                continue
            # Neither has its match yet: set both aside; the next pair re-aligns.
            self._r_wait.setdefault(mine, deque()).append(r.popleft())
            self._l_wait.setdefault(theirs, deque()).append((lv.popleft(), other))

    def _compare(self, mine: StateChange, raw: bytes, theirs: StateChange, live_raw: bytes) -> None:
        who = (mine.tenant, mine.machine, mine.instance)
        if who in self._done or who in self._skipped:
            return
        self.stats.compared += 1
        if raw == live_raw or (
            mine.seq == theirs.seq
            and mine.event_type == theirs.event_type
            and mine.time_ms == theirs.time_ms
            and orjson.loads(orjson.dumps(mine.state)) == theirs.state
        ):
            self.stats.identical += 1  # the same change (object key order aside)
            return
        if self.ranged and mine.seq == 1 and theirs.seq > 1:
            self._skipped.add(who)
            self.stats.began_before += 1
            return
        what = "state" if mine.seq == theirs.seq else "seq"
        self._report(
            who,
            Divergence(
                *who,
                min(mine.seq, theirs.seq),
                f"the {what} differs after event {mine.event_id!r}",
                _side(theirs),
                _side(mine),
            ),
        )

    def _report(self, who: tuple[str, str, str], found: Divergence, *, cause: bool = False) -> None:
        """Keep ``found`` unless the instance parted earlier (the lowest seq wins; at
        the same seq, a ``cause``: a change only one side has, which explains it)."""
        if who in self._skipped:
            return
        earlier = self._reports.get(who)
        if who in self._done:
            if earlier is not None and (
                found.seq < earlier.seq or (cause and found.seq == earlier.seq)
            ):
                self._reports[who] = found
            return
        self._done.add(who)
        self.stats.diverged += 1
        if len(self._reports) < self.max_reports:
            self._reports[who] = found

    def finish(self) -> None:
        """Settle what is left unmatched: a replayed change the pipeline never published
        (it refused the event, or a reducer is not deterministic about applying it), or
        a published change of an event the replay read and refused. Published changes
        of events outside the replayed range are only counted (``unmatched_live``)."""
        left_r = [*self._r, *(x for q in self._r_wait.values() for x in q)]
        left_l = [(raw, StateChange.from_json(raw)) for raw in self._l]
        left_l += [x for q in self._l_wait.values() for x in q]
        self._r.clear()
        self._l.clear()
        self._r_wait.clear()
        self._l_wait.clear()
        refused, self._refused = self._refused, {}
        for _, change, note in sorted(left_r, key=lambda x: x[1].seq):
            who = (change.tenant, change.machine, change.instance)
            why = f"the replay applies event {change.event_id!r}; the pipeline did not" + (
                f" (it dead-lettered it: {note})" if note else ""
            )
            self._report(who, Divergence(*who, change.seq, why, None, _side(change)), cause=True)
        for _, change in sorted(left_l, key=lambda x: x[1].seq):
            who = (change.tenant, change.machine, change.instance)
            how = refused.get((*who, change.event_id))
            if how is None:
                self.stats.unmatched_live += 1
                continue
            why = f"the pipeline applied event {change.event_id!r}; the replay {how}"
            self._report(who, Divergence(*who, change.seq, why, _side(change), None), cause=True)


class Scratch(Protocol):
    """Where a replay keeps each instance's record: in memory or a temporary RocksDB.
    ``scan`` serves collects (``pipeline.view``) in the live store's order, so a replay
    of a partition gathers the same slices the worker did."""

    def load(self, address: Address) -> Record | None: ...
    def scan(self, tenant: str, machine: str, prefix: str) -> Iterator[tuple[str, Record]]: ...
    def save(self, address: Address, record: Record | None, stored: bytes | None) -> None: ...
    def clear(self) -> None: ...


@dataclass
class MemoryScratch:
    """Scratch records in a dict."""

    records: dict[Address, Record] = field(default_factory=dict)

    def load(self, address: Address) -> Record | None:
        """The instance's scratch record."""
        return self.records.get(address)

    def save(self, address: Address, record: Record | None, stored: bytes | None) -> None:
        """Keep (or, with None, forget) the instance's record."""
        if record is None:
            self.records.pop(address, None)
        else:
            self.records[address] = record

    def scan(self, tenant: str, machine: str, prefix: str) -> Iterator[tuple[str, Record]]:
        """The records of ``machine``'s instances of ``tenant`` whose id starts with
        ``prefix``, in the live store's key order. A walk of every record per call: a
        replay of many collects over many instances is quicker with ``--scratch disk``."""
        found = [
            (a.instance, r)
            for a, r in self.records.items()
            if a.tenant == tenant and a.machine == machine and a.instance.startswith(prefix)
        ]
        found.sort(key=lambda item: instance_order(item[0]))
        return iter(found)

    def clear(self) -> None:
        """Forget everything (between partitions: each has its own store)."""
        self.records.clear()


@dataclass(frozen=True, slots=True)
class AddressFilter:
    """Which instances a replay covers (None: any)."""

    tenant: str | None = None
    machine: str | None = None
    instance: str | None = None

    @property
    def everything(self) -> bool:
        """Whether it lets every instance through."""
        return self.tenant is None and self.machine is None and self.instance is None

    def admits(self, tenant: str, machine: str, instance: str) -> bool:
        """Whether the instance is covered."""
        return (
            (self.tenant is None or tenant == self.tenant)
            and (self.machine is None or machine == self.machine)
            and (self.instance is None or instance == self.instance)
        )

    def admits_change(self, raw: bytes) -> bool:
        """Whether a published change (its bytes) is of a covered instance."""
        if self.everything:
            return True
        c = StateChange.from_json(raw)
        return self.admits(c.tenant, c.machine, c.instance)


class Replayer:
    """Applies records of the events topic to a scratch store, as the worker does, and
    hands the changes to a :class:`Comparer`. ``dead_lettered`` maps the (partition,
    offset) of each record the pipeline dead-lettered to why."""

    def __init__(
        self,
        rules: Rules,
        scratch: Scratch,
        comparer: Comparer,
        *,
        dead_lettered: Mapping[tuple[int, int], str] | None = None,
        only: AddressFilter = AddressFilter(),
    ) -> None:
        self.rules = rules
        self.scratch = scratch
        self.comparer = comparer
        self.dead = dead_lettered or {}
        self.only = only
        self.stats = comparer.stats
        self._views = Reads(scratch.scan)

    def event(self, rec: Consumed) -> None:
        """Replay one record of the events topic."""
        stats = self.stats
        only = self.only
        if not only.everything:
            if only.tenant is not None and rec.key != only.tenant.encode():
                return  # keyed by tenant; a mis-keyed record is the key's partition's
            try:
                ev = decode_event(rec.value, fallback_time_ms=rec.timestamp)
            except Rejected:
                return  # a dead letter of no instance
            if not only.admits(ev.tenant, ev.machine, ev.instance):
                return
        stats.events += 1
        note = self.dead.get((rec.partition, rec.offset))
        if note is not None:
            refused = self._refused_firing(rec, note)
            if refused:
                return
        applied = apply_record(self.rules, self.scratch.load, rec, self._views)
        stats.count(applied.verdict)
        if applied.outcome is not None:
            assert applied.address is not None
            self.scratch.save(applied.address, applied.outcome.record, applied.stored)
        if applied.change is not None:
            assert applied.outcome is not None
            assert applied.outcome.change is not None
            self.comparer.replayed(applied.change, applied.outcome.change, note)
        elif applied.verdict in ("rejected", "duplicate", "stale"):
            self._note_refusal(rec, f"{applied.verdict} it: {applied.reason or applied.stage}")

    def _refused_firing(self, rec: Consumed, note: str) -> bool:
        """True if ``rec`` is a timer firing the pipeline dead-lettered: not one that
        garrison delivered, so refused here too."""
        try:
            ev = decode_event(rec.value, fallback_time_ms=rec.timestamp)
        except Rejected:
            return False
        if ev.timer is None:
            return False
        self.stats.refused_firings += 1
        address = Address(ev.tenant, ev.machine, ev.instance)
        self.comparer.refused(address, ev.id, f"refused it, as the pipeline did ({note})")
        return True

    def _note_refusal(self, rec: Consumed, how: str) -> None:
        try:
            ev = decode_event(rec.value, fallback_time_ms=rec.timestamp)
        except Rejected:
            return
        self.comparer.refused(Address(ev.tenant, ev.machine, ev.instance), ev.id, how)
