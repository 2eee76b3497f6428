"""Dead letters: what could not be applied, kept whole, with what failed and where.

A dead-letter record keeps the original record as it was: its key and value bytes and
its headers, in order (so it can be fixed and re-driven as it came). After them come
garrison's headers, in the same form for every stage, as Kafka Connect does it:

- ``garrison.stage``: decode, origin, route, contract, reducer, state, transition,
  output (the pipeline), or listener;
- ``garrison.reason``: what is wrong, and what to fix (at most 4,000 characters);
- ``garrison.error``: the exception type (``ContractViolation``, ...);
- ``garrison.topic``, ``garrison.partition``, ``garrison.offset``: where it was read;
- ``garrison.timestamp``: the original record's timestamp (epoch ms); the dead letter's
  own timestamp is when it was rejected;
- ``garrison.listener``: for a listener's dead letter, which listener failed.

Header names starting ``garrison.`` are garrison's: these are dropped from a dead letter
when it is re-driven, so what goes back is the original record.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.envelope import Headers

__all__ = [
    "DEAD_LETTER_HEADERS",
    "DeadLetter",
    "Headers",
    "REASON_HEADER",
    "STAGE_HEADER",
    "original_headers",
]

STAGE_HEADER = "garrison.stage"
REASON_HEADER = "garrison.reason"
ERROR_HEADER = "garrison.error"
LISTENER_HEADER = "garrison.listener"
_MAX_REASON = 4000

DEAD_LETTER_HEADERS = frozenset(
    {
        STAGE_HEADER,
        REASON_HEADER,
        ERROR_HEADER,
        "garrison.topic",
        "garrison.partition",
        "garrison.offset",
        "garrison.timestamp",
        LISTENER_HEADER,
    }
)
"""The headers a dead letter adds (and a re-drive removes)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record and why. ``headers_in`` are the original record's headers."""

    key: bytes | None
    value: bytes | None
    stage: str
    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    timestamp: int
    headers_in: Headers = ()
    listener: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The dead-letter record's headers: the original ones, then garrison's."""
        ours = [
            (STAGE_HEADER, self.stage),
            (REASON_HEADER, self.reason[:_MAX_REASON]),
            (ERROR_HEADER, self.error),
            ("garrison.topic", self.topic),
            ("garrison.partition", str(self.partition)),
            ("garrison.offset", str(self.offset)),
            ("garrison.timestamp", str(self.timestamp)),
        ]
        if self.listener is not None:
            ours.append((LISTENER_HEADER, self.listener))
        return [*self.headers_in, *((k, v.encode()) for k, v in ours)]

    @staticmethod
    def read_headers(headers: Headers) -> dict[str, str]:
        """What a consumed dead letter says about itself: garrison's headers as a dict."""
        return {k: v.decode(errors="replace") for k, v in headers if k in DEAD_LETTER_HEADERS}


def original_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """A consumed dead letter's headers without garrison's: the original record's."""
    return [(k, v) for k, v in headers if k not in DEAD_LETTER_HEADERS]
