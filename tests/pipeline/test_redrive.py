"""Dead letters read back, filtered, fixed and re-driven, purely."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
import pytest

from pipeline import encode_event
from pipeline.deadletter import DeadLetter
from pipeline.outcome import StateChange
from pipeline.redrive import (
    REDRIVE_ID,
    REDRIVEN_FROM,
    InvalidFix,
    Letter,
    LetterFilter,
    listener_redrive,
    parse_patch,
    redrive_record,
)
from pipeline.settings import Topics
from tests.samples import event

TOPICS = Topics.of("shop")
NOW = 1_767_225_600_000


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _letter(letter: DeadLetter, offset: int = 7, timestamp: int = NOW) -> Letter:
    return Letter.read(
        Rec("shop.dlq", 1, offset, timestamp, letter.key, letter.value, letter.headers())
    )


BIG = event(data={"amount": 5000}, id="big", instance="c1")
CONTRACT = DeadLetter(
    b"acme",
    encode_event(BIG),
    "contract",
    "payload does not fit Added: amount: Input should be less than or equal to 1000",
    "ContractViolation",
    "shop.events",
    3,
    41,
    NOW - 5000,
    (("traceparent", b"00-abc"), ("garrison.redriven-by", b"old")),
)
CHANGE = StateChange("acme", "counter", "c1", 4, 1, "e9", "counter.added", NOW, {"n": 3}, {"n": 4})
LISTENER = DeadLetter(
    b"acme",
    CHANGE.to_json(),
    "listener",
    "listener 'mail' failed 4 times; last: OSError: down",
    "OSError",
    "shop.state-changes",
    3,
    12,
    NOW - 100,
    (),
    "mail",
)


def test_a_letter_says_what_failed_and_whose_event_it_was() -> None:
    got = _letter(CONTRACT)
    assert (got.stage, got.error, got.kind, got.where) == (
        "contract",
        "ContractViolation",
        "event",
        "shop.dlq/1/7",
    )
    assert (got.source_topic, got.source_partition, got.source_offset) == ("shop.events", 3, 41)
    assert (got.tenant, got.machine, got.instance, got.event_id) == ("acme", "counter", "c1", "big")
    shown = got.details()
    assert shown["headers"] == {"traceparent": "00-abc", "garrison.redriven-by": "old"}
    assert shown["value"]["data"] == {"amount": 5000}
    lst = _letter(LISTENER)
    assert (lst.kind, lst.listener, lst.event_id, lst.event_type) == (
        "listener",
        "mail",
        "e9",
        "counter.added",
    )
    raw = _letter(
        DeadLetter(None, b"\xff{", "decode", "value is not JSON", "InvalidEvent", "t", 0, 1, 2)
    )
    assert (raw.tenant, raw.event_id, raw.details()["value"]) == (None, None, "\ufffd{")


def test_filters_choose_by_stage_reason_address_listener_time_and_place() -> None:
    c, lst = _letter(CONTRACT), _letter(LISTENER, offset=8, timestamp=NOW + 10)
    assert LetterFilter().matches(c)
    assert LetterFilter(stages=frozenset({"contract"})).matches(c)
    assert not LetterFilter(stages=frozenset({"listener"})).matches(c)
    assert LetterFilter(reason="LESS THAN").matches(c)
    assert not LetterFilter(reason="timeout").matches(c)
    assert LetterFilter(tenant="acme", machine="counter", instance="c1").matches(lst)
    assert not LetterFilter(machine="pinger").matches(c)
    assert LetterFilter(listener="mail").matches(lst)
    assert not LetterFilter(listener="mail").matches(c)
    assert not LetterFilter(since_ms=NOW + 1).matches(c)
    assert LetterFilter(since_ms=NOW + 1, until_ms=NOW + 10).matches(lst)
    assert LetterFilter(at=frozenset({(1, 8)})).matches(lst)
    assert not LetterFilter(at=frozenset({(1, 8)})).matches(c)


def test_an_event_goes_back_as_it_was_with_who_and_when() -> None:
    out = redrive_record(_letter(CONTRACT), TOPICS, when_ms=NOW, by="ann@ops")
    assert (out.topic, out.key, out.value) == ("shop.events", b"acme", CONTRACT.value)
    headers = dict(out.headers)
    assert headers["traceparent"] == b"00-abc"
    assert (headers["garrison.redriven-by"], headers["garrison.redriven-at"]) == (
        b"ann@ops",
        b"2026-01-01T00:00:00.000Z",
    )
    assert headers[REDRIVEN_FROM] == b"shop.dlq/1/7"
    assert not any(k in headers for k in ("garrison.stage", "garrison.reason", "garrison.offset"))
    assert [k for k, _ in out.headers].count("garrison.redriven-by") == 1  # the old one replaced


def test_a_fix_by_patch_or_function_keeps_the_id() -> None:
    patch = parse_patch('[{"op": "replace", "path": "/data/amount", "value": 500}]')
    out = redrive_record(
        _letter(CONTRACT), TOPICS, when_ms=NOW, by="x", fix=patch, fix_label="patch"
    )
    fixed = orjson.loads(out.value or b"")
    assert (fixed["data"], fixed["id"], dict(out.headers)["garrison.redriven-fix"]) == (
        {"amount": 500},
        "big",
        b"patch",
    )

    def move(ev: dict[str, Any]) -> dict[str, Any]:
        return {**ev, "tenant": "beta"}

    out = redrive_record(_letter(CONTRACT), TOPICS, when_ms=NOW, by="x", fix=move)
    assert out.key == b"beta"  # the key follows the tenant
    for bad, text in (
        (lambda ev: {**ev, "id": "new"}, "the fix changes 'id'"),
        (lambda ev: None, "the fix returned NoneType"),
        (parse_patch('[{"op": "remove", "path": "/nope"}]'), "the patch does not apply"),
    ):
        with pytest.raises(InvalidFix, match=text):
            redrive_record(_letter(CONTRACT), TOPICS, when_ms=NOW, by="x", fix=bad)
    for text, why in (
        ("{", "the patch is not JSON"),
        ('{"op": "add"}', "a JSON patch is an array"),
        ('[{"op": "bogus", "path": "/a"}]', "not an RFC 6902 patch"),
    ):
        with pytest.raises(InvalidFix, match=why):
            parse_patch(text)


def test_a_listener_letter_goes_to_its_listener_with_an_id_that_repeats() -> None:
    letter = _letter(LISTENER)
    first = redrive_record(letter, TOPICS, when_ms=NOW, by="x")
    again = redrive_record(letter, TOPICS, when_ms=NOW + 60_000, by="y")
    assert (first.topic, first.value) == ("shop.listener-redrive", CHANGE.to_json())
    found = listener_redrive(first.headers)
    assert found is not None
    assert found.listener == "mail"
    assert found.redrive_id == "redrive:shop.dlq/1/7"
    assert dict(again.headers)[REDRIVE_ID] == dict(first.headers)[REDRIVE_ID]
    assert listener_redrive([("garrison.listener", b"mail")]) is None
    nameless = DeadLetter(b"a", b"{}", "listener", "not a state change", "E", "t", 0, 0, 0)
    with pytest.raises(InvalidFix, match="names no listener"):
        redrive_record(_letter(nameless), TOPICS, when_ms=NOW, by="x")
