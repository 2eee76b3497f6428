"""Dead letters read back, chosen, fixed and re-driven: the pure part of ``garrison dlq``.

A consumed dead letter (:mod:`pipeline.deadletter` wrote it) becomes a :class:`Letter`:
where it is in the dead-letter topic, what failed (stage, reason, exception type, time,
source topic, partition and offset) and, read from its value as far as it is JSON, whose
event it was. A :class:`LetterFilter` chooses letters (stage, reason text, tenant,
machine, instance, listener, time range). :func:`redrive_record` builds what goes back:

- an **event** dead letter goes back to ``<app>.events`` as it was (its key, value bytes
  and original headers) or fixed (a JSON patch or a function applied to its decoded
  value); it keeps its CloudEvents id, so an instance that applied it already skips it
  (a fix may not change the id, nor the address's tenant without its key following);
- a **listener** dead letter (stage ``listener``) goes to ``<app>.listener-redrive``,
  which the listener runner also consumes and hands to the named listener only, with
  :data:`REDRIVE_ID` derived from the letter's place in the dead-letter topic, so the
  runner and ``garrison dlq redrive`` can tell a repeat.

Each gets audit headers: :data:`REDRIVEN_AT` (RFC 3339), :data:`REDRIVEN_BY`,
:data:`REDRIVEN_FROM` (``<dlq topic>/<partition>/<offset>``) and, when fixed,
:data:`REDRIVEN_FIX`. They replace those of an earlier re-drive, and survive a new dead
letter (``original_headers`` strips only the dead letter's own headers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jsonpatch
import jsonpointer
import orjson

from pipeline.deadletter import (
    LISTENER_HEADER,
    REASON_HEADER,
    STAGE_HEADER,
    DeadLetter,
    Headers,
    original_headers,
)
from pipeline.envelope import format_time
from pipeline.errors import GarrisonError
from pipeline.ids import redrive_id
from pipeline.settings import Topics

__all__ = [
    "REDRIVEN_AT",
    "REDRIVEN_BY",
    "REDRIVEN_FIX",
    "REDRIVEN_FROM",
    "REDRIVE_ID",
    "Fix",
    "InvalidFix",
    "Letter",
    "LetterFilter",
    "ListenerRedrive",
    "Redrive",
    "listener_redrive",
    "parse_patch",
    "redrive_record",
    "redriven_ids",
]

REDRIVEN_AT = "garrison.redriven-at"
REDRIVEN_BY = "garrison.redriven-by"
REDRIVEN_FROM = "garrison.redriven-from"
REDRIVEN_FIX = "garrison.redriven-fix"
REDRIVE_ID = "garrison.redrive-id"
_REDRIVE_HEADERS = frozenset({REDRIVEN_AT, REDRIVEN_BY, REDRIVEN_FROM, REDRIVEN_FIX, REDRIVE_ID})

Fix = Callable[[Any], Any]
"""A fix: the decoded value (a dict) in, the fixed one out."""


class InvalidFix(GarrisonError, ValueError):
    """A fix cannot be applied to a dead letter; the message says why and what to do."""


class _Consumed(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter as read back: its place in the dead-letter topic, the original
    record (``key``, ``value``, all ``headers``), what failed, and whose event it was."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    stage: str
    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: int
    listener: str | None
    tenant: str | None
    machine: str | None
    instance: str | None
    event_id: str | None
    event_type: str | None

    @classmethod
    def read(cls, rec: Any) -> Letter:
        """A consumed record of the dead-letter topic (aiokafka's ConsumerRecord)."""
        headers = tuple((k, bytes(v)) for k, v in (rec.headers or ()))
        ours = DeadLetter.read_headers(headers)

        def number(name: str) -> int:
            raw = ours.get(name, "")
            return int(raw) if raw.lstrip("-").isdigit() else -1

        body = _json(rec.value)
        obj = body if isinstance(body, dict) else {}
        stage = ours.get(STAGE_HEADER, "")

        def text(name: str) -> str | None:
            value = obj.get(name)
            return value if isinstance(value, str) else None

        return cls(
            rec.topic,
            rec.partition,
            rec.offset,
            rec.timestamp,
            rec.key,
            rec.value,
            headers,
            stage,
            ours.get(REASON_HEADER, ""),
            ours.get("garrison.error", ""),
            ours.get("garrison.topic", ""),
            number("garrison.partition"),
            number("garrison.offset"),
            number("garrison.timestamp"),
            ours.get(LISTENER_HEADER),
            text("tenant") or (rec.key.decode(errors="replace") if rec.key else None),
            text("machine"),
            text("instance"),
            text("event_id" if stage == "listener" else "id"),
            text("event_type" if stage == "listener" else "type"),
        )

    @property
    def where(self) -> str:
        """``<dlq topic>/<partition>/<offset>``: the letter's own address."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def kind(self) -> str:
        """``listener`` (goes back to the listeners) or ``event`` (to the events topic)."""
        return "listener" if self.stage == "listener" else "event"

    def summary(self) -> dict[str, Any]:
        """What ``garrison dlq list`` prints of it (JSON-ready)."""
        return {
            "at": f"{self.partition}:{self.offset}",
            "dead_lettered": format_time(self.timestamp),
            "kind": self.kind,
            "stage": self.stage,
            "error": self.error,
            "reason": self.reason,
            "listener": self.listener,
            "tenant": self.tenant,
            "machine": self.machine,
            "instance": self.instance,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": f"{self.source_topic}/{self.source_partition}/{self.source_offset}",
            "redriven_from": _header(self.headers, REDRIVEN_FROM),
        }

    def details(self) -> dict[str, Any]:
        """What ``garrison dlq show`` prints: the summary, the original headers and
        value (decoded JSON where it is, else text)."""
        body = _json(self.value)
        return {
            **self.summary(),
            "key": None if self.key is None else self.key.decode(errors="replace"),
            "headers": {k: v.decode(errors="replace") for k, v in original_headers(self.headers)},
            "value": body
            if body is not _NOT_JSON
            else (None if self.value is None else self.value.decode(errors="replace")),
        }


_NOT_JSON: Any = object()


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return _NOT_JSON
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace")
    return None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters to take; every given condition must hold. ``reason`` is a
    case-insensitive substring; ``since_ms``/``until_ms`` bound when it was
    dead-lettered; ``at`` names letters by ``(partition, offset)``."""

    stages: frozenset[str] = frozenset()
    reason: str | None = None
    tenant: str | None = None
    machine: str | None = None
    instance: str | None = None
    listener: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    at: frozenset[tuple[int, int]] = frozenset()

    def matches(self, letter: Letter) -> bool:
        """Whether ``letter`` is chosen."""
        if self.at and (letter.partition, letter.offset) not in self.at:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        for want, have in (
            (self.tenant, letter.tenant),
            (self.machine, letter.machine),
            (self.instance, letter.instance),
            (self.listener, letter.listener),
        ):
            if want is not None and want != have:
                return False
        if self.since_ms is not None and letter.timestamp < self.since_ms:
            return False
        return self.until_ms is None or letter.timestamp <= self.until_ms


def parse_patch(text: str) -> Fix:
    """A fix from an RFC 6902 JSON patch (a JSON array of operations); raises
    :class:`InvalidFix` if it is not one.

    >>> parse_patch('[{"op": "replace", "path": "/data/amount", "value": 3}]')(
    ...     {"data": {"amount": 5000}})
    {'data': {'amount': 3}}
    """
    try:
        ops = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidFix(f"the patch is not JSON: {exc}") from None
    if not isinstance(ops, list):
        raise InvalidFix('a JSON patch is an array: [{"op": "replace", "path": ..., "value": ...}]')
    try:
        patch = jsonpatch.JsonPatch(ops)  # checks every operation now, not per letter
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
        raise InvalidFix(f"the patch is not an RFC 6902 patch: {exc}") from None

    def fix(value: Any) -> Any:
        try:
            return patch.apply(value)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise InvalidFix(f"the patch does not apply: {exc}") from None

    return fix


class Redrive(NamedTuple):
    """A record to produce for a re-drive."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class ListenerRedrive(NamedTuple):
    """What the listener runner reads off a re-driven listener letter."""

    listener: str
    redrive_id: str


def listener_redrive(headers: Headers) -> ListenerRedrive | None:
    """The listener and re-drive id of a record of ``<app>.listener-redrive``; None if
    it does not name both."""
    name, rid = _header(headers, LISTENER_HEADER), _header(headers, REDRIVE_ID)
    return None if name is None or rid is None else ListenerRedrive(name, rid)


def _fixed(letter: Letter, fix: Fix) -> tuple[bytes, Any]:
    body = _json(letter.value)
    if not isinstance(body, dict):
        raise InvalidFix(
            f"{letter.where}: its value is not a JSON object, so a fix cannot read it; "
            "re-drive it as it was, or send a corrected event"
        )
    try:
        fixed = fix(orjson.loads(letter.value or b"{}"))  # a copy the fix may change
    except InvalidFix as exc:
        raise InvalidFix(f"{letter.where}: {exc}") from None
    if not isinstance(fixed, dict):
        raise InvalidFix(f"{letter.where}: the fix returned {type(fixed).__name__}, not a dict")
    idname = "event_id" if letter.kind == "listener" else "id"
    if fixed.get(idname) != body.get(idname):
        raise InvalidFix(
            f"{letter.where}: the fix changes {idname!r}; keep it, it is what makes re-driving "
            "idempotent (send a new event instead)"
        )
    try:
        return orjson.dumps(fixed), fixed
    except TypeError as exc:
        raise InvalidFix(f"{letter.where}: the fixed value is not JSON: {exc}") from None


def redrive_record(
    letter: Letter,
    topics: Topics,
    *,
    when_ms: int,
    by: str,
    fix: Fix | None = None,
    fix_label: str = "",
) -> Redrive:
    """What goes back for ``letter``: to the events topic, or for a listener letter to
    the listener re-drive topic; as it was, or fixed by ``fix`` (named ``fix_label``
    in the audit header). Raises :class:`InvalidFix` when the fix cannot apply."""
    key, value = letter.key, letter.value
    if fix is not None:
        value, fixed = _fixed(letter, fix)
        tenant = fixed.get("tenant")
        if letter.kind == "event" and isinstance(tenant, str) and tenant != letter.tenant:
            key = tenant.encode()  # the tenant is the key: its partition must follow
    headers = [(k, v) for k, v in original_headers(letter.headers) if k not in _REDRIVE_HEADERS]
    audit = [
        (REDRIVEN_AT, format_time(when_ms)),
        (REDRIVEN_BY, by),
        (REDRIVEN_FROM, letter.where),
    ]
    if fix is not None:
        audit.append((REDRIVEN_FIX, fix_label or "fix"))
    topic = topics.events
    if letter.kind == "listener":
        if not letter.listener:
            raise InvalidFix(f"{letter.where}: a listener dead letter that names no listener")
        topic = topics.listener_redrive
        audit += [
            (LISTENER_HEADER, letter.listener),
            (REDRIVE_ID, redrive_id(letter.topic, letter.partition, letter.offset)),
        ]
    return Redrive(topic, key, value, [*headers, *((k, v.encode()) for k, v in audit)])


def redriven_ids(records: Iterable[Any]) -> set[str]:
    """The re-drive ids found on records of the listener re-drive topic."""
    out = set()
    for rec in records:
        found = _header(rec.headers or (), REDRIVE_ID)
        if found is not None:
            out.add(found)
    return out
