"""What a Kafka transaction costs from Python: the same batches with and without one.

A garrison lane commits each batch in a transaction of its own producer. At a paced
rate a batch holds tens of events, so what a transaction costs beyond its records
decides how much CPU the worker has left (see bench/README.md on latency). Here
``lanes`` lanes (one per partition, like a worker's) each produce, back to back, a
batch of ``records`` state changes and as many changelog records, to their partition
of two topics, and wait for it:

- ``transactional``: each batch in one transaction (AddPartitionsToTxn, produce,
  EndTxn), a producer with a ``transactional.id`` per lane, as the dispatcher does;
- ``idempotent`` (the baseline): the same batches from an idempotent producer with
  ``acks=all``, no transaction.

Each runs for ``seconds``, after an unmeasured warm-up. Per batch it reports the CPU
time of this process (the client; nothing else runs in it meanwhile) and, when the
broker is local, of the broker's process.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.kafka import tune_transaction_retries
from bench.system import cpu_seconds
from bench.topic import create_topics

__all__ = ["measure_transactions"]

_VALUE = b'{"tenant":"t1","machine":"counter","instance":"i1","seq":2,"state":{"n":2}}'


async def _lane(
    bootstrap: str,
    topics: list[str],
    partition: int,
    records: int,
    transactional: bool,
    until: float,
) -> int:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
    }
    if transactional:
        options["transactional_id"] = f"bench-txn-{uuid.uuid4().hex[:8]}-{partition}"
    producer = AIOKafkaProducer(**options)
    await producer.start()
    batches = 0
    try:
        while time.monotonic() < until:
            if transactional:
                await producer.begin_transaction()
            futures = []
            for topic in topics:
                builder = producer.create_batch()
                for n in range(records):
                    builder.append(key=b"t%d" % n, value=_VALUE, timestamp=None)
                futures.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*futures)
            if transactional:
                await producer.commit_transaction()
            batches += 1
    finally:
        await producer.stop()
    return batches


async def measure_transactions(
    bootstrap: str, prefix: str, *, lanes: int, records: int, seconds: float, broker_pid: int | None
) -> dict[str, float]:
    """Figures of both ways (``txn_*``, ``plain_*``) and their ratios."""
    tune_transaction_retries()  # as the worker does
    topics = [f"{prefix}.txn-bench-state-changes", f"{prefix}.txn-bench-changelog"]
    await create_topics(bootstrap, topics, lanes)
    broker_cpu = None if broker_pid is None else functools.partial(cpu_seconds, broker_pid)

    async def produce(transactional: bool, for_s: float) -> int:
        until = time.monotonic() + for_s
        counts = await asyncio.gather(
            *(_lane(bootstrap, topics, p, records, transactional, until) for p in range(lanes))
        )
        return sum(counts)

    # Unmeasured first, both ways: a broker started moments ago (--only transactions)
    # is still compiling its hot paths, and would be charged for it.
    for transactional in (False, True):
        await produce(transactional, min(2.0, seconds / 2))
    out: dict[str, float] = {}
    for name, transactional in (("plain", False), ("txn", True)):
        client0, broker0 = time.process_time(), broker_cpu() if broker_cpu else None
        batches = await produce(transactional, seconds)
        client = time.process_time() - client0
        out[f"{name}_batches_per_s"] = batches / seconds
        out[f"{name}_client_cpu_ms_per_batch"] = 1000 * client / batches
        broker1 = broker_cpu() if broker_cpu else None
        if broker0 is not None and broker1 is not None:
            out[f"{name}_broker_cpu_ms_per_batch"] = 1000 * (broker1 - broker0) / batches
    out["txn_vs_plain_client_cpu"] = (
        out["txn_client_cpu_ms_per_batch"] / out["plain_client_cpu_ms_per_batch"]
    )
    if "txn_broker_cpu_ms_per_batch" in out and "plain_broker_cpu_ms_per_batch" in out:
        out["txn_vs_plain_broker_cpu"] = (
            out["txn_broker_cpu_ms_per_batch"] / out["plain_broker_cpu_ms_per_batch"]
        )
    out["txn_records_per_batch"] = float(2 * records)
    out["txn_lanes"] = float(lanes)
    return out
