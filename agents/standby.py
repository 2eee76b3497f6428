"""Warm standbys: this worker's copies of partitions other workers serve.

With ``GARRISON_STANDBY_REPLICAS`` > 0, Faust's assignor gives each worker standby
changelog partitions besides its own. Faust would keep them warm through its
per-record path (measured: 332 s per million records), in the loop the lanes run in;
garrison pauses them in the consumer instead and tails them itself: a read_committed
reader of those changelog partitions that writes what they carry into the local
stores in whole batches, with the offsets, as the bulk restore does. When such a worker
takes over a partition (its owner died), recovery finds the store nearly up to date and
restores only the last few records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.kafka import kafka_options

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["StandbyTailer"]

log = logging.getLogger(__name__)


class StandbyTailer:
    """Follows the standby changelog partitions of the current assignment."""

    def __init__(self, app: GarrisonApp) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self.partitions: frozenset[tuple[str, int]] = frozenset()

    def follow(self, tps: Iterable[tuple[str, int]]) -> None:
        """Tail ``tps`` (changelog topic, partition), replacing what was followed."""
        wanted = frozenset(tps)
        if wanted == self.partitions and self._task is not None and not self._task.done():
            return
        self.stop_soon()
        self.partitions = wanted
        if wanted:
            self._task = asyncio.ensure_future(self._tail(wanted))

    def stop_soon(self) -> None:
        """Stop tailing (a rebalance is under way)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.partitions = frozenset()

    async def stop(self) -> None:
        """Stop tailing and wait until it has."""
        task, self._task = self._task, None
        self.partitions = frozenset()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _tail(self, tps: frozenset[tuple[str, int]]) -> None:
        app = self.app
        stores = {s.changelog_topic: s for s in (app.state_store, app.timer_store)}
        mine = [TopicPartition(t, p) for t, p in sorted(tps) if t in stores]
        consumer = AIOKafkaConsumer(
            **kafka_options(app.settings.kafka),
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            consumer.assign(mine)
            for tp in mine:
                done = stores[tp.topic].changelog_offset(tp.partition)
                if done is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, done + 1)
            log.info("following %d standby changelog partitions", len(mine))
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                for tp, records in batch.items():
                    if records:
                        store = stores[tp.topic]
                        store.write(tp.partition, {r.key: r.value for r in records})
                        store.set_changelog_offset(tp.partition, records[-1].offset)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a warm copy is an optimisation: say so, go on
            log.warning("standby tailing stopped; the copies stay as they are", exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
