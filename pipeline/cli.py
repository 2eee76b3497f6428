"""The ``garrison`` command line.

``garrison kafka up|down|status``  run a local Apache Kafka (no Docker needed)
``garrison worker APP``            run a dispatch worker for the machines in module APP
``garrison listen APP``            run APP's listeners on the state-change topic
``garrison send ...``              send one event
``garrison tail``                  follow state changes
``garrison state get T M I``       read one instance's state from the worker's query API
``garrison diagram APP MACHINE``   print a machine as a Mermaid state diagram

Settings come from ``GARRISON_*`` environment variables (see ``pipeline.settings``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.broker import LocalKafka
from pipeline.errors import GarrisonError

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace], int]


def _kafka(args: argparse.Namespace) -> int:
    kafka = LocalKafka(args.state_dir, port=args.port, heap_mb=args.heap_mb)
    if args.action == "up":
        before = kafka.status()
        started = time.monotonic()
        bootstrap = kafka.up()
        if before.running:
            print(f"kafka is already running at {bootstrap} (pid {before.pid})")
        else:
            print(f"kafka is up at {bootstrap} (ready in {time.monotonic() - started:.1f} s)")
            print(f"  export GARRISON_KAFKA_BOOTSTRAP={bootstrap}")
        return 0
    if args.action == "down":
        stopped = kafka.down(purge=args.purge)
        print("kafka stopped" if stopped else "kafka was not running")
        if args.purge:
            print(f"removed {kafka.state_dir}")
        return 0
    status = kafka.status()
    print(status.describe())
    return 0 if status.running else 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand module adds its own parser here."""
    parser = argparse.ArgumentParser(prog="garrison", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run a local single-node Apache Kafka (KRaft)")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument("--port", type=int, default=None,
                       help="listener port (default 9092; 0 picks a free one)")
    kafka.add_argument("--state-dir", type=Path, default=None,
                       help="data, config and pid folder (default ~/.cache/garrison/broker)")
    kafka.add_argument("--heap-mb", type=int, default=512)
    kafka.add_argument("--purge", action="store_true", help="with down: delete the data")
    kafka.set_defaults(handler=_kafka)

    from pipeline.cli_app import add_app_commands  # the commands that need a running app

    add_app_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``garrison`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except GarrisonError as exc:
        print(f"garrison: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
