"""What each part of the bulk restore path costs: the same changelog restored with and
without each, in one process pinned to one CPU.

``python -m bench.restore_paths [--records N] [--rounds R]`` (not a ``bench/run`` part:
it measures garrison's restore against variants of itself, not against a peer). It
fills a 4-partition topic with ``N`` changelog-like records in transactions (an
instance's state record and a history slot per event, 180-byte values), then, for each
round, restores it (``tables.changelog.restore``) into fresh RocksDB databases with
garrison's options, once as garrison does it and once with one part taken away:

- ``consumer-records``: aiokafka's ``ConsumerRecord`` built for every record (what
  ``tables.changelog._as_read`` skips);
- ``collector-on``: the cyclic collector left running (``restore`` pauses it);
- ``none``: both, the path before them.

(Writing each batch in key order, which helped with 32 MiB memtables, did not with
the 16 MiB default: 4.78 and 4.13 us a record against 5.07 and 4.33; so it is not
done, and not compared here.)

It prints the CPU time of this process per record (RocksDB's flush and compaction
threads included: they share the CPU). The broker is local (started on the other
CPU) unless ``GARRISON_KAFKA_BOOTSTRAP`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer
from rocksdict import Rdict

import tables.changelog as changelog
from bench.affinity import plan_affinity
from bench.topic import create_topics
from pipeline.settings import RocksDBSettings
from tables.changelog import last_data_offsets, restore
from tables.store import options_for, shared_cache, write_all

_PARTITIONS = 4
_VARIANTS = {  # name: (parsed records, collector paused)
    "garrison": (True, True),
    "consumer-records": (False, True),
    "collector-on": (True, False),
    "none": (False, False),
}


async def _fill(bootstrap: str, topic: str, records: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{topic}-fill", linger_ms=5
    )
    await producer.start()
    value, rnd, sent = os.urandom(180), random.Random(1), 0
    try:
        while sent < records:
            async with producer.transaction():
                for _ in range(2000):
                    n = rnd.randrange(1_000_000)
                    key = b"4:t%03d7:counter7:i%06d" % (n % 1000, n)
                    partition = n % _PARTITIONS
                    await producer.send(topic, value, key=key, partition=partition)
                    history = b"\x01h" + key + b"\x00\x01"
                    await producer.send(topic, value, key=history, partition=partition)
                    sent += 2
    finally:
        await producer.stop()


@contextlib.contextmanager
def _variant(parsed: bool, paused: bool) -> Iterator[None]:
    patched = changelog.aiokafka_fetcher.PartitionRecords
    garrisons, disable = patched._consumer_record, changelog.gc.disable  # noqa: SLF001
    if not parsed:
        patched._consumer_record = changelog._consumer_record  # type: ignore[method-assign]  # noqa: SLF001
    if not paused:
        changelog.gc.disable = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        patched._consumer_record = garrisons  # type: ignore[method-assign]  # noqa: SLF001
        changelog.gc.disable = disable  # type: ignore[assignment]


def _writer(dbs: list[Rdict]) -> Callable[[str, int, dict[bytes, bytes | None], int], None]:
    def write(topic: str, partition: int, writes: dict[bytes, bytes | None], last: int) -> None:
        write_all(dbs[partition], writes)

    return write


async def _round(bootstrap: str, topic: str, name: str, work: Path) -> tuple[int, float]:
    parsed, paused = _VARIANTS[name]
    settings = RocksDBSettings()
    cache = shared_cache(settings)
    dbs = [
        Rdict(tempfile.mkdtemp(dir=work), options_for(settings, cache)) for _ in range(_PARTITIONS)
    ]
    options = {"bootstrap_servers": bootstrap}
    ends = await last_data_offsets(options, [(topic, p) for p in range(_PARTITIONS)])
    try:
        with _variant(parsed, paused):
            cpu = time.process_time()
            read = await restore(options, {k: (0, end) for k, end in ends.items()}, _writer(dbs))
            return read, time.process_time() - cpu
    finally:
        for db in dbs:
            db.close()


async def _main(args: argparse.Namespace, bootstrap: str, system_cpus: set[int] | None) -> None:
    topic = f"restore-paths-{int(time.time())}"
    await create_topics(bootstrap, [topic], partitions=_PARTITIONS)
    await _fill(bootstrap, topic, args.records)
    if system_cpus:
        os.sched_setaffinity(0, system_cpus)
    print(f"{args.records:,} records in {_PARTITIONS} partitions; CPU us per record restored")
    with tempfile.TemporaryDirectory(prefix="restore-paths-") as work:
        for n in range(args.rounds):
            for name in _VARIANTS:
                read, cpu = await _round(bootstrap, topic, name, Path(work))
                print(f"round {n + 1} {name:17} {cpu / read * 1e6:5.2f} us ({read:,} records)")


def main() -> None:
    """Run it (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.restore_paths", description=__doc__.splitlines()[0]
    )
    p.add_argument("--records", type=int, default=1_200_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    affinity = plan_affinity(unpinned=False)
    affinity.pin_harness()  # the broker started below inherits it
    bootstrap = os.environ.get("GARRISON_KAFKA_BOOTSTRAP")
    kafka = None
    if bootstrap is None:
        from garrison.local_kafka import LocalKafka

        kafka = LocalKafka(Path(tempfile.mkdtemp(prefix="restore-paths-kafka-")), port=0)
        bootstrap = kafka.up()
    try:
        cpus = set(affinity.system_cpus) if affinity.system_cpus else None
        asyncio.run(_main(args, bootstrap, cpus))
    finally:
        if kafka is not None:
            kafka.down(purge=True)


if __name__ == "__main__":
    main()
