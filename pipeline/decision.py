"""The per-record decision: one consumed record in; what to store and produce out, as data.

:func:`apply_record` is everything a dispatch lane decides about one record of
``<app>.events``: decode it, find the instance's record, :func:`~pipeline.step.step` it,
and turn the outcome into the records to produce (the state change, the emitted events)
or into a dead letter. Like ``step`` it reads no clock, makes no ids and does no I/O;
the lane in ``agents/`` only loads, stores and produces what it returns, so every
branch here is unit-tested without Kafka (``tests/pipeline/test_decision.py``).

Example::

    rules = Rules(registry, Topics.of("shop"))
    applied = apply_record(rules, records.get, consumed)
    if applied.outcome is not None:
        store(applied.address, applied.outcome)
    for out in applied.outputs:
        produce(out)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from pipeline.address import Address
from pipeline.deadletter import DeadLetter, Headers
from pipeline.envelope import decode_event, encode_event
from pipeline.errors import InvalidOutput, Rejected
from pipeline.latest import latest_key, latest_value
from pipeline.outcome import Outcome
from pipeline.record import Record, dump_record
from pipeline.registry import Registry
from pipeline.settings import Topics
from pipeline.step import TOMBSTONE_MS, step

__all__ = ["Applied", "Consumed", "Loader", "Output", "Rules", "Verdict", "apply_record"]

Verdict = Literal["applied", "duplicate", "stale", "rearmed", "expired", "purged", "rejected"]
Loader = Callable[[Address], Record | None]
"""The instance's record as of this point in the partition (None: no such instance)."""


class Consumed(Protocol):
    """A consumed Kafka record, as aiokafka's ``ConsumerRecord`` has it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


class Output(NamedTuple):
    """One record to produce, in the lane's transaction. ``partition`` None: the lane's
    own partition (every garrison topic is laid out like the events topic)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None


class Applied(NamedTuple):
    """What :func:`apply_record` decided. ``outcome`` is set when there is something to
    store for ``address`` (applied, rearmed, expired), with ``stored``, the record's
    bytes (None: delete it); ``outputs`` are the records to produce, a dead letter
    among them when ``verdict`` is ``rejected`` (``stage`` and ``reason`` say why);
    ``change`` is the published state change's bytes (what the worker's history keeps)."""

    verdict: Verdict
    address: Address | None = None
    outcome: Outcome | None = None
    stored: bytes | None = None
    outputs: tuple[Output, ...] = ()
    stage: str = ""
    reason: str = ""
    change: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """What every decision of one app shares: its machines, topics and limits."""

    registry: Registry
    topics: Topics
    keep_ids: int = 16
    tombstone_ms: int = TOMBSTONE_MS


def apply_record(rules: Rules, load: Loader, rec: Consumed) -> Applied:
    """Decide what one record of the events topic does."""
    try:
        event = decode_event(rec.value, fallback_time_ms=rec.timestamp)
    except Rejected as exc:
        return _rejected(rules, rec, exc)
    address = Address(event.tenant, event.machine, event.instance)
    outcome = step(
        rules.registry,
        load(address),
        event,
        keep_ids=rules.keep_ids,
        tombstone_ms=rules.tombstone_ms,
    )
    verdict = outcome.status
    if verdict == "rejected":
        assert outcome.rejection is not None
        return _rejected(rules, rec, outcome.rejection)
    if verdict == "duplicate" or verdict == "stale":
        return Applied(verdict, address, reason=outcome.reason)
    tenant_key = event.tenant.encode()
    topics = rules.topics
    outputs = []
    change = None
    try:
        # Everything is serialised here, so what cannot be (a state or timer data that
        # is not JSON) is this event's dead letter, not the lane's failure later.
        stored = None if outcome.record is None else dump_record(outcome.record)
        if outcome.change is not None:
            change = outcome.change.to_json()
            outputs.append(Output(topics.state_changes, tenant_key, change))
            if topics.latest is not None:  # the compacted latest-state topic, if enabled
                key = latest_key(*address)
                outputs.append(Output(topics.latest, key, latest_value(outcome.change)))
        for sent in outcome.emitted:
            outputs.append(
                Output(sent.topic or topics.events, tenant_key, encode_event(sent.event))
            )
    except Rejected as exc:
        return _rejected(rules, rec, exc)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        return _rejected(
            rules,
            rec,
            InvalidOutput(
                f"applying {event.type!r} gives a state or timer that is not JSON: {exc}; "
                "keep states, timer data and emitted data to JSON types",
                event_type=event.type,
            ),
        )
    return Applied(verdict, address, outcome, stored, tuple(outputs), change=change)


def _rejected(rules: Rules, rec: Consumed, exc: Rejected) -> Applied:
    letter = DeadLetter(
        rec.key,
        rec.value,
        exc.stage,
        exc.reason,
        type(exc).__name__,
        rec.topic,
        rec.partition,
        rec.offset,
        rec.timestamp,
        rec.headers or (),
    )
    out = Output(rules.topics.dlq, letter.key, letter.value, tuple(letter.headers()))
    return Applied("rejected", outputs=(out,), stage=exc.stage, reason=exc.reason)
