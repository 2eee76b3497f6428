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
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from agents.kafka import kafka_options
from agents.topics import require_topics
from pipeline.envelope import Event, encode_event, new_event
from pipeline.errors import InvalidEvent
from pipeline.settings import Settings

if TYPE_CHECKING:
    from garrison.waiter import Seen

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
    """Sends events to ``<app>.events``, keyed by tenant; idempotent producer."""

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
        future = await self._producer.send(
            topic or self._settings.topics.events, encode_event(event), key=event.tenant.encode()
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

    async def query(
        self,
        tenant: str,
        machine: str,
        instance: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
    ) -> Any:
        """The answer of the instance's named query ``name`` (``params``: its parameters),
        from any worker's HTTP API; needs no :meth:`start`. Raises
        :class:`~garrison.query.QueryRefused` with the reason (bad parameters, no such
        instance or query). See docs/queries.md."""
        from garrison.query import fetch_query

        body = await fetch_query(
            self._settings, tenant, machine, instance, name, params, url=url, token=token
        )
        return body["result"]

    async def wait_for(
        self,
        tenant: str,
        machine: str,
        instance: str,
        condition: Callable[[Any], bool],
        timeout: float,
        *,
        after_seq: int = 0,
        url: str | None = None,
        token: str | None = None,
    ) -> Seen:
        """The first state of the instance (past ``after_seq``) for which
        ``condition(state)`` holds, at once if it does already; raises
        :class:`~garrison.waiter.WaitTimedOut` after ``timeout`` seconds. Needs no
        :meth:`start`. See :func:`garrison.waiter.wait_for`."""
        from garrison.waiter import wait_for

        return await wait_for(
            self._settings,
            tenant,
            machine,
            instance,
            condition,
            timeout,
            after_seq=after_seq,
            url=url,
            token=token,
        )
