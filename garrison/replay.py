"""``garrison replay APP``: the events topic applied again with APP's current machines, and
compared with what the pipeline published (the pure part is :mod:`pipeline.replay`).

Partition by partition (each has its own store in the worker, so each replays on a
fresh scratch store), the events and the state changes of that partition are streamed
side by side; nothing is loaded whole, and the scratch records live in memory or in a
temporary RocksDB (``scratch="disk"``). Partitions are independent, so with ``jobs``
> 1 they are shared among that many processes (the app is imported in each by its
module path), which is how a replay uses more than one core.

Before anything is compared, the replay waits until the worker has applied the events
as far as the replay reads them (its applied offset, in the state changelog), so "the
pipeline did not apply it" means it did not, not that it has not yet. The dead-letter
topic is read first, for the places of the events the pipeline dead-lettered: a timer
firing among them was not one garrison delivered (see :mod:`pipeline.replay`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, fields
from typing import Any

from agents.changes import partition_records
from agents.kafka import kafka_options, partition_of
from garrison.position import Bounds, bounds, dead_lettered, topic_partitions, wait_applied
from pipeline.decision import Rules
from pipeline.errors import GarrisonError
from pipeline.registry import Registry
from pipeline.replay import (
    AddressFilter,
    Comparer,
    Divergence,
    MemoryScratch,
    Replayer,
    ReplayStats,
    Scratch,
)
from pipeline.settings import Settings, Topics
from tables.scratch import DiskScratch

__all__ = ["ReplayOptions", "ReplayResult", "replay", "usable_cpus"]

Progress = Callable[[int, int], None]
"""Told how many events were read so far, and how many instances differ."""


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay: the instances (``only``), a start (``since_ms``, a record time, or
    ``from_offset``) and an end (``until_ms`` or ``to_offset``, exclusive) on the
    events topic; where the scratch records live; how long to wait for the worker; how
    many processes share the partitions (``jobs`` > 1 needs the app's ``spec``; 0: one
    per CPU this process may run on, :func:`usable_cpus`)."""

    only: AddressFilter = AddressFilter()
    since_ms: int | None = None
    until_ms: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    scratch: str = "memory"
    wait_s: float = 60.0
    max_reports: int = 1000
    jobs: int = 1
    spec: str | None = None

    @property
    def ranged(self) -> bool:
        """Whether the replay starts after the log's start."""
        return self.since_ms is not None or bool(self.from_offset)


@dataclass
class ReplayResult:
    """What a replay found; ``setup_s`` of ``seconds`` went to finding where to read."""

    stats: ReplayStats
    divergences: list[Divergence]
    partitions: list[int]
    seconds: float = 0.0
    setup_s: float = 0.0
    total: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Whether no instance parts from what the pipeline published."""
        return self.stats.diverged == 0


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a cpuset, ``taskset``), which
    ``os.cpu_count`` ignores; two processes on one CPU only take turns."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


async def replay(
    settings: Settings,
    registry: Registry,
    opts: ReplayOptions = ReplayOptions(),
    *,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``settings.app``'s events with ``registry``'s machines and compare."""
    started = time.monotonic()
    options = kafka_options(settings.kafka)
    topics = settings.topics
    all_parts = await topic_partitions(options, topics.events)
    if not all_parts:
        raise GarrisonError(f"no topic {topics.events}: is {settings.app!r} the app's name?")
    tenant = opts.only.tenant
    parts = (
        [partition_of(tenant.encode(), len(all_parts))]
        if tenant is not None and not settings.partitioning.spread(tenant)
        else all_parts  # a hot tenant's (or hot machine's) instances are everywhere
    )
    where = await bounds(
        options,
        topics.events,
        parts,
        since_ms=opts.since_ms,
        until_ms=opts.until_ms,
        from_offset=opts.from_offset,
        to_offset=opts.to_offset,
    )
    where = {p: b for p, b in where.items() if b[1] > b[0]}
    total = sum(end - first for first, end, _ in where.values())
    if on_total is not None:
        on_total(total)
    await wait_applied(settings, {p: b[1] for p, b in where.items()}, opts.wait_s)
    dead = await dead_lettered(settings)
    setup = time.monotonic() - started
    jobs = min(opts.jobs if opts.jobs > 0 else usable_cpus(), len(where))
    if jobs > 1:
        if opts.spec is None:
            raise GarrisonError("a replay with jobs > 1 needs the app's module path (spec)")
        stats, found = await _in_processes(settings, opts, where, dead, jobs, progress)
    else:
        stats, found = await _replay_parts(settings, registry, opts, where, dead, progress)
    result = ReplayResult(stats, found, sorted(where), total=total, setup_s=setup)
    result.seconds = time.monotonic() - started
    return result


