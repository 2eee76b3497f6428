"""What applying one event produced: the state change, outgoing events, timer writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from pipeline.envelope import Event, format_time
from pipeline.errors import Rejected
from pipeline.jsonbytes import dumps_kept
from pipeline.record import Record, Timer

__all__ = ["StateChange", "Outgoing", "TimerWrite", "Outcome", "Status"]

Status = Literal["applied", "duplicate", "stale", "rearmed", "expired", "purged", "rejected"]


class StateChange(NamedTuple):
    """Published to ``<app>.state-changes`` (key = tenant) once per applied event.

    ``seq`` is the instance's sequence number after the event: 1, 2, 3 ... with no gaps.
    ``state`` is None when the instance expired (``event_type`` "garrison.expired").
    ``computed`` holds the machine's computed values of ``state`` when it publishes
    them (``publish_computed=True``; absent from the JSON otherwise).
    """

    tenant: str
    machine: str
    instance: str
    seq: int
    version: int
    event_id: str
    event_type: str
    time_ms: int
    prev: Any
    state: Any
    computed: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        """The published JSON."""
        change: dict[str, Any] = {
            "tenant": self.tenant,
            "machine": self.machine,
            "instance": self.instance,
            "seq": self.seq,
            "version": self.version,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "time": format_time(self.time_ms),
            "time_ms": self.time_ms,
            "prev": self.prev,
            "state": self.state,
        }
        if self.computed is not None:
            change["computed"] = self.computed
        return dumps_kept(change)

    @classmethod
    def from_json(cls, raw: bytes) -> StateChange:
        """Inverse of :meth:`to_json`."""
        o = orjson.loads(raw)
        return cls(
            o["tenant"],
            o["machine"],
            o["instance"],
            o["seq"],
            o["version"],
            o["event_id"],
            o["event_type"],
            o["time_ms"],
            o["prev"],
            o["state"],
            o.get("computed"),
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event to produce: to ``topic`` (a service topic) or, if None, to the events topic."""

    event: Event
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class TimerWrite:
    """A change to the due-time index: drop the entry at ``old_due_ms`` (if any), add
    ``timer`` (if any), which the index delivers as ``firing`` when it is due. The
    firing is built here, once, by ``step``, which knows the instance's address."""

    name: str
    old_due_ms: int | None
    timer: Timer | None
    firing: Event | None = None


class Outcome(NamedTuple):
    """The result of :func:`pipeline.step.step`.

    ``record`` is what to store: a tombstone (a record whose state is None) when the
    instance ended (``expired``, or ``applied`` by a machine that returned None); None
    with ``purged``: delete it; None with ``duplicate``, ``stale`` or ``rejected``:
    nothing to write. ``change`` is set exactly when an event was applied or the
    instance expired. ``rejected`` carries the refusal in
    ``rejection`` (its ``stage`` and ``reason`` go into the dead letter).
    """

    status: Status
    record: Record | None = None
    change: StateChange | None = None
    emitted: tuple[Outgoing, ...] = ()
    timers: tuple[TimerWrite, ...] = ()
    reason: str = ""
    rejection: Rejected | None = None
