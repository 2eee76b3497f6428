"""The async client producer services use to send events to garrison.

Example::

    from garrison import Client, Settings

    async with Client(Settings()) as client:
        await client.send("acme", "order", "o-1", "order.placed", {"sku": "x"})

Ids, tenant and instance are validated before anything is sent, so a bad call fails
at once with :class:`~pipeline.errors.InvalidAddress` or
:class:`~pipeline.errors.InvalidEvent` saying what to fix. The client is the edge:
it gives each event a new id (a uuid) and the current time unless the caller does.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.kafka import kafka_options
from agents.topics import require_topics
from agents.tracing import sending_tracer
from pipeline.envelope import Event, encode_event, new_event
from pipeline.errors import InvalidEvent
from pipeline.settings import Settings

__all__ = ["Client", "make_event"]


def make_event(
    tenant: str,
    machine: str,
    instance: str,
    type: str,
    data: Any = None,
    *,
    id: str | None = None,
    source: str = "garrison.client",
    time_: datetime | None = None,
    parentid: str | None = None,
) -> Event:
    """A validated event; a missing id (a new uuid) or time (now) is filled in here, at
    the edge."""
    if time_ is not None and time_.tzinfo is None:
        raise InvalidEvent("time must be timezone-aware (e.g. datetime.now(UTC))")
    moment = int((time_.timestamp() if time_ else time.time()) * 1000)
    return new_event(
        tenant,
        machine,
        instance,
        type,
        data,
        id=id or uuid.uuid4().hex,
        time_ms=moment,
        source=source,
        parentid=parentid,
    )


class Client:
    """Sends events to ``<app>.events``, keyed by tenant (by ``tenant/instance`` for hot
    tenants and machines, ``GARRISON_HOT_*``, as the workers expect); idempotent
    producer. With ``GARRISON_TRACING_ENABLED``, each send is a ``garrison.send`` span,
    child of the caller's current span, whose context the event carries (through the
    process's global tracer provider, which the application sets up)."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "garrison.client",
        connect_timeout_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._wait_s = connect_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._key = settings.partitioning.key
        self._tracer = sending_tracer(settings)

    async def start(self) -> None:
        """Connect the producer, once the broker answers and the app's events topic
        exists (else :class:`~agents.topics.KafkaUnreachable` or
        :class:`~agents.topics.MissingTopics`, saying what to fix)."""
        await require_topics(self._settings, [self._settings.topics.events], wait_s=self._wait_s)
        self._producer = AIOKafkaProducer(
            **kafka_options(self._settings.kafka), enable_idempotence=True, linger_ms=5
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(
        self,
        tenant: str,
        machine: str,
        instance: str,
        type: str,
        data: Any = None,
        *,
        id: str | None = None,
        time: datetime | None = None,
        wait: bool = True,
    ) -> str:
        """Send one event and return its id. ``wait=False`` returns once it is queued
        (call :meth:`flush` before relying on delivery)."""
        event = make_event(
            tenant, machine, instance, type, data, id=id, source=self._source, time_=time
        )
        await self.send_event(event, wait=wait)
        return event.id

    async def send_event(
        self, event: Event, *, wait: bool = True, topic: str | None = None
    ) -> None:
        """Send a prepared event (to ``topic``, default the events topic)."""
        if self._producer is None:
            raise RuntimeError("Client is not started; use `async with Client(settings)`")
        if self._tracer is not None and event.traceparent is None:
            event = self._tracer.carried(event)
        future = await self._producer.send(
            topic or self._settings.topics.events,
            encode_event(event),
            key=self._key(event.tenant, event.machine, event.instance),
        )
        if wait:
            await future

    async def flush(self) -> None:
        """Wait until every queued event is delivered."""
        if self._producer is not None:
            await self._producer.flush()

    async def history(
        self,
        tenant: str,
        machine: str,
        instance: str,
        *,
        url: str | None = None,
        token: str | None = None,
        **read: Any,
    ) -> dict[str, Any]:
        """An instance's applied changes (``from_seq``, ``to_seq``, ``since``, ``until``,
        ``limit``, ``diff``), or its state ``as_of_seq``/``as_of``, from any worker's
        HTTP API (``url``, default this machine's). Needs no :meth:`start`. See
        :func:`garrison.history.fetch_history` and docs/history.md."""
        from garrison.history import fetch_history

        return await fetch_history(
            self._settings, tenant, machine, instance, url=url, token=token, **read
        )
