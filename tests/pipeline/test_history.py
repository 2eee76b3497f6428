"""History reads, purely: query parameters, which source a read needs, the topic window,
pages, time travel and the change prefix the topic scan filters on."""

from __future__ import annotations

import pytest

from pipeline.history import (
    AsOf,
    HistoryQuery,
    InvalidQuery,
    Window,
    as_of,
    change_prefix,
    entry,
    parse_query,
    plan,
    select,
)
from pipeline.outcome import StateChange

T0 = 1_700_000_000_000


def _change(seq: int, *, time_ms: int | None = None, eid: str | None = None) -> StateChange:
    prev = None if seq == 1 else {"n": seq - 1}
    return StateChange(
        "acme",
        "counter",
        "c1",
        seq,
        1,
        eid or f"e{seq}",
        "counter.added",
        T0 + seq * 1000 if time_ms is None else time_ms,
        prev,
        {"n": seq},
    )


LIFE = [_change(s) for s in range(1, 101)]
STORED = LIFE[-10:]  # the worker keeps the last 10


def test_parameters_parse_and_bad_ones_say_what_to_fix() -> None:
    assert parse_query({}) == HistoryQuery()
    q = parse_query({"from_seq": "5", "to_seq": "9", "since": "2023-11-14T22:13:20Z"})
    assert q == HistoryQuery(5, 9, T0, None, 100, False)
    assert parse_query({"until": str(T0), "diff": "true"}) == HistoryQuery(until_ms=T0, diff=True)
    assert parse_query({"as_of_seq": "7"}) == AsOf(seq=7)
    assert parse_query({"as_of": str(T0)}) == AsOf(time_ms=T0)
    for params, text in (
        ({"from_seq": "0"}, "from_seq must be a whole number of at least 1"),
        ({"from_seq": "x"}, "from_seq must be a whole number"),
        ({"limit": "1001"}, "limit must be a whole number from 1 to 1000"),
        ({"to_seq": "2", "from_seq": "3"}, "to_seq 2 is below from_seq 3"),
        ({"since": "yesterday"}, "since must be RFC 3339"),
        ({"since": str(T0), "until": str(T0 - 1)}, "until is before since"),
        ({"as_of_seq": "3", "limit": "2"}, "time travel takes one of"),
        ({"as_of_seq": "3", "as_of": "1"}, "time travel takes one of"),
        ({"form_seq": "3"}, r"unknown parameter\(s\) form_seq; known: as_of, as_of_seq"),
        ({"diff": "maybe"}, "diff must be true or false"),
    ):
        with pytest.raises(InvalidQuery, match=text):
            parse_query(params)


def test_a_read_needs_the_topic_only_below_the_stored_changes() -> None:
    assert plan(HistoryQuery(from_seq=91), STORED, 0) == (False, None)
    assert plan(HistoryQuery(from_seq=90), STORED, 0) == (True, None)
    assert plan(HistoryQuery(since_ms=T0 + 5000), STORED, 60_000) == (True, T0 - 55_000)
    assert plan(HistoryQuery(), LIFE[:7], 0) == (False, None)  # the whole life is stored
    assert plan(HistoryQuery(from_seq=3), [], 0) == (True, None)  # nothing stored (keep 0)
    assert plan(AsOf(seq=95), STORED, 0) == (False, None)
    assert plan(AsOf(seq=50), STORED, 0) == (True, None)
    assert plan(AsOf(time_ms=T0 + 50_000), STORED, 1000) == (True, T0 + 49_000)


def test_the_window_keeps_what_the_read_wants_and_stops_at_the_store() -> None:
    q = HistoryQuery(from_seq=20, to_seq=29)
    window = Window(STORED, q.wants, q.limit + 1)
    stopped_at = None
    for change in LIFE:
        if window.feed(change):
            stopped_at = change.seq
            break
    assert stopped_at == 91
    assert [c.seq for c in window.changes] == list(range(20, 30))


def test_a_new_life_of_the_address_drops_the_earlier_one() -> None:
    old = [_change(s, eid=f"old{s}") for s in range(1, 120)]  # longer than the new one
    window = Window(STORED, lambda c: True, 1000)
    fed = [c for c in [*old, *LIFE] if not window.feed(c)]
    assert len(fed) == len(old) + 90  # an old life's seq 91 is not the stored seq 91
    assert [c.event_id for c in window.changes] == [f"e{s}" for s in range(1, 91)]


def test_pages_join_topic_and_store_in_seq_order() -> None:
    older = LIFE[:90]
    page, following = select(older, STORED, HistoryQuery(from_seq=85, limit=10))
    assert [c.seq for c in page] == list(range(85, 95))
    assert following == 95
    page, following = select(older, STORED, HistoryQuery(from_seq=95, limit=10))
    assert ([c.seq for c in page], following) == (list(range(95, 101)), None)
    by_time = HistoryQuery(since_ms=T0 + 40_000, until_ms=T0 + 60_000)
    page, _ = select(older, STORED, by_time)
    assert [c.seq for c in page] == list(range(40, 61))
    # A topic change at or above the stored ones is never taken over the store's.
    stray = _change(95, eid="stray")
    page, _ = select([*older, stray], STORED, HistoryQuery(from_seq=94, limit=3))
    assert [c.event_id for c in page] == ["e94", "e95", "e96"]


def test_time_travel_by_seq_and_by_time() -> None:
    current = (100, {"n": 100})
    assert as_of(AsOf(seq=100), [], STORED, current) == current
    assert as_of(AsOf(seq=95), [], STORED, current) == (95, {"n": 95})
    assert as_of(AsOf(seq=40), LIFE[39:40], STORED, current) == (40, {"n": 40})
    assert as_of(AsOf(seq=40), [], STORED, current) is None  # not kept anywhere
    # At a time: the state before the first change dated after it.
    assert as_of(AsOf(time_ms=T0 + 40_500), LIFE[40:90], STORED, current) == (40, {"n": 40})
    assert as_of(AsOf(time_ms=T0 + 40_000), LIFE[40:90], STORED, current) == (40, {"n": 40})
    assert as_of(AsOf(time_ms=T0 + 500), LIFE[:90], STORED, current) is None  # not born
    assert as_of(AsOf(time_ms=T0 + 10**9), [], STORED, current) == current


def test_the_prefix_is_how_a_change_is_published() -> None:
    for change in (_change(1), LIFE[-1]._replace(instance="i:1.a_b-c")):
        prefix = change_prefix(change.tenant, change.machine, change.instance)
        assert change.to_json().startswith(prefix)
    other = _change(1)._replace(instance="c10")
    assert not other.to_json().startswith(change_prefix("acme", "counter", "c1"))


def test_an_entry_carries_both_states_and_optionally_their_patch() -> None:
    e = entry(_change(2), diff=True)
    assert (e["prev"], e["state"], e["time"]) == ({"n": 1}, {"n": 2}, "2023-11-14T22:13:22.000Z")
    assert e["diff"] == [{"op": "replace", "path": "/n", "value": 2}]
    assert "diff" not in entry(_change(2))
