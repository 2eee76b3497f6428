"""``step``: one event applied to one instance record, purely.

``step(registry, record, event)`` returns an :class:`Outcome`: the new record, the
state change to publish, the events to emit and the timer index writes. It reads no
clock and makes no ids (emitted events get ids derived from the event's id), so the
same inputs always give the same outcome and a replay of the log rebuilds every state.
A refusal is data too: an outcome ``rejected`` carrying the
:class:`~pipeline.errors.Rejected` (its stage and reason), which the pipeline turns
into a dead-letter record and :func:`fold` skips, as the pipeline does.

Three rules keep instances apart and honest:

- A machine only ever sees a private copy of the stored state: whatever a reducer does
  to its argument, the stored record, ``prev`` in the published change and every other
  instance are untouched (a copy through JSON, the form states are stored in).
- An instance's clock never runs backwards: timers armed ``after`` a delay, the TTL
  and ``updated_ms`` count from the later of the event's time and the instance's last
  clock, so a back-dated event cannot move an expiry into the past.
- An instance that ends (its TTL expired, or a reducer returned ``None``) leaves a
  tombstone: a record with no state that keeps its sequence number and recent event
  ids for ``tombstone_ms``, so a new event for the address continues the sequence
  (seq n+1, ``prev`` None) and a late duplicate is still recognised. Then the tombstone
  is purged (a ``purged`` outcome: delete, publish nothing).

Timers are part of the record: an event carrying ``timer=name`` is a firing, applied
only if that timer is still armed for exactly that due time (otherwise it is stale,
e.g. cancelled or re-armed while the firing was in flight). TTL is a system timer,
``__ttl__``, re-armed lazily: a busy instance does not rewrite the index per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.behaviour import Behaviour
from pipeline.effect import CancelTimer, Effect, Emit, SetTimer
from pipeline.envelope import Event
from pipeline.errors import InvalidState, ReducerFailed, Rejected
from pipeline.ids import emitted_id, timer_event_id
from pipeline.outcome import Outcome, Outgoing, StateChange, TimerWrite
from pipeline.record import NO_TIMERS, Record, Timer, copy_state
from pipeline.registry import Registry
from pipeline.view import Loader, Reads, Siblings

__all__ = [
    "EXPIRED_EVENT",
    "PURGE_TIMER",
    "TOMBSTONE_MS",
    "TTL_TIMER",
    "fold",
    "step",
    "timer_firing",
]

TTL_TIMER = "__ttl__"
PURGE_TIMER = "__purge__"
EXPIRED_EVENT = "garrison.expired"
PURGED_EVENT = "garrison.purged"
TOMBSTONE_MS = 7 * 24 * 3600 * 1000
"""How long an ended instance's tombstone keeps its seq and ids (the default: 7 days,
Kafka's default retention of the state-change topic)."""


def timer_firing(event: Event, name: str, timer: Timer) -> Event:
    """The event that delivers ``timer`` of ``event``'s instance when it is due; its
    time is the due time."""
    return Event(
        timer_event_id(name, timer.due_ms),
        timer.event_type,
        "garrison.timer",
        event.tenant,
        event.machine,
        event.instance,
        timer.due_ms,
        None,
        None,
        name,
    )


def step(
    registry: Registry,
    record: Record | None,
    event: Event,
    *,
    keep_ids: int = 16,
    tombstone_ms: int = TOMBSTONE_MS,
    load: Loader | None = None,
    views: Reads | None = None,
) -> Outcome:
    """Apply ``event`` to ``record`` (None: the address has never been used). ``load``
    (and ``views``: scans for collects, quicker state reads) read the partition's other
    records as of this event, for machines that declare views (``pipeline.view``); a
    view of nothing is None without them."""
    if record is not None and event.id in record.recent:
        return Outcome("duplicate", reason=f"event id {event.id!r} was applied already")
    reads = (load, views)
    try:
        if event.timer is not None:
            return _fire(registry, record, event, keep_ids, tombstone_ms, reads)
        return _apply(registry, record, event, keep_ids, tombstone_ms, None, reads)
    except Rejected as exc:
        return Outcome("rejected", reason=exc.reason, rejection=exc)


def _private(state: Any) -> Any:
    """A copy of a stored (JSON-compatible) state that shares nothing with it."""
    try:
        return copy_state(state)
    except TypeError as exc:  # orjson.JSONEncodeError: only a state never stored
        raise InvalidState(f"stored state is not JSON: {exc}") from None


def _recent(record: Record | None, event_id: str, keep_ids: int) -> tuple[str, ...]:
    if record is None:
        return (event_id,)
    recent = record.recent + (event_id,)
    return recent[-keep_ids:] if len(recent) > keep_ids else recent


