"""The listener runner: ``garrison listen APP``.

Each listener reads ``<app>.state-changes`` (read_committed) in a consumer group of its
own (``<app>.listeners.<name>``), so each goes at its own pace: one that is failing
and backing off, or slow, holds back nobody else, and nothing has to be buffered for
it. A listener handles its changes in order and commits a partition's offset only past
changes it finished (at-least-once: a crash re-runs unfinished side effects, never
skips one). A change that still fails after its retries goes to ``<app>.dlq``, naming
the listener. A new listener's group starts from the oldest change kept unless it is
declared with ``start="latest"``.

Events a listener sends get ids derived from the change and the listener, so when a
crash makes a listener run again, the machine sees the same ids and skips them.
``ctx.config`` is the config of the machine version that made the change.

Each listener's group also reads ``<app>.listener-redrive`` when that topic exists as
it starts (the worker creates it): listener dead letters sent back by ``garrison dlq
redrive``, of which a listener handles only those naming it, once per re-drive id
(:mod:`pipeline.redrive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from agents.kafka import kafka_options
from agents.logs import dead_letter_log
from agents.metrics import ListenerMetrics
from agents.tracing import Tracing, header_context
from pipeline.deadletter import DeadLetter
from pipeline.envelope import encode_event, new_event
from pipeline.ids import listener_send_id
from pipeline.listener import Listener, ListenerContext
from pipeline.outcome import StateChange
from pipeline.redrive import listener_redrive
from pipeline.registry import Registry
from pipeline.settings import Settings

__all__ = ["ListenerRunner", "ListenerStats"]

log = logging.getLogger(__name__)


@dataclass
class ListenerStats:
    """Counts since start, for the demo and tests."""

    seen: dict[str, int] = field(default_factory=dict)  # changes read, per listener
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    sent: int = 0

    @property
    def changes(self) -> int:
        """Changes every listener has read."""
        return min(self.seen.values(), default=0)


class ListenerRunner:
    """Runs a registry's listeners over the state-change stream until stopped."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        group_id: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.group_id = group_id or f"{settings.app}.listeners"
        self.stats = ListenerStats()
        self.metrics = ListenerMetrics()  # served by agents.listener_api
        self.tracing = tracing  # None: off (agents.tracing)
        self._stop = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()  # every listener's consumer has joined its group
        self._joined = 0
        self._redriven: set[tuple[str, str]] = set()  # (listener, re-drive id) handled

    def group_of(self, listener: Listener) -> str:
        """The consumer group of ``listener``."""
        return f"{self.group_id}.{listener.name}"

    async def run(self) -> None:
        """Consume and run listeners until :meth:`stop`; commits what finished."""
        opts = kafka_options(self.settings.kafka)
        self._producer = AIOKafkaProducer(**opts, enable_idempotence=True, linger_ms=5)
        await self._producer.start()
        try:
            if not self.registry.listeners:
                self.ready.set()
            tasks = [
                asyncio.create_task(self._serve(lst), name=f"listener:{lst.name}")
                for lst in self.registry.listeners
            ]
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    log.error("listener task %s failed", task.get_name(), exc_info=task.exception())
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopped.cancel()
        finally:
            await self._producer.stop()

    def stop(self) -> None:
        """Ask :meth:`run` to return once each listener finished its current change."""
        self._stop.set()

    async def _serve(self, lst: Listener) -> None:
        topics = self.settings.topics
        consumer = AIOKafkaConsumer(
            **kafka_options(self.settings.kafka),
            group_id=self.group_of(lst),
            enable_auto_commit=False,
            auto_offset_reset=lst.start,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            wanted = [topics.state_changes]
            if topics.listener_redrive in await consumer.topics():  # made by the worker
                wanted.append(topics.listener_redrive)
            consumer.subscribe(wanted)
            while not consumer.assignment() and not self._stop.is_set():
                await asyncio.sleep(0.05)  # joining the group
            self._joined += 1
            if self._joined == len(self.registry.listeners):
                self.ready.set()
                self.metrics.ready.set(1)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=100)
                for tp, records in batch.items():
                    done = None
                    for rec in records:
                        if self._stop.is_set():
                            break
                        await self._handle(lst, tp, rec)
                        done = rec.offset
                    if done is not None:
                        await _commit(consumer, {tp: done + 1})
                    if self._stop.is_set():
                        break
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)

    async def _handle(self, lst: Listener, tp: TopicPartition, rec: Any) -> None:
        if tp.topic == self.settings.topics.listener_redrive:
            await self._redrive(lst, tp, rec)
            return
        try:
            change = StateChange.from_json(rec.value)
        except Exception as exc:  # noqa: BLE001 - a foreign record on our topic
            await self._dead(tp, rec, f"not a state change: {exc}", lst.name, exc)
            return
        self.stats.seen[lst.name] = self.stats.seen.get(lst.name, 0) + 1
        self.metrics.changes.labels(lst.name).inc()
        try:
            if not lst.matches(change):
                return
        except Exception as exc:  # noqa: BLE001 - a user predicate raised
            await self._dead(
                tp,
                rec,
                f"condition of {lst.name!r} raised {type(exc).__name__}: {exc}",
                lst.name,
                exc,
            )
            return
        await self._run_one(lst, tp, rec, change)

    async def _redrive(self, lst: Listener, tp: TopicPartition, rec: Any) -> None:
        """A re-driven listener dead letter: run it if it names this listener, once."""
        target = listener_redrive(rec.headers or ())
        if target is None or target.listener != lst.name:
            return  # another listener's (or not a re-drive): that one's group handles it
        if (lst.name, target.redrive_id) in self._redriven:
            return
        try:
            change = StateChange.from_json(rec.value)
        except Exception as exc:  # noqa: BLE001 - a foreign record on our topic
            await self._dead(tp, rec, f"re-driven letter: not a state change: {exc}", lst.name, exc)
            return
        self._redriven.add((lst.name, target.redrive_id))
        await self._run_one(lst, tp, rec, change)

    async def _run_one(
        self, lst: Listener, tp: TopicPartition, rec: Any, change: StateChange
    ) -> None:
        config = self._config(change)
        parent, state = header_context(rec.headers)  # the change's trace context
        started = time.monotonic()
        try:
            if self.tracing is None:
                await self._attempts(lst, tp, rec, change, config, parent, state)
            else:
                attributes = {"garrison.listener": lst.name, "garrison.seq": change.seq}
                with self.tracing.span(
                    f"garrison.listener {lst.name}", parent, state, attributes=attributes
                ) as (parent, state):
                    await self._attempts(lst, tp, rec, change, config, parent, state)
        finally:
            self.metrics.seconds.labels(lst.name).observe(time.monotonic() - started)

    async def _attempts(
        self,
        lst: Listener,
        tp: TopicPartition,
        rec: Any,
        change: StateChange,
        config: Any,
        traceparent: str | None,
        tracestate: str | None,
    ) -> None:
        counter = iter(range(1_000_000))  # ids of this run's sends; reset per attempt
        key = self.settings.partitioning.key

        async def send(
            machine: str, instance: str, type: str, data: Any = None, *, id: str | None = None
        ) -> str:
            event = new_event(
                change.tenant,
                machine,
                instance,
                type,
                data,
                id=id or listener_send_id(change.event_id, lst.name, next(counter)),
                time_ms=int(time.time() * 1000),
                source=f"garrison.listener/{lst.name}",
            ).traced(traceparent, tracestate)
            assert self._producer is not None
            await self._producer.send_and_wait(
                self.settings.topics.events,
                encode_event(event),
                key=key(event.tenant, event.machine, event.instance),
            )
            self.stats.sent += 1
            self.metrics.sent.labels(lst.name).inc()
            return event.id

        error: BaseException | None = None
        for attempt in range(lst.retries + 1):
            counter = iter(range(1_000_000))  # so a retry re-sends with the same ids
            try:
                await lst.run(
                    change, ListenerContext(self.registry.services, config, send, attempt)
                )
                self.stats.runs[lst.name] = self.stats.runs.get(lst.name, 0) + 1
                self.metrics.runs.labels(lst.name).inc()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - user code: retry, then dead-letter
                error = exc
                self.stats.failures[lst.name] = self.stats.failures.get(lst.name, 0) + 1
                self.metrics.failures.labels(lst.name).inc()
                if attempt < lst.retries:
                    self.metrics.retries.labels(lst.name).inc()
                    await asyncio.sleep(lst.backoff_s * (2**attempt))
        await self._dead(
            tp,
            rec,
            f"listener {lst.name!r} failed {lst.retries + 1} times; last: "
            f"{type(error).__name__}: {error}",
            lst.name,
            error,
        )

    def _config(self, change: StateChange) -> Any:
        """The config of the machine version that made the change (else the latest's)."""
        found = self.registry.versions(change.machine).get(change.version)
        if found is None:
            found = self.registry.machines.get(change.machine)
        return getattr(found, "config", None)

    async def _dead(
        self,
        tp: TopicPartition,
        rec: Any,
        reason: str,
        listener: str,
        error: BaseException | None,
    ) -> None:
        letter = DeadLetter(
            rec.key,
            rec.value,
            "listener",
            reason,
            "ListenerFailed" if error is None else type(error).__name__,
            tp.topic,
            tp.partition,
            rec.offset,
            rec.timestamp,
            rec.headers or (),
            listener,
        )
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.settings.topics.dlq, letter.value, key=letter.key, headers=letter.headers()
        )
        self.stats.dead_letters += 1
        self.metrics.dead_letters.labels(listener).inc()
        dead_letter_log.listener(listener, reason)
        if self.tracing is not None:  # the listener's span, current here, failed
            trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except Exception as exc:  # noqa: BLE001 - a rebalance: the new owner re-runs the rest
        log.warning("listener commit failed (%s); the change may run again", exc)
