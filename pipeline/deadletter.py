"""Dead letters: what could not be applied, kept whole with the reason.

A dead-letter record keeps the original key and value bytes untouched (so it can be
fixed and replayed as is) and says what happened in headers, as Kafka Connect does:
``garrison.stage`` (decode, route, contract, reducer, state, listener), ``garrison.reason``,
and where it came from (``garrison.topic``, ``garrison.partition``, ``garrison.offset``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.envelope import Headers

__all__ = ["DeadLetter", "Headers", "STAGE_HEADER", "REASON_HEADER"]

STAGE_HEADER = "garrison.stage"
REASON_HEADER = "garrison.reason"
_MAX_REASON = 4000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record and why."""

    key: bytes | None
    value: bytes | None
    stage: str
    reason: str
    topic: str
    partition: int
    offset: int
    extra: tuple[tuple[str, str], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers describing the rejection."""
        pairs = [
            (STAGE_HEADER, self.stage),
            (REASON_HEADER, self.reason[:_MAX_REASON]),
            ("garrison.topic", self.topic),
            ("garrison.partition", str(self.partition)),
            ("garrison.offset", str(self.offset)),
            *self.extra,
        ]
        return [(k, v.encode()) for k, v in pairs]

    @staticmethod
    def read_headers(headers: Headers) -> dict[str, str]:
        """Headers of a consumed dead letter as a dict."""
        return {k: v.decode() for k, v in headers if k.startswith("garrison.")}
