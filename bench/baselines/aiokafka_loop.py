"""Baseline: a plain aiokafka consume-decode-update-produce loop (the Python limit).

State is a dict in memory: no RocksDB, no changelog, no transactions; offsets are
committed after each fetched batch has been flushed (at least once). It does the
workload's work per event (see ``bench/workload.py``) and nothing else.

    python bench/baselines/aiokafka_loop.py --bootstrap HOST:PORT --input TOPIC \\
        --output TOPIC --group GROUP --state-dir DIR --partitions P

Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from bench.workload import INITIAL, apply, baseline_args, change, store_key  # noqa: E402

__all__ = ["main", "run"]


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Consume ``args.input`` from the start until ``stop`` is set."""
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    states: dict[bytes, tuple[int, dict[str, Any]]] = {}
    loads, dumps, send, output = orjson.loads, orjson.dumps, producer.send, args.output
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                continue
            for records in batch.values():
                for rec in records:
                    event = loads(rec.value)
                    key = store_key(event)
                    seq, prev = states.get(key, (0, INITIAL))
                    state = apply(prev, event["id"], event["data"]["amount"])
                    states[key] = (seq + 1, state)
                    await send(
                        output,
                        dumps(change(event, seq + 1, prev if seq else None, state)),
                        key=rec.key,
                    )
            await producer.flush()
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT."""
    args = baseline_args(argv, __doc__.splitlines()[0])

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
