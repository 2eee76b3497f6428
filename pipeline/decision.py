"""The per-record decision: one consumed record in; what to store and produce out, as data.

:func:`apply_record` is everything a dispatch lane decides about one record of
``<app>.events``: decode it (either CloudEvents content mode); refuse what claims to be
garrison's own without being so (an unsealed timer firing, a ``garrison.*`` type); send
a record found outside its tenant's partition on to that partition, unapplied; find the
instance's record, :func:`~pipeline.step.step` it, and turn the outcome into the records
to produce (the state change, the emitted events), each checked against the limits, or
into a dead letter. Like ``step`` it reads no clock, makes no ids and does no I/O;
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
from pipeline.answer import duplicate_reply, wants_reply
from pipeline.deadletter import DeadLetter, Headers
from pipeline.envelope import Event, decode_event, encode_event
from pipeline.errors import ForgedEvent, InvalidOutput, Rejected
from pipeline.latest import latest_key, latest_value
from pipeline.outcome import Outcome
from pipeline.partitioning import NOT_HOT, Partitioning
from pipeline.record import Record, dump_record
from pipeline.registry import Registry
from pipeline.seal import is_sealed
from pipeline.settings import Topics
from pipeline.step import TOMBSTONE_MS, step
from pipeline.view import Reads

__all__ = [
    "Applied",
    "Consumed",
    "Loader",
    "Output",
    "Rules",
    "Verdict",
    "apply_record",
    "dead_letter",
    "trace_headers",
]

Verdict = Literal[
    "applied", "duplicate", "stale", "rearmed", "expired", "purged", "rejected", "forwarded"
]
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
    among them when ``verdict`` is ``rejected`` (``stage`` and ``reason`` say why), a
    reply when a ``duplicate`` carried ``pipeline.answer.REPLY_HEADER``; ``change`` is
    the published state change's bytes (what the worker's history keeps)."""

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
    """What the decisions of one lane share: the app's machines, topics and limits, and
    the lane's partition.

    ``home`` gives the events partition an address belongs to (None: any partition is
    home, for tests of one partition); ``seal_key`` is the partition's key for garrison's
    own timer firings (``pipeline.seal``; None: no firing is accepted); ``service_topics``
    are the topics machines declared they emit to; ``max_record_bytes`` bounds every
    record produced (the broker refuses larger ones, and a refusal must not stop the
    partition). ``partitioning`` gives each address its Kafka key (the tenant, or
    ``tenant/instance`` for hot ones: ``pipeline.partitioning``). ``trace`` (None:
    tracing is off) is called with each event about to be applied and returns it with
    the trace context its outputs carry on (``agents.tracing`` starts the apply span
    there); without it they carry the event's own ``traceparent``, as data.
    """

    registry: Registry
    topics: Topics
    keep_ids: int = 16
    tombstone_ms: int = TOMBSTONE_MS
    partition: int = 0
    home: Callable[[Address], int] | None = None
    seal_key: bytes | None = None
    service_topics: frozenset[str] = frozenset()
    max_record_bytes: int = 900_000
    # Replay only: it has no seal keys, so it takes the log's firings as garrison's own
    # and learns from the dead-letter topic which ones the pipeline refused.
    trust_firings: bool = False
    partitioning: Partitioning = NOT_HOT
    trace: Callable[[Event], Event] | None = None


_RESERVED = "garrison."


def apply_record(rules: Rules, load: Loader, rec: Consumed, views: Reads | None = None) -> Applied:
    """Decide what one record of the events topic does. ``load`` (and ``views``: scans
    for collects, quicker state reads) also serve the views machines declare
    (``pipeline.view``): reads of the partition's records as of this record."""
    try:
        event = decode_event(rec.value, fallback_time_ms=rec.timestamp, headers=rec.headers)
        if event.timer is not None:
            if not rules.trust_firings and not is_sealed(rules.seal_key, rec.value, rec.headers):
                raise ForgedEvent(
                    f"the event claims to be a firing of timer {event.timer!r}, but only "
                    "garrison's timer delivery may send those (its seal is missing or "
                    "wrong); send events without the 'timer' attribute",
                    event_type=event.type,
                )
        elif event.type.startswith(_RESERVED):
            raise ForgedEvent(
                f"event type {event.type!r} is garrison's own (types starting "
                f"{_RESERVED!r} are reserved); choose another type",
                event_type=event.type,
            )
    except Rejected as exc:
        return dead_letter(rules, rec, exc)
    address = Address(event.tenant, event.machine, event.instance)
    home = rules.home
    if home is not None and (where := home(address)) != rules.partition:
        # Not its tenant's partition (a client with another partitioner, no key, a
        # wrong key): never applied here; the tenant's partition gets it as it came.
        key = rules.partitioning.key(*address)
        out = Output(rules.topics.events, key, rec.value, rec.headers, where)
        return Applied("forwarded", address, outputs=(out,))
    current = load(address)
    if rules.trace is not None:
        event = rules.trace(event)
    outcome = step(
        rules.registry,
        current,
        event,
        keep_ids=rules.keep_ids,
        tombstone_ms=rules.tombstone_ms,
        load=load,
        views=views,
    )
    verdict = outcome.status
    if verdict == "rejected":
        assert outcome.rejection is not None
        return dead_letter(rules, rec, outcome.rejection, address)
    if verdict == "duplicate" or verdict == "stale":
        if verdict == "duplicate" and wants_reply(rec.headers):
            # A sender waits (pipeline.answer): a duplicate publishes nothing else.
            reply = Output(
                rules.topics.replies, event.tenant.encode(), duplicate_reply(event, current)
            )
            return Applied(verdict, address, outputs=(reply,), reason=outcome.reason)
        return Applied(verdict, address, reason=outcome.reason)
    try:
        stored, change, outputs = _outputs(rules, address, outcome, event)
    except Rejected as exc:
        return dead_letter(rules, rec, exc, address)
    return Applied(verdict, address, outcome, stored, outputs, change=change)


