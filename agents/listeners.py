"""The listener runner: ``garrison listen APP``.

A consumer group on ``<app>.state-changes`` (read_committed). Each listener has its own
queue and task, so a listener that is failing and backing off never holds the others
back. Offsets are committed only up to the first change some listener has not finished
(at-least-once: a crash re-runs unfinished side effects, never skips one). A listener
that still fails after its retries sends the change to ``<app>.dlq``.

Events a listener sends get ids derived from the change and the listener, so when a
crash makes a listener run again, the machine sees the same ids and skips them.

The runner also consumes ``<app>.listener-redrive``: listener dead letters sent back by
``garrison dlq redrive``, each handed to the listener it names only, and once per
re-drive id (:mod:`pipeline.redrive`), when that topic exists as it starts (the
worker creates it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from agents.kafka import kafka_options
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

    changes: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    sent: int = 0


@dataclass
class _Pending:
    offset: int
    left: int


class _Job:
    __slots__ = ("tp", "offset", "raw", "change")

    def __init__(self, tp: TopicPartition, offset: int, raw: Any, change: StateChange) -> None:
        self.tp, self.offset, self.raw, self.change = tp, offset, raw, change


class ListenerRunner:
    """Runs a registry's listeners over the state-change stream until stopped."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        group_id: str | None = None,
        max_queue: int = 1000,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.group_id = group_id or f"{settings.app}.listeners"
        self.stats = ListenerStats()
        self._queues = {lst.name: asyncio.Queue[_Job](max_queue) for lst in registry.listeners}
        self._pending: dict[TopicPartition, deque[_Pending]] = {}
        self._by_offset: dict[tuple[TopicPartition, int], _Pending] = {}
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._redriven: set[str] = set()  # re-drive ids handed to their listener

    async def run(self) -> None:
        """Consume and dispatch until :meth:`stop`."""
        opts = kafka_options(self.settings.kafka)
        self._producer = AIOKafkaProducer(**opts, enable_idempotence=True, linger_ms=5)
        self._consumer = AIOKafkaConsumer(
            **opts,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await self._producer.start()
        await self._consumer.start()
        topics, wanted = self.settings.topics, [self.settings.topics.state_changes]
        if topics.listener_redrive in await self._consumer.topics():  # made by the worker
            wanted.append(topics.listener_redrive)
        self._consumer.subscribe(wanted, listener=_CommitOnRevoke(self))
        workers = [
            asyncio.create_task(self._work(lst), name=f"listener:{lst.name}")
            for lst in self.registry.listeners
        ]
        try:
            while not self._stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batch.items():
                    for rec in records:
                        await self._dispatch(tp, rec)
                await self.commit()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.commit()
            await self._consumer.stop()
            await self._producer.stop()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    async def _dispatch(self, tp: TopicPartition, rec: Any) -> None:
        if tp.topic == self.settings.topics.listener_redrive:
            await self._redrive(tp, rec)
            return
        try:
            change = StateChange.from_json(rec.value)
        except Exception as exc:  # noqa: BLE001 - a foreign record on our topic
            await self._dead(tp, rec, "listener", f"not a state change: {exc}", error=exc)
            self._track(tp, rec.offset, 0)
            return
        self.stats.changes += 1
        matched = []
        for lst in self.registry.listeners:
            try:
                if lst.matches(change):
                    matched.append(lst)
            except Exception as exc:  # noqa: BLE001 - a user predicate raised
                await self._dead(
                    tp,
                    rec,
                    "listener",
                    f"condition of {lst.name!r} raised {type(exc).__name__}: {exc}",
                    lst.name,
                    exc,
                )
        self._track(tp, rec.offset, len(matched))
        job = _Job(tp, rec.offset, rec, change)
        for lst in matched:
            await self._queues[lst.name].put(job)

    async def _redrive(self, tp: TopicPartition, rec: Any) -> None:
        """A re-driven listener dead letter: to the listener it names only, once."""
        target = listener_redrive(rec.headers or ())
        named = None if target is None else target.listener
        lst = next((x for x in self.registry.listeners if x.name == named), None)
        try:
            change = StateChange.from_json(rec.value)
        except Exception:  # noqa: BLE001 - dead-lettered below
            change = None
        if target is None or lst is None or change is None:
            why = "not a state change" if change is None else f"no listener named {named!r}"
            await self._dead(tp, rec, "listener", f"re-driven letter: {why}", named)
        elif target.redrive_id not in self._redriven:
            self._redriven.add(target.redrive_id)
            self._track(tp, rec.offset, 1)
            await self._queues[lst.name].put(_Job(tp, rec.offset, rec, change))
            return
        self._track(tp, rec.offset, 0)

    def _track(self, tp: TopicPartition, offset: int, left: int) -> None:
        entry = _Pending(offset, left)
        self._pending.setdefault(tp, deque()).append(entry)
        if left:
            self._by_offset[(tp, offset)] = entry

    async def _work(self, lst: Listener) -> None:
        queue = self._queues[lst.name]
        while True:
            job = await queue.get()
            await self._run_one(lst, job)
            entry = self._by_offset.get((job.tp, job.offset))
            if entry is not None:
                entry.left -= 1
                if entry.left == 0:
                    del self._by_offset[(job.tp, job.offset)]

    async def _run_one(self, lst: Listener, job: _Job) -> None:
        change = job.change
        config = self._config(change.machine)
        counter = iter(range(1_000_000))  # ids of this run's sends; reset per attempt

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
            )
            assert self._producer is not None
            await self._producer.send_and_wait(
                self.settings.topics.events, encode_event(event), key=event.tenant.encode()
            )
            self.stats.sent += 1
            return event.id

        error: BaseException | None = None
        for attempt in range(lst.retries + 1):
            counter = iter(range(1_000_000))  # so a retry re-sends with the same ids
            try:
                await lst.run(
                    change, ListenerContext(self.registry.services, config, send, attempt)
                )
                self.stats.runs[lst.name] = self.stats.runs.get(lst.name, 0) + 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - user code: retry, then dead-letter
                error = exc
                self.stats.failures[lst.name] = self.stats.failures.get(lst.name, 0) + 1
                if attempt < lst.retries:
                    await asyncio.sleep(lst.backoff_s * (2**attempt))
        await self._dead(
            job.tp,
            job.raw,
            "listener",
            f"listener {lst.name!r} failed {lst.retries + 1} times; last: "
            f"{type(error).__name__}: {error}",
            lst.name,
            error,
        )

    def _config(self, machine: str) -> Any:
        found = self.registry.machines.get(machine)
        return getattr(found, "config", None)

    async def _dead(
        self,
        tp: TopicPartition,
        rec: Any,
        stage: str,
        reason: str,
        listener: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        letter = DeadLetter(
            rec.key,
            rec.value,
            stage,
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
        log.warning("dead letter from %s: %s", stage, reason)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, up to the first change not finished by all listeners."""
        if self._consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp, queue in self._pending.items():
            if only is not None and tp not in only:
                continue
            last = None
            while queue and queue[0].left == 0:
                last = queue.popleft().offset
            if last is not None:
                offsets[tp] = last + 1
        if offsets:
            await self._consumer.commit(offsets)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ListenerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self.runner.commit(set(revoked))
        except Exception as exc:  # noqa: BLE001 - the new owner re-runs unfinished work
            log.warning("commit on revoke failed: %s", exc)
        for tp in revoked:
            self.runner._pending.pop(tp, None)  # noqa: SLF001 - own helper

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
