"""Services that machines command: the service side of garrison's orchestration.

A chart (or reducer) sends a command with ``Emit(topic=...)`` to a service topic; the
command carries the tenant, machine and instance of the sending instance. A service run
by :func:`serve` answers each command with a CloudEvent to ``<app>.events`` for that
same tenant, machine and instance, with ``parentid`` = the command's id, so the reply
is routed back to the instance that asked. If the handler raises, the answer is
``sys.<command type>.error`` with a :class:`~pipeline.contract.ServiceError` payload
(arvo's convention), which the machine handles like any other reply.

The loop is at least once: it commits its offsets after the replies are written. A
reply's id is derived from the command's id, so a reply sent twice is a duplicate the
instance skips. Service topics are created by the worker (declared with ``topics=`` on
a chart machine) or by :func:`agents.topics.ensure_topics`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.trace import SpanKind

from agents.kafka import kafka_options
from agents.topics import ensure_topics
from agents.tracing import Tracing, setup_tracing
from pipeline.contract import ServiceError, error_event_type
from pipeline.envelope import Event, decode_event, encode_event
from pipeline.errors import InvalidEvent
from pipeline.ids import reply_id
from pipeline.settings import Settings

__all__ = ["Reply", "Handler", "Service", "serve", "serve_all", "reply_to"]

log = logging.getLogger(__name__)

Reply = tuple[str, Any]
"""A service's answer: ``(event type, data)``."""

Handler = Callable[[Event], Reply | None | Awaitable[Reply | None]]
"""``handle(command) -> (type, data)``; ``None`` sends no answer (a hung service)."""


@dataclass(frozen=True)
class Service:
    """A named service consuming ``topic`` and answering with ``handle``."""

    name: str
    topic: str
    handle: Handler


def reply_to(command: Event, type: str, data: Any, *, source: str) -> Event:
    """The answer to ``command``: same tenant, machine and instance, ``parentid`` = its
    id, an id derived from its id (so a redelivered answer is a duplicate), the
    current time (services are at the edge; they may read the clock) and the command's
    trace context (the service's span's, when tracing: see :func:`serve`)."""
    return Event(
        reply_id(command.id),
        type,
        source,
        command.tenant,
        command.machine,
        command.instance,
        int(time.time() * 1000),
        data,
        command.id,
        None,
        command.traceparent,
        command.tracestate,
    )


async def _answer(service: Service, command: Event) -> Event | None:
    source = f"/service/{service.name}"
    try:
        result = service.handle(command)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - a failed command becomes an error event
        data = ServiceError(
            errorName=type(exc).__name__,
            errorMessage=str(exc),
            errorStack="".join(traceback.format_exception(exc)[-3:]),
        )
        return reply_to(command, error_event_type(command.type), data.model_dump(), source=source)
    if result is None:
        return None
    kind, data = result
    return reply_to(command, kind, data, source=source)


async def serve(
    service: Service,
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    from_start: bool = True,
    tracing: Tracing | None = None,
) -> None:
    """Run ``service`` until cancelled. ``ready`` is set once the consumer owns its
    partitions and knows where it starts reading (``from_start=False``: only commands
    sent after that point). With ``tracing``, each command is handled in a span
    ``garrison.service <name>``, child of the command's context, which the reply
    carries on. Replies are keyed as the app's producers key (``GARRISON_HOT_*``)."""
    key = settings.partitioning.key
    opts = kafka_options(settings.kafka)
    consumer = AIOKafkaConsumer(
        service.topic,
        **opts,
        group_id=f"{settings.app}.{service.name}",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest" if from_start else "latest",
    )
    producer = AIOKafkaProducer(**opts, enable_idempotence=True, linger_ms=2)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)  # let the group join finish
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolves the starting offset now
        if ready is not None:
            ready.set()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            sends = []
            for records in batch.values():
                for rec in records:
                    try:
                        command = decode_event(rec.value, fallback_time_ms=rec.timestamp)
                    except InvalidEvent as exc:
                        log.warning("%s: skipping a bad command: %s", service.name, exc)
                        continue
                    if tracing is None:
                        answer = await _answer(service, command)
                    else:
                        with tracing.span(
                            f"garrison.service {service.name}",
                            command.traceparent,
                            command.tracestate,
                            kind=SpanKind.SERVER,
                            attributes={"cloudevents.event_type": command.type},
                        ) as (parent, state):
                            traced = command.traced(parent, state)
                            answer = await _answer(service, traced)
                    if answer is not None:
                        sends.append(
                            await producer.send(
                                settings.topics.events,
                                encode_event(answer),
                                key=key(answer.tenant, answer.machine, answer.instance),
                            )
                        )
            if sends:
                await asyncio.gather(*sends)
            if batch:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


async def serve_all(services: Iterable[Service], settings: Settings) -> None:
    """Create the services' topics and run them all until cancelled (traced when
    ``GARRISON_TRACING_ENABLED``)."""
    services = list(services)
    await ensure_topics(settings, [s.topic for s in services])
    tracing = setup_tracing(settings, "service")
    try:
        await asyncio.gather(*(serve(s, settings, tracing=tracing) for s in services))
    finally:
        if tracing is not None:
            tracing.shutdown()