async def _replay_parts(
    settings: Settings,
    registry: Registry,
    opts: ReplayOptions,
    where: dict[int, Bounds],
    dead: dict[tuple[int, int], str],
    progress: Progress | None,
) -> tuple[ReplayStats, list[Divergence]]:
    """Replay ``where``'s partitions one after another in this process."""
    options = kafka_options(settings.kafka)
    topics = Topics.of(settings.app)  # no latest-state output: the replay produces nothing
    rules = Rules(
        registry,
        topics,
        keep_ids=settings.dedupe_ids,
        tombstone_ms=settings.tombstone_ms,
        trust_firings=True,  # the dead-letter topic says which the pipeline refused
    )
    comparer = Comparer(ranged=opts.ranged, max_reports=opts.max_reports)
    scratch: Scratch = DiskScratch() if opts.scratch == "disk" else MemoryScratch()
    replayer = Replayer(rules, scratch, comparer, dead_lettered=dead, only=opts.only)
    read = 0
    try:
        for p, (first, end, start_ms) in sorted(where.items()):
            events = partition_records(
                options, topics.events, p, start_offset=first, end_offset=end
            )
            live_ms = start_ms - settings.history.clock_skew_ms if opts.ranged else 0
            live = partition_records(
                options, topics.state_changes, p, start_ms=live_ms if live_ms > 0 else None
            )
            async with aclosing(events) as ev_chunks, aclosing(live) as live_chunks:
                read = await _lockstep(replayer, ev_chunks, live_chunks, read, progress)
            comparer.finish()
            scratch.clear()
    finally:
        if isinstance(scratch, DiskScratch):
            scratch.close()
    return comparer.stats, comparer.divergences


async def _lockstep(
    replayer: Replayer,
    events: AsyncGenerator[list[Any], None],
    live: AsyncGenerator[list[Any], None],
    read: int,
    progress: Progress | None,
) -> int:
    """Read both streams of a partition side by side, so that neither side's unmatched
    changes pile up: the one behind is read next."""
    comparer, only = replayer.comparer, replayer.only
    ev_done = live_done = False
    while not (ev_done and live_done):
        if not ev_done and (live_done or comparer.waiting_replayed <= comparer.waiting_live):
            chunk = await anext(events, None)
            if chunk is None:
                ev_done = True
                continue
            for rec in chunk:
                replayer.event(rec)
            read += len(chunk)
            if progress is not None:
                progress(read, comparer.stats.diverged)
        else:
            chunk = await anext(live, None)
            if chunk is None:
                live_done = True
                continue
            for rec in chunk:
                if rec.value is not None and only.admits_change(rec.value):
                    comparer.live(rec.value)
    return read


_progress_queue: Any = None  # a child process's channel to the parent


def _child_init(channel: Any) -> None:
    global _progress_queue
    _progress_queue = channel


def _child(
    settings: Settings,
    opts: ReplayOptions,
    where: dict[int, Bounds],
    dead: dict[tuple[int, int], str],
) -> tuple[dict[str, int], list[Divergence]]:
    """One process's share: its partitions, replayed with the app imported by its path."""
    from garrison.cli import load_registry

    assert opts.spec is not None
    registry = load_registry(opts.spec)
    last = [0]

    def told(done: int, differ: int) -> None:
        _progress_queue.put((done - last[0], differ))
        last[0] = done

    stats, found = asyncio.run(_replay_parts(settings, registry, opts, where, dead, told))
    return vars(stats), found


async def _in_processes(
    settings: Settings,
    opts: ReplayOptions,
    where: dict[int, Bounds],
    dead: dict[tuple[int, int], str],
    jobs: int,
    progress: Progress | None,
) -> tuple[ReplayStats, list[Divergence]]:
    """Share the partitions among ``jobs`` processes (largest first, to the least
    loaded) and add up what they found."""
    shares: list[dict[int, Bounds]] = [{} for _ in range(jobs)]
    loads = [0] * jobs
    for p, b in sorted(where.items(), key=lambda item: item[1][0] - item[1][1]):
        i = loads.index(min(loads))
        shares[i][p] = b
        loads[i] += b[1] - b[0]
    context = multiprocessing.get_context("spawn")  # never fork a process with a loop
    channel = context.Queue()
    loop = asyncio.get_running_loop()
    read = 0
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_child_init, initargs=(channel,)
    ) as pool:
        futures = [
            loop.run_in_executor(pool, _child, settings, opts, share, dead) for share in shares
        ]
        pending = set(futures)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.2)
            while True:
                try:
                    step, diverged = channel.get_nowait()
                except queue.Empty:
                    break
                read += step
                if progress is not None:
                    progress(read, diverged)
        results = [f.result() for f in futures]
    stats = ReplayStats()
    for name in (f.name for f in fields(ReplayStats)):
        setattr(stats, name, sum(r[0][name] for r in results))
    found = sorted((d for r in results for d in r[1]), key=lambda d: d[:3])
    return stats, found[: opts.max_reports]
