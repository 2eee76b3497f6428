"""Dead letters read from ``<app>.dlq`` and sent back: what ``garrison dlq`` runs (the pure
part, filters and fixes, is :mod:`pipeline.redrive`).

Reading streams the dead-letter topic (from a time's offset when the filter has one;
straight to the named records with ``at``). Re-driving produces, with an idempotent
producer, each chosen letter's record: event letters to ``<app>.events`` (the worker's
per-instance de-duplication by event id makes a second re-drive a no-op), listener
letters to ``<app>.listener-redrive`` (the listener runner hands them to the named
listener only). A listener letter already on the re-drive topic (same re-drive id) is
skipped unless forced, so running the same re-drive twice sends it once.
"""

from __future__ import annotations

import getpass
import importlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from agents.changes import partition_records
from agents.kafka import kafka_options
from agents.topics import ensure_topics
from garrison.position import topic_partitions
from pipeline.errors import GarrisonError
from pipeline.redrive import (
    REDRIVE_ID,
    Fix,
    InvalidFix,
    Letter,
    LetterFilter,
    redrive_record,
    redriven_ids,
)
from pipeline.settings import Settings

__all__ = ["Outcome", "RedriveReport", "load_fix", "operator", "read_letters", "redrive"]


def operator() -> str:
    """Who re-drives, for the audit header: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def load_fix(spec: str) -> Fix:
    """``module:function`` imported: a function from the decoded value to the fixed one."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise GarrisonError(f"--fix takes module:function, got {spec!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GarrisonError(f"cannot import {module_name!r} for --fix: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise GarrisonError(f"{spec} is not a function")
    fix: Fix = fn
    return fix


async def read_letters(settings: Settings, flt: LetterFilter) -> AsyncIterator[Letter]:
    """The dead letters ``flt`` chooses, partition by partition, in offset order."""
    options = kafka_options(settings.kafka)
    topic = settings.topics.dlq
    wanted: dict[int, list[int]] = {}
    for p, o in flt.at:
        wanted.setdefault(p, []).append(o)
    for p in await topic_partitions(options, topic):
        if flt.at and p not in wanted:
            continue
        ranges = [(o, o + 1) for o in sorted(wanted[p])] if flt.at else [(None, None)]
        for start, end in ranges:
            records = partition_records(
                options,
                topic,
                p,
                start_offset=start,
                end_offset=end,
                start_ms=None if start is not None else flt.since_ms,
            )
            async with aclosing(records) as chunks:
                async for chunk in chunks:
                    for rec in chunk:
                        letter = Letter.read(rec)
                        if flt.matches(letter):
                            yield letter


@dataclass(frozen=True)
class Outcome:
    """What happened to one chosen letter."""

    where: str
    kind: str
    to: str
    result: str  # sent | would send | skipped: ... | failed: ...


@dataclass
class RedriveReport:
    """Every chosen letter's outcome."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """How many were produced."""
        return sum(1 for o in self.outcomes if o.result == "sent")

    @property
    def failed(self) -> int:
        """How many could not be (their fix failed)."""
        return sum(1 for o in self.outcomes if o.result.startswith("failed"))


async def _already(settings: Settings) -> set[str]:
    """The re-drive ids already on the listener re-drive topic."""
    options = kafka_options(settings.kafka)
    topic = settings.topics.listener_redrive
    found: set[str] = set()
    for p in await topic_partitions(options, topic):
        async with aclosing(partition_records(options, topic, p)) as chunks:
            async for chunk in chunks:
                found |= redriven_ids(chunk)
    return found


async def redrive(
    settings: Settings,
    flt: LetterFilter,
    *,
    fix: Fix | None = None,
    fix_label: str = "",
    by: str | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> RedriveReport:
    """Send the letters ``flt`` chooses back where they belong (see the module doc)."""
    await ensure_topics(settings)  # the listener re-drive topic, in an app that predates it
    report = RedriveReport()
    who = by or operator()
    done = set() if force else await _already(settings)
    producer = AIOKafkaProducer(
        **kafka_options(settings.kafka), enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        async for letter in read_letters(settings, flt):
            try:
                out = redrive_record(
                    letter,
                    settings.topics,
                    when_ms=int(time.time() * 1000),
                    by=who,
                    fix=fix,
                    fix_label=fix_label,
                )
            except InvalidFix as exc:
                report.outcomes.append(Outcome(letter.where, letter.kind, "-", f"failed: {exc}"))
                continue
            rid = dict(out.headers).get(REDRIVE_ID)
            if rid is not None and rid.decode() in done:
                result = "skipped: re-driven already (--force sends it again)"
                report.outcomes.append(Outcome(letter.where, letter.kind, out.topic, result))
                continue
            if not dry_run:
                await producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers)
                if rid is not None:
                    done.add(rid.decode())
            result = "would send" if dry_run else "sent"
            report.outcomes.append(Outcome(letter.where, letter.kind, out.topic, result))
    finally:
        await producer.stop()
    return report