def _tombstone(
    record: Record, event: Event, clock: int, seq: int, version: int, keep_ids: int, ms: int
) -> tuple[Record, list[TimerWrite]]:
    """The record an ended instance leaves, and the index writes: every timer dropped,
    the purge timer armed."""
    writes = [TimerWrite(n, t.due_ms, None) for n, t in record.timers.items()]
    purge = Timer(clock + ms, 0, PURGED_EVENT)
    writes.append(TimerWrite(PURGE_TIMER, None, purge, timer_firing(event, PURGE_TIMER, purge)))
    tomb = Record(
        None,
        seq,
        version,
        record.created_ms,
        clock,
        None,
        _recent(record, event.id, keep_ids),
        {PURGE_TIMER: purge},
    )
    return tomb, writes


def _fire(
    registry: Registry,
    record: Record | None,
    event: Event,
    keep_ids: int,
    tombstone_ms: int,
    reads: tuple[Loader | None, Reads | None],
) -> Outcome:
    name = event.timer
    assert name is not None
    armed = None if record is None else record.timers.get(name)
    if record is None or armed is None or armed.due_ms != event.time_ms:
        return Outcome("stale", reason=f"timer {name!r} due {event.time_ms} is not armed")
    if name == PURGE_TIMER:
        return Outcome("purged", timers=(TimerWrite(name, armed.due_ms, None),))
    if name != TTL_TIMER:
        fired = event._replace(type=armed.event_type, data=armed.data)
        return _apply(registry, record, fired, keep_ids, tombstone_ms, (name, armed), reads)
    if record.expires_ms is not None and record.expires_ms > event.time_ms:
        # Touched since the TTL timer was armed: move it to the current expiry.
        later = Timer(record.expires_ms, 0, EXPIRED_EVENT)
        timers = {**record.timers, TTL_TIMER: later}
        return Outcome(
            "rearmed",
            record=record._replace(timers=timers),
            timers=(
                TimerWrite(TTL_TIMER, armed.due_ms, later, timer_firing(event, TTL_TIMER, later)),
            ),
        )
    clock = max(event.time_ms, record.updated_ms)
    seq = record.seq + 1
    tomb, writes = _tombstone(record, event, clock, seq, record.version, keep_ids, tombstone_ms)
    change = StateChange(
        event.tenant,
        event.machine,
        event.instance,
        seq,
        record.version,
        event.id,
        EXPIRED_EVENT,
        event.time_ms,
        record.state,
        None,
    )
    return Outcome("expired", tomb, change, timers=_squash(writes))


def _apply(
    registry: Registry,
    record: Record | None,
    event: Event,
    keep_ids: int,
    tombstone_ms: int,
    fired: tuple[str, Timer] | None,
    reads: tuple[Loader | None, Reads | None],
) -> Outcome:
    behaviour: Behaviour
    writes: list[TimerWrite] = []
    if record is None or record.state is None:  # a new instance (maybe on a tombstone)
        behaviour = registry.latest(event.machine)
        if behaviour.views:
            state, effects = behaviour.start(event, Siblings(event.tenant, *reads))
        else:
            state, effects = behaviour.start(event)
        prev, created = None, event.time_ms
        seq, clock = 1, event.time_ms
        timers: Mapping[str, Timer] = NO_TIMERS
        if record is not None:  # the sequence goes on; the purge is off
            seq, clock = record.seq + 1, max(event.time_ms, record.updated_ms)
            created = clock
            writes = [TimerWrite(n, t.due_ms, None) for n, t in record.timers.items()]
    else:
        try:
            behaviour, current = registry.for_instance(event.machine, record.version, record.state)
        except Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - a user migration raised
            raise ReducerFailed(
                f"migrating {event.machine!r} from v{record.version} "
                f"raised {type(exc).__name__}: {exc}",
                event_type=event.type,
            ) from exc
        private = current if behaviour.copies_state else _private(current)
        if behaviour.views:
            siblings = Siblings(event.tenant, *reads)  # the event's tenant, and no other
            state, effects = behaviour.apply(private, event, siblings)
        else:
            state, effects = behaviour.apply(private, event)
        prev, seq, created = record.state, record.seq + 1, record.created_ms
        clock = max(event.time_ms, record.updated_ms)
        timers = record.timers  # copied below only if something changes them

    emitted: tuple[Outgoing, ...] = ()
    ttl_ms = behaviour.ttl_ms
    if fired is not None or effects or (ttl_ms is not None and TTL_TIMER not in timers):
        changed = dict(timers)  # the common event touches no timer and copies nothing
        if fired is not None:
            name, armed = fired
            # A firing consumes the timer; a periodic one is re-armed one period on.
            # Effects below may still cancel or replace it.
            changed.pop(name, None)
            nxt = (
                replace(armed, due_ms=armed.due_ms + armed.every_ms) if armed.every_ms > 0 else None
            )
            if nxt is not None:
                changed[name] = nxt
            writes.append(
                TimerWrite(
                    name, armed.due_ms, nxt, None if nxt is None else timer_firing(event, name, nxt)
                )
            )
        if effects:
            emitted = _effects(effects, event, clock, changed, writes)
        if ttl_ms is not None and TTL_TIMER not in changed and state is not None:
            ttl = Timer(clock + ttl_ms, 0, EXPIRED_EVENT)
            changed[TTL_TIMER] = ttl
            writes.append(TimerWrite(TTL_TIMER, None, ttl, timer_firing(event, TTL_TIMER, ttl)))
        timers = changed

    if state is None:  # the machine ended the instance: leave a tombstone
        base = Record(None, seq - 1, behaviour.version, created, clock, None, (), timers)
        if record is not None:
            base = base._replace(recent=record.recent)
        new, ended = _tombstone(base, event, clock, seq, behaviour.version, keep_ids, tombstone_ms)
        writes.extend(ended)
    else:
        expires = None if ttl_ms is None else clock + ttl_ms
        recent = _recent(record, event.id, keep_ids)
        new = Record(state, seq, behaviour.version, created, clock, expires, recent, timers)
    change = StateChange(
        event.tenant,
        event.machine,
        event.instance,
        seq,
        behaviour.version,
        event.id,
        event.type,
        event.time_ms,
        prev,
        state,
    )
    if behaviour.queries.publish and state is not None:
        change = change._replace(computed=behaviour.queries.published(state, event.type))
    return Outcome("applied", new, change, emitted, _squash(writes) if writes else ())


