"""``create_app(settings, registry)``: the Faust app of a garrison worker, built in one place.

Faust provides the worker, group membership with its co-partitioning assignor, the
RocksDB table stores with their changelog topics, recovery, and the web server. The
events topic's records are lifted out of the consumer's fetch loop in bulk and handed
to the :class:`~agents.dispatch.Dispatcher`, skipping Faust's per-event stream (which
measured about 6.8k events/s here doing nothing at all). The consumer reads
read_committed, so recovery never restores a write from an aborted transaction.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from agents.api import add_api, faust_web_options
from agents.dispatch import Dispatcher
from agents.kafka import kafka_options
from pipeline.registry import Registry
from pipeline.settings import Settings
from tables import timers as timer_index
from tables.changelog import last_data_offsets, restore
from tables.store import PartitionStore

__all__ = ["GarrisonApp", "create_app"]

log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Our dispatcher commits state, output and offsets in transactions; the
        # changelogs must be read committed-only or recovery could restore aborted writes.
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - no public knob
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Any:
        app = cast(GarrisonApp, self.app)
        generation = app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
        if records:
            events = app.settings.topics.events
            # Records fetched across a rebalance may belong to partitions this worker
            # no longer owns (Faust's own loop drops them the same way). Dropping is
            # safe: every assignment restarts from the committed offsets.
            moved = app.consumer_generation_id != generation
            for tp in [tp for tp in records if tp.topic == events]:
                chunk = records.pop(tp)  # type: ignore[attr-defined]  # a dict at run time
                if not moved and (active is None or tp in active):
                    await app.dispatcher.feed(tp.partition, chunk)
        return records, active


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _Recovery(Recovery):
    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Any, title: str
    ) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        # Our changelogs are written in transactions: recover up to the last committed
        # data record, not up to the trailing commit marker (see tables.changelog).
        app = cast(GarrisonApp, self.app)
        options = kafka_options(app.settings.kafka)
        pending = [(tp.topic, tp.partition) for tp in tps if destination.get(tp, -1) >= 0]
        found = await last_data_offsets(options, pending)
        for (topic, partition), offset in found.items():
            destination[TP(topic, partition)] = offset
        if destination is self.active_highwaters:
            await self._bulk_restore(options, found)

    async def _bulk_restore(
        self, options: dict[str, Any], ends: dict[tuple[str, int], int]
    ) -> None:
        """Restore active partitions ourselves, in whole write batches; Faust then finds
        its persisted offsets at the end and has nothing left to replay (its own path
        handles one record at a time: measured 332 s for a million instances)."""
        app = cast(GarrisonApp, self.app)
        stores = {s.changelog_topic: s for s in (app.state_store, app.timer_store)}
        ranges = {}
        for (topic, partition), end in ends.items():
            store = stores.get(topic)
            if store is not None and end >= 0:
                done = store.changelog_offset(partition)
                ranges[(topic, partition)] = (0 if done is None else done + 1, end)

        def write(topic: str, partition: int, writes: dict[bytes, bytes | None], last: int) -> None:
            stores[topic].write(partition, writes)
            stores[topic].set_changelog_offset(partition, last)

        started = time.monotonic()
        count = await restore(options, ranges, write)
        if count:
            log.info("restored %d changelog records in %.1f s", count, time.monotonic() - started)


class _TableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = _Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class GarrisonApp(faust.App):
    """A Faust app that routes its events topic to garrison's dispatcher."""

    settings: Settings
    registry: Registry
    dispatcher: Dispatcher
    state_store: PartitionStore
    timer_store: PartitionStore

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)

    async def on_stop(self) -> None:
        await self.dispatcher.stop()
        await super().on_stop()


def create_app(settings: Settings, registry: Registry) -> GarrisonApp:
    """Build the worker app: tables, the events subscription, timers, the query API."""
    topics = settings.topics
    partitions = settings.kafka.partitions
    app = GarrisonApp(
        settings.app,
        broker=f"kafka://{settings.kafka.bootstrap}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.batch_size,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 4),
        producer_acks=-1,
        **faust_web_options(settings.web),
        stream_wait_empty=False,
        TableManager=_TableManager,
    )
    app.settings = settings
    app.registry = registry
    state = app.Table(
        "state",
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help="instance records by (tenant, machine, instance)",
    )
    timers = app.Table(
        "timers",
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help="timer index: due time, instance, name",
    )
    for table in (state, timers):
        # Keys and values are our own bytes (tables.keys, pipeline.record); "raw" also
        # makes Faust's request router hash a tenant key as the producers' partitioner does.
        table.key_serializer = table.value_serializer = "raw"  # type: ignore[attr-defined]
    app.state_store = PartitionStore(state, settings.rocksdb)
    app.timer_store = PartitionStore(timers, settings.rocksdb)
    app.dispatcher = Dispatcher(
        settings, registry, app.state_store, app.timer_store, group_id=settings.app
    )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal typing
    async def _revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        await app.dispatcher.revoke({tp.partition for tp in revoked if tp.topic == topics.events})

    events = app.topic(
        topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )

    @app.agent(events, name="dispatch")
    async def dispatch(stream: Any) -> None:
        # Subscribes the worker to the events topic (and so co-assigns the tables);
        # the records themselves are taken by the consumer hook and never arrive here.
        async for _ in stream:
            log.error("an event reached the Faust stream; the dispatcher hook is broken")

    _add_timer_delivery(app)
    add_api(app)
    return app


def _add_timer_delivery(app: GarrisonApp) -> None:
    """Every tick, deliver the due timers of the partitions this worker owns as events
    on their own partition. A firing may be delivered twice (a crash, a rebalance): its
    id is stable, and the dispatcher skips it unless the timer is still armed as due."""
    settings = app.settings
    fired: dict[int, set[bytes]] = {}

    @app.timer(interval=settings.timer_tick_ms / 1000.0)  # type: ignore[untyped-decorator]
    async def deliver_timers() -> None:
        now = int(time.time() * 1000)
        partitions = _recovered_partitions(app)
        for gone in set(fired) - partitions:
            del fired[gone]  # after a rebalance, re-deliver what is still armed
        for partition in partitions:
            seen = fired.setdefault(partition, set())
            due_now = set()
            for entry in timer_index.due(app.timer_store, partition, now):
                due_now.add(entry.key)
                if entry.key in seen:
                    continue
                await app.producer.send(
                    settings.topics.events, entry.tenant, entry.firing, partition, None, None
                )
                seen.add(entry.key)
            seen &= due_now  # forget firings the dispatcher has consumed


def _recovered_partitions(app: GarrisonApp) -> set[int]:
    """Events partitions assigned here whose tables are fully recovered (none while a
    rebalance or recovery is under way: a half-restored index could fire a timer twice
    or miss one)."""
    if app.rebalancing or app.tables.recovery.in_recovery:  # type: ignore[attr-defined]
        return set()
    events = app.settings.topics.events
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == events}
