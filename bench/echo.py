"""The echo loop of ``bench/kv.py``'s floor, as a process of its own.

It stands where a garrison worker stands in an answered write: it consumes the request
topic and produces each request again, unchanged, to the reply topic; no transaction,
no state. The harness starts it like the worker it is compared with (through
``bench.system.Process``, on the system CPU when the run is pinned), so the floor is
measured across the same processes and CPUs as ``client.update``.

    python -m bench.echo --bootstrap HOST:PORT --requests TOPIC --replies TOPIC

Consumer and producer settings are those of garrison's client (``ECHO_CONSUMER``,
``ECHO_PRODUCER``). Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["ECHO_CONSUMER", "ECHO_PRODUCER", "echo"]

ECHO_CONSUMER: dict[str, Any] = {
    "enable_auto_commit": False,
    "isolation_level": "read_committed",
    "fetch_max_wait_ms": 100,  # as the client's correlator
}
ECHO_PRODUCER: dict[str, Any] = {
    "enable_idempotence": True,
    "linger_ms": 5,  # as the client's producer
}


async def echo(bootstrap: str, requests: str, replies: str, stop: asyncio.Event) -> None:
    """Echo ``requests`` to ``replies`` (from their ends) until ``stop`` is set."""
    inbound = AIOKafkaConsumer(
        requests, bootstrap_servers=bootstrap, auto_offset_reset="latest", **ECHO_CONSUMER
    )
    echoer = AIOKafkaProducer(bootstrap_servers=bootstrap, **ECHO_PRODUCER)
    await inbound.start()
    await echoer.start()
    try:
        while not stop.is_set():
            batch = await inbound.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    await echoer.send(replies, rec.value, key=rec.key)
    finally:
        await inbound.stop()
        await echoer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="echo one topic to another")
    for name in ("bootstrap", "requests", "replies"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await echo(args.bootstrap, args.requests, args.replies, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
