"""What garrison processes say in their logs: the format, the ready line, dead letters
(rate-limited) and the progress of a long restore.

- ``GARRISON_LOG_FORMAT=json``: one JSON object per line (python-json-logger), with
  ``time``, ``level``, ``logger`` and ``message`` keys and any ``extra`` fields;
- a worker says once per activation that it is ready, with its app, partitions and
  web address, at WARNING: the default log level is ``warn`` (Faust's handlers are
  set to it), and the one line an operator waits for must show at every level;
- a dead letter is a WARNING naming its partition, offset, stage and reason, at most
  :data:`BURST` lines at once and one a second after that (a flood of bad input must
  not become a flood of log lines that buries everything else); the lines left out
  are counted in the next one, and every dead letter is in ``garrison_dead_letters_total``
  and in the dead-letter topic anyway;
- a restore longer than a few seconds logs its progress every :data:`PROGRESS_EVERY_S`.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from pipeline.settings import Settings

__all__ = [
    "BURST",
    "PROGRESS_EVERY_S",
    "RestoreProgress",
    "TokenBucket",
    "announce_ready",
    "dead_letter_log",
    "setup_logging",
    "use_format",
]

log = logging.getLogger("garrison")
ready_log = logging.getLogger("garrison.ready")

BURST = 10  # dead-letter lines at once
_RATE_PER_S = 1.0  # and then this many a second
PROGRESS_EVERY_S = 5.0

_TEXT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO"}


def _json() -> logging.Formatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def use_format(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of ``logger`` the ``json`` formatter (``text``: as they are)."""
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(_json())


def setup_logging(settings: Settings) -> None:
    """The root logger of a process garrison runs without Faust (``garrison listen``):
    to stderr, at ``GARRISON_LOG_LEVEL``, in ``GARRISON_LOG_FORMAT``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_json() if settings.log_format == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(settings.log_level, "DEBUG"))


def announce_ready(
    settings: Settings, partitions: Sequence[int], role: str = "worker", port: int | None = None
) -> None:
    """The one ready line of an activation (see the module doc for its level)."""
    web = settings.web
    host = web.advertised_host or socket.gethostname()  # as Faust advertises it
    where = f"http://{host}:{port or web.port}" if web.enabled else "off"
    shown = "" if role != "worker" else f", partitions {list(partitions) or 'none'}"
    ready_log.warning(
        "garrison %s ready: app %s%s, web %s",
        role,
        settings.app,
        shown,
        where,
        extra={"app": settings.app, "role": role, "partitions": list(partitions), "web": where},
    )


class TokenBucket:
    """``take()`` is True at most ``burst`` times at once and ``rate`` times a second on
    average. Twenty lines here rather than a dependency: it only gates log lines."""

    def __init__(self, burst: float, rate: float, clock: Any = time.monotonic) -> None:
        self.burst, self.rate, self.clock = burst, rate, clock
        self.tokens = burst
        self.at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _DeadLetterLog:
    """Dead letters as WARNING lines, through one :class:`TokenBucket` per process."""

    def __init__(self) -> None:
        self.bucket = TokenBucket(BURST, _RATE_PER_S)
        self.left_out = 0

    def _say(self, text: str, *args: Any) -> None:
        if not self.bucket.take():
            self.left_out += 1
            return
        if self.left_out:
            text += " (%d more dead letters not logged; see garrison_dead_letters_total)"
            args = (*args, self.left_out)
            self.left_out = 0
        log.warning(text, *args)

    def committed(self, partition: int, letters: Sequence[tuple[Any, str, str]]) -> None:
        """Dead letters of a committed batch: ``(record, stage, reason)``."""
        for rec, stage, reason in letters:
            self._say(
                "dead letter: partition %d offset %d, stage %s: %s",
                partition,
                rec.offset,
                stage,
                reason,
            )

    def listener(self, name: str, reason: str) -> None:
        """A listener's dead letter."""
        self._say("dead letter from listener %s: %s", name, reason)


dead_letter_log = _DeadLetterLog()
"""The process's dead-letter lines (one bucket: they share one log)."""


class RestoreProgress:
    """Where a restore is, by changelog offsets; logs it every :data:`PROGRESS_EVERY_S`
    and keeps the restore metrics (``garrison_restore_*``) up to date."""

    def __init__(self, ranges: dict[tuple[str, int], tuple[int, int]], metrics: Any = None) -> None:
        self.ranges, self.metrics = ranges, metrics
        self.total = sum(end - start + 1 for start, end in ranges.values() if end >= start)
        self.reached: dict[tuple[str, int], int] = {}
        self.done = 0
        self.started = self.said = time.monotonic()
        if metrics is not None:
            metrics.restore_remaining.set(self.total)

    def wrote(self, topic: str, partition: int, last: int) -> None:
        """The stores have ``topic``/``partition`` up to offset ``last``."""
        start = self.ranges[(topic, partition)][0]
        before = self.reached.get((topic, partition), start - 1)
        self.reached[(topic, partition)] = last
        self.done += max(0, last - before)
        if self.metrics is not None:
            self.metrics.restored.inc(max(0, last - before))
            self.metrics.restore_remaining.set(max(0, self.total - self.done))
        now = time.monotonic()
        if now - self.said >= PROGRESS_EVERY_S:
            self.said = now
            log.warning(
                "restoring the stores: %s of %s changelog offsets (%.0f%%) in %.0f s",
                f"{self.done:,}",
                f"{self.total:,}",
                100 * self.done / max(1, self.total),
                now - self.started,
            )

    def finished(self, count: int) -> None:
        """The restore is over: ``count`` records read. Said at WARNING when it was long
        enough to have shown progress, else at INFO."""
        took = time.monotonic() - self.started
        if self.metrics is not None:
            self.metrics.restore_remaining.set(0)
        if count:
            level = logging.WARNING if took >= PROGRESS_EVERY_S else logging.INFO
            log.log(level, "restored %d changelog records in %.1f s", count, took)
