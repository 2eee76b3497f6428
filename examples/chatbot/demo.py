"""The demo behind ``./run demo``: casern's chatbot across many tenants on a real broker.

It starts a garrison worker process and runs the listeners in this process, opens
``--conversations`` chats for each of ``--tenants`` tenants, answers most of them and
lets the rest time out: the durable timer's periodic check times them out, the
``email_support`` listener mails support and sends ``chat.escalated`` back. It prints
what happened and exits when every conversation is answered or escalated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from agents.kafka import kafka_options
from agents.listeners import ListenerRunner
from agents.topics import ensure_topics
from examples.chatbot.app import registry
from garrison.client import Client
from garrison.process import WorkerProcess
from pipeline.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _follow(
    settings: Settings,
    latest: dict[tuple[str, str], str],
    counts: Counter[str],
    stop: asyncio.Event,
) -> None:
    consumer = AIOKafkaConsumer(
        settings.topics.state_changes,
        **kafka_options(settings.kafka),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                for rec in records:
                    change = json.loads(rec.value)
                    counts[change["event_type"]] += 1
                    latest[(change["tenant"], change["instance"])] = change["state"]["status"]
    finally:
        await consumer.stop()


def _state(port: int, tenant: str, instance: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/state/{tenant}/conversation/{instance}"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own worker
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def main(tenants: int, conversations: int, answer_ratio: float) -> int:
    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="garrison-demo-"))
    env = {
        "GARRISON_APP": os.environ.get("GARRISON_APP", "chatbot"),
        "GARRISON_DATA_DIR": str(data),
        "GARRISON_WEB_PORT": str(port),
        "GARRISON_KAFKA_PARTITIONS": os.environ.get("GARRISON_KAFKA_PARTITIONS", "8"),
    }
    os.environ.update(env)
    settings = Settings()
    print(
        f"garrison demo: app {settings.app!r} on {settings.kafka.bootstrap}, "
        f"{tenants} tenants x {conversations} conversations"
    )
    await ensure_topics(settings)
    worker = WorkerProcess("examples.chatbot.app", env, data / "worker.log")
    worker.start()
    runner = ListenerRunner(settings, registry)
    listening = asyncio.create_task(runner.run())
    latest: dict[tuple[str, str], str] = {}
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    following = asyncio.create_task(_follow(settings, latest, counts, stop))
    rng = random.Random(42)
    total = tenants * conversations
    started = time.monotonic()
    try:
        async with Client(settings, source="demo") as client:
            chats = [
                (f"tenant-{t:04d}", f"chat-{c}")
                for t in range(tenants)
                for c in range(conversations)
            ]
            for tenant, chat in chats:
                await client.send(
                    tenant,
                    "conversation",
                    chat,
                    "chat.inquired",
                    {"name": f"visitor {rng.randrange(10_000)}", "message": "hello?"},
                    wait=False,
                )
            await client.flush()
            print(f"  sent {total} inquiries in {time.monotonic() - started:.1f}s")
            answered = [c for c in chats if rng.random() < answer_ratio]
            await asyncio.sleep(1.0)
            for tenant, chat in answered:
                await client.send(
                    tenant,
                    "conversation",
                    chat,
                    "chat.replied",
                    {"by": "agent", "message": "hi!"},
                    wait=False,
                )
            await client.flush()
            print(f"  answered {len(answered)}; the other {total - len(answered)} will time out")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = sum(1 for s in latest.values() if s in ("answered", "escalated"))
            if len(latest) == total and done == total:
                break
            if not worker.alive():
                print(f"worker died:\n{worker.log_tail()}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        else:
            print(f"timed out: {Counter(latest.values())}\n{worker.log_tail()}", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        print(f"\nall {total} conversations settled in {elapsed:.1f}s")
        print(f"  state changes published: {sum(counts.values())}")
        for event_type, n in sorted(counts.items()):
            print(f"    {event_type:24} {n}")
        print(f"  final statuses: {dict(sorted(Counter(latest.values()).items()))}")
        mail = registry.services.mail.sent
        print(
            f"  listener actions: {len(mail)} mails to support, "
            f"{runner.stats.sent} events sent back, {runner.stats.dead_letters} dead letters"
        )
        if mail:
            print(f"    e.g. to {mail[0][0]}: {mail[0][1]!r}")
        print("  sample states (from the worker's query API):")
        for tenant, chat in rng.sample(sorted(latest), 3):
            state = await asyncio.to_thread(_state, port, tenant, chat)
            print(f"    {tenant}/{chat}: seq {state['seq']} {state['state']}")
        return 0
    finally:
        stop.set()
        runner.stop()
        await asyncio.gather(following, listening, return_exceptions=True)
        worker.stop()


if __name__ == "__main__":
    # A fresh broker answers "coordinator not available" until its offsets topic exists;
    # aiokafka retries and logs each try. The demo checks its own outcome instead.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--answer-ratio", type=float, default=0.7)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.tenants, args.conversations, args.answer_ratio)))
