"""Decoding events at the edge: every malformed input gets an error that says what to fix."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import Event, InvalidAddress, InvalidEvent, check_id, decode_event, encode_event

GOOD = {
    "specversion": "1.0",
    "id": "e1",
    "source": "s",
    "type": "t",
    "tenant": "acme",
    "machine": "m",
    "instance": "i-1",
    "data": {"x": 1},
}


def _raw(**changes: object) -> bytes:
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a CloudEvent object"),
        (None, "tombstone"),
        (_raw(specversion="0.3"), "specversion is '0.3'"),
        (_raw(id=...), "missing CloudEvents attribute(s): id"),
        (_raw(tenant=..., instance=...), "tenant, instance"),
        (_raw(type=""), "'type' must be a non-empty string"),
        (_raw(tenant="a/b"), "tenant id 'a/b' contains '/'"),
        (_raw(instance="x" * 200), "200 characters long"),
        (_raw(tenant=["a"]), "tenant id must be a string, got list"),
        (_raw(machine={"m": 1}), "machine id must be a string, got dict"),
        (_raw(time="yesterday"), "not RFC 3339"),
        (_raw(time="2026-01-01T00:00:00"), "no UTC offset"),
    ],
)
def test_bad_events_say_what_is_wrong(raw: bytes | None, text: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, fallback_time_ms=0)
    assert text in str(info.value)
    assert info.value.stage == "decode"


def test_time_falls_back_to_the_record_timestamp() -> None:
    assert decode_event(_raw(), fallback_time_ms=1234).time_ms == 1234
    assert decode_event(_raw(time="1970-01-01T00:00:01.5Z"), fallback_time_ms=0).time_ms == 1500


_ids = st.text(st.sampled_from("abcXYZ019._:-"), min_size=1, max_size=20)


@given(
    _ids,
    _ids,
    _ids,
    st.integers(0, 4_000_000_000_000),
    st.recursive(
        st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(), lambda c: st.lists(c, max_size=3)
    ),
)
def test_encode_decode_round_trip(
    tenant: str, machine: str, instance: str, t: int, data: object
) -> None:
    ev = Event("id-1", "x.happened", "src", tenant, machine, instance, t, data, "p", "tm")
    assert decode_event(encode_event(ev), fallback_time_ms=0) == ev


def test_check_id_messages() -> None:
    assert check_id("tenant", "a.b_c:d-1") == "a.b_c:d-1"
    with pytest.raises(InvalidAddress, match="allowed: letters, digits"):
        check_id("tenant", "a b")
    with pytest.raises(InvalidAddress, match="is empty"):
        check_id("instance", "")
    with pytest.raises(InvalidAddress, match="must be a string"):
        check_id("instance", 5)


def test_unencodable_data_is_a_typed_error() -> None:
    ev = Event("i", "t", "s", "a", "m", "x", 0, {"n": 2**70})
    with pytest.raises(InvalidEvent, match="cannot be sent as JSON"):
        encode_event(ev)


@given(
    st.lists(st.integers(-2_000_000_000_000, 4_000_000_000_000), min_size=1, max_size=20), st.data()
)
def test_parse_time_fast_path_agrees_with_the_full_parse(
    times: list[int], data: st.DataObject
) -> None:
    # parse_time remembers the last second it parsed; times in that second take a fast
    # path. Neighbours in the same second, other seconds and other forms must all agree.
    from datetime import UTC, datetime

    from pipeline.envelope import format_time, parse_time

    for t in times:
        for ms in (t, t - t % 1000 + data.draw(st.integers(0, 999))):
            text = format_time(ms)
            assert parse_time(text) == ms
            slow = round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
            assert slow == ms
    assert parse_time("2026-01-31T12:00:00.5+01:00") == 1_769_857_200_500
    with pytest.raises(InvalidEvent):
        parse_time(format_time(times[0])[:20] + "1x2Z")
