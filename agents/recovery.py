"""Table recovery for garrison's stores: in bulk, to the last committed record, and
then the lanes.

Faust restores a changelog one record at a time (measured: 332 s for a million
instances) and waits to *receive* the high-water offset, which a transactionally
written changelog never delivers (it ends in a commit marker). So garrison restores
the active partitions itself, in whole write batches, up to the last committed data
record (``tables.changelog``), and tells Faust it has nothing left to replay. When the
tables are recovered, it starts the dispatcher's lanes for the new assignment (in the
background: an outage during that start must not stop Faust's recovery service).

A local store ahead of its changelog (the broker's data was wiped, or this data folder
belonged to another cluster) cannot be trusted: it is emptied and rebuilt from the
changelog, and the worker says so. A store ahead only of the changelog's last stable
offset is not: an open transaction of another producer (a dead or zombie worker's, which
can only abort, agents.group_offsets) holds read_committed readers back while this
worker's own commits go on after it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from agents.kafka import kafka_options
from agents.logs import RestoreProgress
from tables.changelog import ends_of, held_open, last_data_offsets, restore
from tables.store import PartitionStore

if TYPE_CHECKING:
    from agents.app import GarrisonApp

__all__ = ["TableManagerWithBulkRecovery", "catch_up"]

log = logging.getLogger(__name__)


async def catch_up(app: GarrisonApp, partitions: set[int], *, settled: bool = False) -> int:
    """Bring the local stores of ``partitions`` up to their changelogs' last committed
    records; how many records that took. Run when lanes start, after the previous
    owner's transactions have ended, and after a failed transaction of this worker.

    ``settled``: first wait until no transaction is open on those changelog partitions
    (last stable offset = high watermark). After a failed transaction of this worker,
    whether it committed is in records of its own that an open transaction of a dead
    or zombie worker, written before them, would hide until the broker aborts it."""
    stores = (app.state_store, app.timer_store)
    wanted = [(s.changelog_topic, p) for s in stores for p in partitions]
    options = kafka_options(app.settings.kafka)
    if settled:
        await held_open(options, wanted)
    ends = await last_data_offsets(options, wanted)
    return await _restore(app, options, ends)


async def _restore(
    app: GarrisonApp, options: dict[str, Any], ends: dict[tuple[str, int], int]
) -> int:
    stores: dict[str, PartitionStore] = {
        s.changelog_topic: s for s in (app.state_store, app.timer_store)
    }
    ranges = {}
    ahead = [key for key, end in ends.items() if key[0] in stores and _done(stores, key) > end]
    highs = {key: high for key, (_, high) in (await ends_of(options, ahead)).items()}
    for (topic, partition), end in ends.items():
        store = stores.get(topic)
        if store is None:
            continue
        done = store.changelog_offset(partition)
        if done is not None and done > end and done < highs.get((topic, partition), -1):
            # Ahead of the last stable offset only: what lies between is this worker's
            # own commits and an open transaction that will abort. Nothing to restore.
            log.warning(
                "the local store of %s partition %d has the changelog up to offset %d, "
                "past its last committed record %d: an open transaction holds readers "
                "back; nothing to restore",
                topic,
                partition,
                done,
                end,
            )
            ends[(topic, partition)] = done
            continue
        if done is not None and done > end:
            log.warning(
                "the local store of %s partition %d has the changelog up to offset %d, but "
                "the changelog ends at %d: the broker lost its data, or %s belonged to "
                "another cluster. Rebuilding it from the changelog.",
                topic,
                partition,
                done,
                end,
                app.settings.data_dir,
            )
            store.clear(partition)
            done = None
        if end >= 0:
            ranges[(topic, partition)] = (0 if done is None else done + 1, end)

    progress = RestoreProgress(ranges, app.dispatcher.metrics)

    def write(topic: str, partition: int, writes: dict[bytes, bytes | None], last: int) -> None:
        stores[topic].write(partition, writes)
        stores[topic].set_changelog_offset(partition, last)
        progress.wrote(topic, partition, last)

    count = await restore(options, ranges, write)
    progress.finished(count)
    return count


def _done(stores: dict[str, PartitionStore], key: tuple[str, int]) -> int:
    done = stores[key[0]].changelog_offset(key[1])
    return -1 if done is None else done


class _Recovery(Recovery):
    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Any, title: str
    ) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        # Our changelogs are written in transactions: recover up to the last committed
        # data record, not up to the trailing commit marker (see tables.changelog).
        app = cast("GarrisonApp", self.app)
        options = kafka_options(app.settings.kafka)
        pending = [(tp.topic, tp.partition) for tp in tps if destination.get(tp, -1) >= 0]
        found = await last_data_offsets(options, pending)
        for (topic, partition), offset in found.items():
            destination[TP(topic, partition)] = offset
        if destination is self.active_highwaters:
            # Empty changelogs too: a local store with data for one is ahead of it.
            ends = {(tp.topic, tp.partition): -1 for tp in tps}
            ends.update(found)
            await _restore(app, options, ends)
            for (topic, partition), offset in ends.items():
                # A store kept ahead of the last stable offset (_restore) is its end.
                destination[TP(topic, partition)] = max(
                    destination.get(TP(topic, partition), -1), offset
                )
            # Faust read the persisted offsets before this restore; without the update
            # it would seek back and replay everything again, one record at a time (or
            # find a rebuilt store "ahead" of its changelog and stop).
            for (topic, partition), offset in ends.items():
                self.active_offsets[TP(topic, partition)] = offset
        elif destination is self.standby_highwaters:
            # Warm copies: restored in bulk too, then tailed by agents.standby.
            ends = {(tp.topic, tp.partition): -1 for tp in tps}
            ends.update(found)
            await _restore(app, options, ends)
            for (topic, partition), offset in ends.items():
                self.standby_offsets[TP(topic, partition)] = offset

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        await super().on_recovery_completed(generation_id)
        app = cast("GarrisonApp", self.app)
        if app.consumer_generation_id == generation_id:
            app.start_lanes(generation_id)
            app.standby.follow((tp.topic, tp.partition) for tp in app.assignor.assigned_standbys())


class TableManagerWithBulkRecovery(TableManager):
    """Faust's table manager with garrison's recovery."""

    async def on_start(self) -> None:
        # Faust sleeps a second here for tables registered late; garrison's are all
        # registered before the app starts, and a restarted worker serves a second
        # sooner without it.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = _Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
