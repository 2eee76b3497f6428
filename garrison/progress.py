"""Progress of a long command: a tqdm bar on a terminal, a line every few seconds
otherwise (a log, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts ``done`` of ``total``; :meth:`close` ends the bar."""

    def __init__(self, label: str, *, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.label = label
        self.total = 0
        self.done = 0
        self.note = ""
        self._out = stream or sys.stderr
        self._every = every_s
        self._t0 = self._last = time.monotonic()
        self._bar: Any = None
        if self._out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="ev", unit_scale=True, file=self._out, desc=label)

    def set_total(self, total: int) -> None:
        """How many there are to do."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, done: int, note: str = "") -> None:
        """How many are done so far, and a word on what was found."""
        self.done, self.note = done, note
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        rate = done / max(now - self._t0, 1e-9)
        share = f" ({done / self.total:.0%})" if self.total else ""
        tail = f", {note}" if note else ""
        print(
            f"{self.label}: {done:,}/{self.total:,} events{share}, {rate:,.0f} events/s{tail}",
            file=self._out,
            flush=True,
        )

    def close(self) -> None:
        """End the display."""
        if self._bar is not None:
            self._bar.close()
