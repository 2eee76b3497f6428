"""The async client producer services use to send events to garrison.

Example::

    async with Client(Settings()) as client:
        await client.send("acme", "order", "o-1", "order.placed", {"sku": "x"})

Ids, tenant and instance are validated before anything is sent, so a bad call fails
at once with :class:`InvalidAddress` or :class:`InvalidEvent` saying what to fix.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.address import Address
from pipeline.envelope import Event, encode_event
from pipeline.errors import InvalidEvent
from pipeline.settings import KafkaSettings, Settings

__all__ = ["Client", "kafka_options", "make_event"]


def kafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options from settings (security included)."""
    opts: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap,
                            "security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism is not None:
        opts["sasl_mechanism"] = kafka.sasl_mechanism
        opts["sasl_plain_username"] = kafka.sasl_username
        opts["sasl_plain_password"] = (kafka.sasl_password.get_secret_value()
                                       if kafka.sasl_password else None)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context()
    return opts


def make_event(tenant: str, machine: str, instance: str, type: str, data: Any = None, *,
               id: str | None = None, source: str = "garrison.client",
               time_: datetime | None = None, parentid: str | None = None) -> Event:
    """Build a validated event; a missing id or time is filled in here, at the edge."""
    address = Address.checked(tenant, machine, instance)
    if not type:
        raise InvalidEvent("event type must be a non-empty string")
    if time_ is not None and time_.tzinfo is None:
        raise InvalidEvent("time must be timezone-aware (e.g. datetime.now(UTC))")
    moment = int((time_.timestamp() if time_ else time.time()) * 1000)
    return Event(id or uuid.uuid4().hex, type, source, address.tenant, address.machine,
                 address.instance, moment, data, parentid)


class Client:
    """Sends events to ``<app>.events``, keyed by tenant; idempotent producer."""

    def __init__(self, settings: Settings, *, source: str = "garrison.client") -> None:
        self._settings = settings
        self._source = source
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect the producer."""
        self._producer = AIOKafkaProducer(**kafka_options(self._settings.kafka),
                                          enable_idempotence=True, linger_ms=5)
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        await self.stop()

    async def send(self, tenant: str, machine: str, instance: str, type: str,
                   data: Any = None, *, id: str | None = None, time: datetime | None = None,
                   wait: bool = True) -> str:
        """Send one event and return its id. ``wait=False`` returns once it is queued
        (call :meth:`flush` before relying on delivery)."""
        event = make_event(tenant, machine, instance, type, data, id=id, source=self._source,
                           time_=time)
        await self.send_event(event, wait=wait)
        return event.id

    async def send_event(self, event: Event, *, wait: bool = True,
                         topic: str | None = None) -> None:
        """Send a prepared event (to ``topic``, default the events topic)."""
        if self._producer is None:
            raise RuntimeError("Client is not started; use `async with Client(settings)`")
        future = await self._producer.send(topic or self._settings.topics.events,
                                           encode_event(event), key=event.tenant.encode())
        if wait:
            await future

    async def flush(self) -> None:
        """Wait until every queued event is delivered."""
        if self._producer is not None:
            await self._producer.flush()
