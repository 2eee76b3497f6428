"""Helpers of the fault scenarios: a steady load, what it must have produced, and how
long a partition went without output."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import Event, Registry, encode_event, fold
from tests.harness import drain_topic, read_topic
from tests.samples import counter_machine

__all__ = ["Follower", "Load", "verify"]


@dataclass
class Load:
    """Sends counter events at ``rate`` per second over ``tenants`` x ``instances``,
    keyed by tenant (one producer, so each tenant's events reach its partition in send
    order), until stopped; ``sent`` holds every event the broker acknowledged."""

    bootstrap: str
    topic: str
    rate: float
    tenants: int = 30
    instances: int = 5
    # One event at a time, each sent again (same id) until the broker acknowledges it:
    # slower, but it keeps each tenant's order across a broker outage.
    careful: bool = False
    sent: list[Event] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, limit: int) -> None:
        """Send up to ``limit`` events (or until :meth:`stop`)."""
        if self.careful:
            await self._run_carefully(limit)
            return
        # A generous timeout: acknowledged means written, also across a broker outage.
        producer = self._producer()
        await _start(producer)
        pending: list[tuple[Event, asyncio.Future[Any]]] = []
        try:
            started = time.monotonic()
            for i in range(limit):
                if self._stop.is_set():
                    break
                ev = self._event(i)
                future = await producer.send(self.topic, encode_event(ev), key=ev.tenant.encode())
                pending.append((ev, future))
                await self._pace(started, i)
            for ev, fut in pending:
                await fut
                self.sent.append(ev)
        finally:
            await producer.stop()

    async def _run_carefully(self, limit: int) -> None:
        producer: AIOKafkaProducer | None = None
        started = time.monotonic()
        try:
            for i in range(limit):
                if self._stop.is_set():
                    break
                ev = self._event(i)
                while True:
                    try:
                        if producer is None:
                            producer = self._producer()
                            await producer.start()
                        await producer.send_and_wait(
                            self.topic, encode_event(ev), key=ev.tenant.encode()
                        )
                        break
                    except Exception:  # noqa: BLE001 - the broker is away: again, same id
                        if producer is not None:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(producer.stop(), 5)
                        producer = None
                        await asyncio.sleep(0.5)
                self.sent.append(ev)
                await self._pace(started, i)
        finally:
            if producer is not None:
                await producer.stop()

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=120_000,
        )

    def _event(self, i: int) -> Event:
        tenant, inst = f"t{i % self.tenants:02d}", f"i{(i // self.tenants) % self.instances}"
        return Event(
            f"load-{i}",
            "counter.added",
            "faults",
            tenant,
            "counter",
            inst,
            1_700_000_000_000 + i,
            {"amount": i % 7},
        )

    async def _pace(self, started: float, i: int) -> None:
        ahead = started + (i + 1) / self.rate - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)

    def stop(self) -> None:
        """Stop sending."""
        self._stop.set()


async def _start(client: Any) -> None:
    for _ in range(60):
        try:
            await client.start()
            return
        except Exception:  # noqa: BLE001 - the broker may be restarting
            await asyncio.sleep(1)
    await client.start()


class Follower:
    """A live read_committed reader of a topic from its start, counting what it saw."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[Any] = []
        self.last_at: dict[int, float] = {}  # partition -> monotonic time of its last record
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        # Across a broker outage the reader may fail; it starts again where it was, so
        # what it counts stays what a reader saw, once.
        nxt: dict[int, int] = {}
        while True:
            try:
                await self._follow(nxt)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the broker is restarting: read on after it
                await asyncio.sleep(1)

    async def _follow(self, nxt: dict[int, int]) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await _start(consumer)
        try:
            partitions = None
            while not partitions:
                cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
                partitions = cluster.partitions_for_topic(self.topic)
                if not partitions:
                    await asyncio.sleep(0.2)  # the workers have not made it yet
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in nxt:
                    consumer.seek(tp, nxt[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.monotonic()
                for tp, records in batch.items():
                    self.records.extend(records)
                    self.last_at[tp.partition] = now
                    nxt[tp.partition] = records[-1].offset + 1
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def silent_for(self, partitions: int, since: float, *, timeout_s: float) -> float:
        """Seconds from ``since`` (monotonic) until every partition had a record again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.last_at.get(p, 0) > since for p in range(partitions)):
                return max(self.last_at[p] for p in range(partitions)) - since
            await asyncio.sleep(0.05)
        raise AssertionError(f"some partition had no output for {timeout_s} s")


async def verify(
    bootstrap: str, app: str, sent: list[Event], *, timeout_s: float = 240, describe: Any = str
) -> list[Any]:
    """Every instance's seq is 1..n with no gap or repeat, its last state equals a pure
    fold of its events, and the dead-letter topic is empty. Returns the changes."""
    per_instance: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for ev in sent:
        per_instance[(ev.tenant, ev.instance)].append(ev)
    registry = Registry([counter_machine()])
    records = await read_topic(
        bootstrap,
        f"{app}.state-changes",
        until=lambda rs: len(rs) >= len(sent),
        timeout_s=timeout_s,
        describe=describe,
    )
    await asyncio.sleep(2)  # nothing more may come: no change is published twice
    records = await read_topic(
        bootstrap,
        f"{app}.state-changes",
        until=lambda rs: len(rs) >= len(sent),
        timeout_s=60,
        describe=describe,
    )
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    last: dict[tuple[str, str], Any] = {}
    for rec in records:
        change = orjson.loads(rec.value)
        key = (change["tenant"], change["instance"])
        seqs[key].append(change["seq"])
        last[key] = change["state"]
    problems = []
    for key, events in per_instance.items():
        record, _ = fold(registry, events)
        if seqs[key] != list(range(1, len(events) + 1)):
            problems.append(f"{key}: seq {seqs[key][:12]}... for {len(events)} events")
        elif record is None or last[key] != record.state:
            problems.append(f"{key}: state {last.get(key)} != fold {record and record.state}")
    assert not problems, f"{len(problems)} instances wrong, e.g. {problems[:5]}\n{describe()}"
    assert len(records) == len(sent)
    dead = await drain_topic(bootstrap, f"{app}.dlq")
    assert dead == [], f"{len(dead)} dead letters"
    return records
