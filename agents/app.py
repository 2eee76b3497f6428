"""``create_app(settings, registry)``: the Faust app of a garrison worker, built in one place.

Faust provides the worker, group membership with its co-partitioning assignor, the
RocksDB table stores with their changelog topics, recovery, and the web server.
garrison's consumer (``agents.consumer``) lifts the events topic's records out of
Faust's fetch loop and owns where each events partition reads from; its recovery
(``agents.recovery``) restores the stores in bulk and then starts the dispatcher's
lanes (``agents.dispatch``), which apply the records and commit them in transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP

from agents.api import add_api, faust_web_options
from agents.consumer import Transport, consumer_thread
from agents.dispatch import Dispatcher
from agents.metrics import WorkerMetrics, add_metrics_route
from agents.recovery import TableManagerWithBulkRecovery, catch_up
from agents.standby import StandbyTailer
from pipeline.registry import Registry
from pipeline.seal import SEAL_HEADER, seal
from pipeline.settings import Settings
from tables import timers as timer_index
from tables.store import PartitionStore, shared_cache

__all__ = ["GarrisonApp", "create_app"]

log = logging.getLogger(__name__)


class GarrisonApp(faust.App):
    """A Faust app that routes its events topic to garrison's dispatcher."""

    settings: Settings
    registry: Registry
    dispatcher: Dispatcher
    state_store: PartitionStore
    timer_store: PartitionStore
    standby: StandbyTailer

    _starting: asyncio.Task[None] | None = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self, loop=self.loop)

    def start_lanes(self, generation: int) -> None:
        """Start the lanes of this generation's events partitions, in the background
        (the start waits for the broker as long as it takes)."""
        if self._starting is not None:
            self._starting.cancel()
        events = self.settings.topics.events
        mine = {tp.partition for tp in self.consumer.assignment() if tp.topic == events}
        self._starting = asyncio.ensure_future(self._start_lanes(mine, generation))

    async def _start_lanes(self, partitions: set[int], generation: int) -> None:
        try:
            await self.dispatcher.activate(partitions, generation)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("starting the lanes of generation %d failed; stopping", generation)
            self.dispatcher.fail()

    @property
    def serving(self) -> bool:
        """Whether the worker serves: joined, recovered, every lane started."""
        return (
            self.rebalancing_count > 0
            and not self.rebalancing
            and not self.tables.recovery.in_recovery  # type: ignore[attr-defined]
            and self.dispatcher.active.is_set()
            and self.dispatcher.generation == self.consumer_generation_id
        )

    async def on_stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
        await self.standby.stop()
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
        table_standby_replicas=settings.standby_replicas,
        # Static membership: a restarted worker takes its partitions back at once.
        consumer_group_instance_id=settings.group_instance_id,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.fetch_max_records or settings.batch_size,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 4),
        broker_rebalance_timeout=60.0,
        producer_acks=-1,
        **faust_web_options(settings.web),
        stream_wait_empty=False,
        # Every recovery step must fit in it (Faust stops recovering for good when one
        # does not); a bulk restore of a large store takes a while.
        broker_request_timeout=max(300.0, settings.session_timeout_s),
        TableManager=TableManagerWithBulkRecovery,
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
    cache = shared_cache(settings.rocksdb)
    app.state_store = PartitionStore(state, settings.rocksdb, cache)
    app.timer_store = PartitionStore(timers, settings.rocksdb, cache)
    app.dispatcher = Dispatcher(settings, registry, app.state_store, app.timer_store)

    async def _catch_up(partitions: set[int], *, settled: bool = False) -> None:
        await catch_up(app, partitions, settled=settled)

    app.standby = StandbyTailer(app)
    app.dispatcher.catch_up = _catch_up
    app.dispatcher.consumer = lambda: consumer_thread(app)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal typing
    async def _revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        app.standby.stop_soon()
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
    if settings.metrics.enabled:
        app.dispatcher.metrics = metrics = WorkerMetrics(settings)
        metrics.watch(app)
        add_metrics_route(app, metrics)
    return app


def _add_timer_delivery(app: GarrisonApp) -> None:
    """Every tick, deliver the due timers of the partitions this worker serves as events
    on their own partition, sealed with the partition's key (``pipeline.seal``). A firing
    may be delivered twice (a crash, a rebalance): its id is stable, and the lane skips
    it unless the timer is still armed as due."""
    settings = app.settings
    hot = settings.partitioning
    fired: dict[int, set[bytes]] = {}

    @app.timer(interval=settings.timer_tick_ms / 1000.0)  # type: ignore[untyped-decorator]
    async def deliver_timers() -> None:
        now = int(time.time() * 1000)
        lanes = (
            {}
            if not app.serving
            else {p: app.dispatcher.lane(p) for p in app.dispatcher.partitions}
        )
        for gone in set(fired) - set(lanes):
            del fired[gone]  # after a rebalance, re-deliver what is still armed
        for partition, lane in lanes.items():
            if lane is None or lane.seal_key is None or not lane.serving:
                continue
            seen = fired.setdefault(partition, set())
            due_now = set()
            for entry in timer_index.due(app.timer_store, partition, now, hot):
                due_now.add(entry.key)
                if entry.key in seen:
                    continue
                headers = [(SEAL_HEADER, seal(lane.seal_key, entry.firing))]
                # The partition is given: the key only has to agree with it.
                await app.producer.send(
                    settings.topics.events, entry.kafka_key, entry.firing, partition, None, headers
                )
                seen.add(entry.key)
            seen &= due_now  # forget firings the lane has consumed
