"""The async client producer services use to send events to garrison.

Example::

    from garrison import Client, Settings

    async with Client(Settings()) as client:
        await client.send("acme", "order", "o-1", "order.placed", {"sku": "x"})
        answer = await client.update("acme", "order", "o-1", "order.paid", timeout=5)
        answer.status, answer.seq, answer.state  # "applied", 2, {...}
        await client.state.set("acme", "users", "u1", {"name": "ann"})  # key-value

``update`` sends the event and waits for its outcome: the state change it made, its
dead letter, or (the event id was applied before) a duplicate; one read_committed
consumer per client serves every waiter (:mod:`garrison.correlator`). ``state`` is the
key-value scopes' client (:mod:`garrison.kv_client`).

Ids, tenant and instance are validated before anything is sent, so a bad call fails
at once with :class:`~pipeline.errors.InvalidAddress` or
:class:`~pipeline.errors.InvalidEvent` saying what to fix. The client is the edge:
it gives each event a new id (a uuid) and the current time unless the caller does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from agents.kafka import kafka_options
from agents.topics import require_topics
from agents.tracing import sending_tracer
from garrison.correlator import Correlator
from garrison.kv_client import StateClient
from pipeline.answer import REPLY_WANTED, Answer
from pipeline.envelope import Event, Headers, encode_event, new_event
from pipeline.errors import AnswerTimeout, InvalidEvent
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
    """Sends events to ``<app>.events``, keyed by tenant (by ``tenant/instance`` for hot
    tenants and machines, ``GARRISON_HOT_*``, as the workers expect); idempotent
    producer. With ``GARRISON_TRACING_ENABLED``, each send is a ``garrison.send`` span,
    child of the caller's current span, whose context the event carries (through the
    process's global tracer provider, which the application sets up).

    ``url`` and ``token`` are for the key-value reads (``client.state.get``): a worker's
    HTTP API (default: this machine's worker as ``settings.web`` describes it) and the
    bearer token, if reads need one."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "garrison.client",
        connect_timeout_s: float | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._wait_s = connect_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._correlator: Correlator | None = None
        self._starting: asyncio.Task[Correlator] | None = None
        self.state = StateClient(self, settings, url=url, token=token)
        """Key-value state: ``set``, ``get``, ``update``, ``delete``, ``list``, ``scopes``."""
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
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        if self._correlator is not None:
            await self._correlator.stop()
            self._correlator = None
        await self.state.close()
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
        self,
        event: Event,
        *,
        wait: bool = True,
        topic: str | None = None,
        headers: Headers | None = None,
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
            headers=list(headers) if headers else None,
        )
        if wait:
            await future

    async def update(
        self,
        tenant: str,
        machine: str,
        instance: str,
        type: str,
        data: Any = None,
        *,
        timeout: float = 10.0,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Answer:
        """Send one event and return its outcome once a worker has decided it: status
        ``applied`` (with the new ``seq`` and ``state``), ``rejected`` (with the dead
        letter's ``stage`` and ``reason``) or ``duplicate`` (``id`` was applied before).
        Raises :class:`~pipeline.errors.AnswerTimeout` when no answer comes within
        ``timeout`` seconds (sending included)."""
        event = make_event(
            tenant, machine, instance, type, data, id=id, source=self._source, time_=time
        )
        return await self.update_event(event, timeout=timeout)

    async def update_event(self, event: Event, *, timeout: float = 10.0) -> Answer:
        """:meth:`update` for a prepared event."""
        where = f"{event.tenant}/{event.machine}/{event.instance}"
        future: asyncio.Future[Answer] | None = None
        correlator: Correlator | None = None
        try:
            async with asyncio.timeout(timeout):
                correlator = await self._answers()
                future = correlator.expect(event)  # before the send: nothing slips past
                await self.send_event(event, headers=REPLY_WANTED)
                return await asyncio.shield(future)
        except TimeoutError:
            raise AnswerTimeout(
                f"no answer to event {event.id!r} ({event.type} for {where}) within "
                f"{timeout:g} s; is a worker of app {self._settings.app!r} running? The "
                "event may still be applied: send it again with the same id to learn its "
                "outcome (duplicate, if it was applied)",
                event_id=event.id,
            ) from None
        finally:
            if correlator is not None and future is not None:
                correlator.forget(event, future)

    @property
    def correlator(self) -> Correlator | None:
        """The one answer reader of this client (None until the first ``update``)."""
        return self._correlator

    async def _answers(self) -> Correlator:
        """The client's one answer reader, started on first use (once, however many
        callers ask at the same time)."""
        if self._correlator is not None:
            return self._correlator
        if self._producer is None:
            raise RuntimeError("Client is not started; use `async with Client(settings)`")
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_answers())
        starting = self._starting
        try:
            return await asyncio.shield(starting)
        except Exception:
            if self._starting is starting and starting.done():
                self._starting = None  # failed: the next caller tries again
            raise

    async def _start_answers(self) -> Correlator:
        correlator = Correlator(self._settings)
        await correlator.start()
        self._correlator = correlator
        return correlator

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
