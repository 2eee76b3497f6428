"""Baseline: the naive Faust agent, the way the Faust docs write one.

Per event: read the instance's entry from a RocksDB table (rocksdict, with Faust's
changelog), write it back with ``table[key] = value`` and ``await topic.send(...)`` the
state change. It does the workload's work (see ``bench/workload.py``); it is slow, so
the harness caps its run by time.

    python bench/baselines/faust_naive.py --bootstrap HOST:PORT --input TOPIC \\
        --output TOPIC --group GROUP --state-dir DIR --partitions P

The group is also the Faust app id (so the changelog is ``<group>-state-changelog``).
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faust  # noqa: E402
import orjson  # noqa: E402

from bench.workload import INITIAL, apply, baseline_args, change, store_key  # noqa: E402

__all__ = ["build_app", "main"]


def build_app(
    bootstrap: str, input_topic: str, output_topic: str, group: str, state_dir: str, partitions: int
) -> faust.App:
    """The Faust app: one agent, one table."""
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=state_dir,
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": partitions,
    }
    events = app.topic(input_topic, **raw)
    out = app.topic(output_topic, **raw)
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=partitions)
    table.key_serializer = table.value_serializer = "raw"  # type: ignore[attr-defined]
    loads, dumps = orjson.loads, orjson.dumps

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for record in stream.events():
            event = loads(record.value)
            key = store_key(event)
            stored = table.get(key)
            seq, prev = (0, INITIAL) if stored is None else loads(stored)
            state = apply(prev, event["id"], event["data"]["amount"])
            table[key] = dumps((seq + 1, state))
            await out.send(
                key=record.key, value=dumps(change(event, seq + 1, prev if seq else None, state))
            )

    return app


def main(argv: list[str] | None = None) -> int:
    """Run a Faust worker for the app until SIGTERM/SIGINT."""
    args = baseline_args(argv, __doc__.splitlines()[0])
    app = build_app(
        args.bootstrap, args.input, args.output, args.group, args.state_dir, args.partitions
    )
    worker = faust.Worker(app, loglevel="warn", quiet=True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
