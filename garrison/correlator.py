"""The client's answers: one read_committed consumer that resolves every waiting update.

A :class:`Correlator` belongs to one :class:`~garrison.client.Client` and is started on
its first ``update``. It assigns itself every partition of ``<app>.state-changes``,
``<app>.dlq`` and ``<app>.replies`` (no consumer group: each client process reads on
its own, so any number of processes can wait at once), seeks to their ends before the
first event is sent, and from then on reads what the workers commit. A waiter is
registered under its event's address and id *before* the event is sent, so its answer
cannot slip past; while nobody waits, what arrives is dropped unread (else each state
change is decoded once, for its address and id). The worker does nothing for this
beyond what it publishes anyway (see ``pipeline.answer``).

What a client reads grows with the app's state-change traffic, not with its own: a
client waiting for a few events of a busy app still fetches every change (and drops
it). That is the price of asking nothing of the worker (docs/kv.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.kafka import kafka_options
from agents.topics import admin_client, require_topics
from pipeline.answer import Answer
from pipeline.envelope import Event
from pipeline.errors import GarrisonError
from pipeline.outcome import StateChange
from pipeline.settings import Settings

__all__ = ["Correlator"]

log = logging.getLogger(__name__)

_Key = tuple[str, str, str, str]


def _key(event: Event) -> _Key:
    return (event.tenant, event.machine, event.instance, event.id)


class Correlator:
    """Answers to the events this client waits for, from what the workers publish."""

    def __init__(self, settings: Settings, *, fetch_max_wait_ms: int = 100) -> None:
        self._settings = settings
        self._fetch_max_wait_ms = fetch_max_wait_ms
        # Keyed by the event's address and id: ids are idempotency keys per instance,
        # so the same id sent to two instances is two events with two answers.
        self._waiters: dict[_Key, list[asyncio.Future[Answer]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.records = 0  # records read, for tests and the bench

    async def start(self) -> None:
        """Assign the answer topics at their current ends (resolved before returning)."""
        topics = self._settings.topics
        names = [topics.state_changes, topics.dlq, topics.replies]
        consumer = AIOKafkaConsumer(
            **kafka_options(self._settings.kafka),
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="latest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        tps = await self._partitions(names)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # resolve "the end" now, before any send
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="garrison.correlator")

    async def _partitions(self, names: list[str]) -> list[TopicPartition]:
        topics = self._settings.topics
        # The state changes and dead letters must be there (a worker creates them with
        # the events topic the client needs anyway); the replies topic may not be, on a
        # worker from before it: then a duplicate goes unanswered and times out.
        await require_topics(self._settings, [topics.state_changes, topics.dlq], wait_s=5)
        admin = await admin_client(self._settings)
        try:
            found = await self._described(admin, names)
        finally:
            await admin.close()
        if topics.replies not in found:
            log.warning("%s does not exist: duplicates will not be answered", topics.replies)
        return [TopicPartition(n, p) for n in names if n in found for p in found[n]]

    @staticmethod
    async def _described(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, list[int]]:
        out = {}
        for topic in await admin.describe_topics(names):
            parts = sorted(p["partition"] for p in topic.get("partitions", ()))
            if topic.get("error_code") == 0 and parts:
                out[topic["topic"]] = parts
        return out

    async def stop(self) -> None:
        """Stop reading; every waiter still waiting gets an error."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        waiting, self._waiters = self._waiters, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(GarrisonError("the client stopped before the answer"))

    def expect(self, event: Event) -> asyncio.Future[Answer]:
        """A future for the answer to ``event``; register it before sending."""
        if self._task is None or self._task.done():
            raise GarrisonError("the answer reader is not running; start the client first")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(_key(event), []).append(future)
        return future

    def forget(self, event: Event, future: asyncio.Future[Answer]) -> None:
        """Stop waiting (a timeout, an error): drop ``future``."""
        key = _key(event)
        futures = self._waiters.get(key)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self._waiters[key]

    @property
    def waiting(self) -> int:
        """Events with someone waiting."""
        return len(self._waiters)

    async def _run(self) -> None:
        assert self._consumer is not None
        topics = self._settings.topics
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000, max_records=5000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka trouble: waiters time out
                log.warning("reading answers failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                self.records += len(records)
                if not self._waiters:
                    continue  # nobody waits: nothing to open
                for rec in records:
                    answer = self._answer(tp.topic, topics.state_changes, topics.dlq, rec)
                    if answer is not None:
                        self._resolve(answer)

    def _answer(self, topic: str, changes: str, dlq: str, rec: Any) -> Answer | None:
        try:
            if topic == changes:
                # The address and id first, the whole change only for one awaited.
                o = orjson.loads(rec.value)
                if (o["tenant"], o["machine"], o["instance"], o["event_id"]) not in self._waiters:
                    return None
                return Answer.from_change(StateChange.from_json(rec.value))
            if topic == dlq:
                return Answer.from_dead_letter(rec.value, rec.headers or ())
            return Answer.from_reply(rec.value)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None  # a foreign record on our topics: not an answer

    def _resolve(self, answer: Answer) -> None:
        key = (answer.tenant, answer.machine, answer.instance, answer.event_id)
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(answer)