def trace_headers(traceparent: str | None, tracestate: str | None) -> Headers:
    """The W3C trace context as Kafka record headers (``traceparent``, ``tracestate``),
    as a state change carries it: its consumers may ignore them unread."""
    if traceparent is None:
        return ()
    if tracestate is None:
        return (("traceparent", traceparent.encode()),)
    return (("traceparent", traceparent.encode()), ("tracestate", tracestate.encode()))


def _outputs(
    rules: Rules, address: Address, outcome: Outcome, event: Event
) -> tuple[bytes | None, bytes | None, tuple[Output, ...]]:
    """The record's bytes, the state change's bytes and the records to produce, each
    checked: serialised here, so what cannot be produced (not JSON, too large, an
    undeclared topic) is this event's dead letter, not the lane's failure later."""
    part = rules.partitioning
    hot = part.any_hot
    tenant_key = part.key(*address) if hot else address.tenant.encode()
    topics, limit = rules.topics, rules.max_record_bytes
    outputs = []
    change = None
    try:
        stored = None if outcome.record is None else dump_record(outcome.record)
        if outcome.change is not None:
            change = outcome.change.to_json()
            # The trace context rides in headers, not in the change's JSON: consumers
            # that do not trace ignore it, and the change stays what replay compares.
            tp = event.traceparent
            headers = () if tp is None else trace_headers(tp, event.tracestate)
            outputs.append(Output(topics.state_changes, tenant_key, change, headers))
            if topics.latest is not None:  # the compacted latest-state topic, if enabled
                key = latest_key(*address)
                outputs.append(Output(topics.latest, key, latest_value(outcome.change)))
        for sent in outcome.emitted:
            if sent.topic is not None and sent.topic not in rules.service_topics:
                declared = ", ".join(sorted(rules.service_topics)) or "none"
                raise InvalidOutput(
                    f"{sent.event.type!r} is emitted to topic {sent.topic!r}, which no "
                    f"machine declares (declared: {declared}); declare it with topics= "
                    "so the worker creates it",
                    event_type=sent.event.type,
                )
            target = Address(sent.event.tenant, sent.event.machine, sent.event.instance)
            where = None if sent.topic is not None or rules.home is None else rules.home(target)
            key = part.key(*target) if hot else tenant_key
            outputs.append(
                Output(sent.topic or topics.events, key, encode_event(sent.event), (), where)
            )
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidOutput(
            f"applying the event gives a state or timer that is not JSON: {exc}; keep "
            "states, timer data and emitted data to JSON types"
        ) from None
    if stored is not None and len(stored) > limit:
        raise InvalidOutput(
            f"the instance's record would be {len(stored):,} bytes, over the limit of "
            f"{limit:,} (GARRISON_MAX_RECORD_BYTES); keep states smaller"
        )
    for out in outputs:
        size = len(out.key or b"") + len(out.value or b"")
        if size > limit:
            what = "state change" if out.topic == topics.state_changes else f"record to {out.topic}"
            raise InvalidOutput(
                f"the {what} would be {size:,} bytes, over the limit of {limit:,} "
                "(GARRISON_MAX_RECORD_BYTES); keep states and emitted data smaller"
            )
    return stored, change, tuple(outputs)


def dead_letter(
    rules: Rules, rec: Consumed, exc: Rejected, address: Address | None = None
) -> Applied:
    """The decision to dead-letter ``rec`` for ``exc``: the original record as it came,
    with garrison's headers saying why. A record too large to be dead-lettered whole
    (its own size near the broker's limit) keeps its key and headers; its value is left
    in the events topic, where the headers say it is."""
    reason = exc.reason
    value = rec.value
    headers = tuple(rec.headers or ())
    size = len(rec.key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
    if size + 8_000 > rules.max_record_bytes:  # room for garrison's own headers
        reason += (
            f" (the value, {len(value or b''):,} bytes, is too large to copy here; it "
            "stays in the events topic at the topic, partition and offset given)"
        )
        value = None
    letter = DeadLetter(
        rec.key,
        value,
        exc.stage,
        reason,
        type(exc).__name__,
        rec.topic,
        rec.partition,
        rec.offset,
        rec.timestamp,
        headers,
    )
    out = Output(rules.topics.dlq, letter.key, letter.value, tuple(letter.headers()))
    return Applied("rejected", address, outputs=(out,), stage=exc.stage, reason=reason)