def _effects(
    effects: tuple[Effect, ...],
    event: Event,
    clock: int,
    timers: dict[str, Timer],
    writes: list[TimerWrite],
) -> tuple[Outgoing, ...]:
    out: list[Outgoing] = []
    source = f"/garrison/{event.tenant}/{event.machine}/{event.instance}"
    for effect in effects:
        if isinstance(effect, Emit):
            emitted = Event(
                id=emitted_id(event.id, len(out)),
                type=effect.type,
                source=source,
                tenant=event.tenant,
                machine=effect.machine or event.machine,
                instance=effect.instance or event.instance,
                time_ms=event.time_ms,
                data=effect.data,
                parentid=event.id,
                # Inherit from the event (arvo's term): what an event causes carries its
                # trace context on, as data, so one trace shows the whole path.
                traceparent=event.traceparent,
                tracestate=event.tracestate,
            )
            out.append(Outgoing(emitted, effect.topic))
        elif isinstance(effect, SetTimer):
            old = timers.get(effect.name)
            every = 0 if effect.every is None else int(effect.every.total_seconds() * 1000)
            armed = Timer(effect.due_ms(clock), every, effect.event_type, effect.data)
            timers[effect.name] = armed
            writes.append(
                TimerWrite(
                    effect.name,
                    None if old is None else old.due_ms,
                    armed,
                    timer_firing(event, effect.name, armed),
                )
            )
        elif isinstance(effect, CancelTimer):
            old = timers.pop(effect.name, None)
            if old is not None:
                writes.append(TimerWrite(effect.name, old.due_ms, None))
        else:
            raise ReducerFailed(
                f"reducer returned an unknown effect {effect!r}; use Emit, SetTimer or CancelTimer",
                event_type=event.type,
            )
    return tuple(out)


def _squash(writes: list[TimerWrite]) -> tuple[TimerWrite, ...]:
    """One index write per timer name: the first old due time, the last new timer."""
    if len(writes) < 2:
        return tuple(writes)
    merged: dict[str, TimerWrite] = {}
    for w in writes:
        first = merged.get(w.name)
        merged[w.name] = (
            w if first is None else TimerWrite(w.name, first.old_due_ms, w.timer, w.firing)
        )
    return tuple(merged.values())


def fold(
    registry: Registry,
    events: list[Event],
    *,
    keep_ids: int = 16,
    tombstone_ms: int = TOMBSTONE_MS,
) -> tuple[Record | None, list[StateChange]]:
    """Apply ``events`` in order from nothing: the in-memory reference for replay.
    Rejected events change nothing and are skipped, as the pipeline dead-letters them."""
    record: Record | None = None
    changes: list[StateChange] = []
    for event in events:
        outcome = step(registry, record, event, keep_ids=keep_ids, tombstone_ms=tombstone_ms)
        if outcome.status in ("applied", "expired", "rearmed", "purged"):
            record = outcome.record
        if outcome.change is not None:
            changes.append(outcome.change)
    return record, changes
