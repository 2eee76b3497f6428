"""Answers to sent events: what became of one event, read from what the worker published.

A producer that wants the outcome of an event (``Client.update``) does not ask the
worker for it: the worker publishes every outcome anyway. An applied event is its state
change on ``<app>.state-changes`` (``event_id`` names it), a rejected one its dead
letter on ``<app>.dlq`` (the original event, with ``garrison.stage`` and
``garrison.reason``). Only a duplicate leaves no trace, so an event may carry the
Kafka header ``garrison.reply`` (:data:`REPLY_HEADER`): when such an event is a
duplicate, the decision adds one small record to ``<app>.replies`` (see
:func:`duplicate_reply`). Without the header nothing changes, so an event nobody waits
for costs the worker nothing; the header is only read on the duplicate path.

The functions here turn those records into an :class:`Answer`; pure, no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pipeline.deadletter import LISTENER_HEADER, REASON_HEADER, STAGE_HEADER
from pipeline.envelope import Event, Headers
from pipeline.outcome import StateChange
from pipeline.record import Record

__all__ = [
    "REPLY_HEADER",
    "REPLY_WANTED",
    "Answer",
    "AnswerStatus",
    "duplicate_reply",
    "wants_reply",
]

REPLY_HEADER = "garrison.reply"
REPLY_WANTED: tuple[tuple[str, bytes], ...] = ((REPLY_HEADER, b"1"),)
"""The headers of an event whose sender waits for its answer."""

AnswerStatus = Literal["applied", "duplicate", "rejected", "sent"]


def wants_reply(headers: Headers | None) -> bool:
    """Whether a consumed event's sender asked for an answer (the reply header)."""
    return bool(headers) and any(k == REPLY_HEADER for k, _ in headers or ())


def duplicate_reply(event: Event, record: Record | None) -> bytes:
    """The ``<app>.replies`` record for a duplicate: the event's id and address, and the
    instance's sequence number and state when the duplicate arrived (which may be later
    than what the first delivery produced)."""
    return orjson.dumps(
        {
            "status": "duplicate",
            "event_id": event.id,
            "event_type": event.type,
            "tenant": event.tenant,
            "machine": event.machine,
            "instance": event.instance,
            "seq": None if record is None else record.seq,
            "state": None if record is None else record.state,
        }
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one sent event.

    - ``applied``: ``seq`` and ``state`` (and ``prev``) are the state change it made;
    - ``rejected``: ``stage`` and ``reason`` are its dead letter's;
    - ``duplicate``: the id was applied before; ``seq`` and ``state`` are the
      instance's when the duplicate arrived;
    - ``sent``: sent without waiting for the outcome.
    """

    status: AnswerStatus
    event_id: str
    tenant: str
    machine: str
    instance: str
    event_type: str = ""
    seq: int | None = None
    state: Any = None
    prev: Any = None
    stage: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Not rejected."""
        return self.status != "rejected"

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data (what ``garrison send --wait`` prints)."""
        out: dict[str, Any] = {
            "status": self.status,
            "event_id": self.event_id,
            "tenant": self.tenant,
            "machine": self.machine,
            "instance": self.instance,
            "event_type": self.event_type,
        }
        if self.status == "rejected":
            out.update(stage=self.stage, reason=self.reason)
        elif self.status != "sent":
            out.update(seq=self.seq, state=self.state)
            if self.status == "applied":
                out["prev"] = self.prev
        return out

    @classmethod
    def sent(cls, event: Event) -> Answer:
        """The answer of an event sent without waiting."""
        return cls("sent", event.id, event.tenant, event.machine, event.instance, event.type)

    @classmethod
    def from_change(cls, change: StateChange) -> Answer:
        """An applied event's answer, from its state change."""
        return cls(
            "applied",
            change.event_id,
            change.tenant,
            change.machine,
            change.instance,
            change.event_type,
            change.seq,
            change.state,
            change.prev,
        )

    @classmethod
    def from_dead_letter(cls, value: bytes | None, headers: Headers) -> Answer | None:
        """A rejected event's answer, from its dead letter; None for a dead letter that
        is not a rejected event (a listener's, or bytes that name no event id)."""
        stage = reason = None
        ce: dict[str, str] = {}
        for k, v in headers:
            if k == LISTENER_HEADER:
                return None
            if k == STAGE_HEADER:
                stage = v.decode(errors="replace")
            elif k == REASON_HEADER:
                reason = v.decode(errors="replace")
            elif k.startswith("ce_"):  # the binary content mode's attributes
                ce[k[3:]] = v.decode(errors="replace")
        if stage is None:
            return None
        attrs: dict[str, Any] = dict(ce)
        try:
            body = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and "id" in body:
            attrs = body
        event_id = attrs.get("id")
        if not isinstance(event_id, str):
            return None
        return cls(
            "rejected",
            event_id,
            _text(attrs.get("tenant")),
            _text(attrs.get("machine")),
            _text(attrs.get("instance")),
            _text(attrs.get("type")),
            stage=stage,
            reason=reason,
        )

    @classmethod
    def from_reply(cls, value: bytes | None) -> Answer | None:
        """A duplicate's answer, from its ``<app>.replies`` record (None: not one)."""
        try:
            o = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return None
        if not isinstance(o, dict) or o.get("status") != "duplicate":
            return None
        if not isinstance(o.get("event_id"), str):
            return None
        return cls(
            "duplicate",
            o["event_id"],
            _text(o.get("tenant")),
            _text(o.get("machine")),
            _text(o.get("instance")),
            _text(o.get("event_type")),
            o.get("seq"),
            o.get("state"),
        )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
