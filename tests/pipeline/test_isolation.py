"""What one instance does never reaches another, its own ``prev``, or its stored record;
its clock never runs backwards; and an ended instance's sequence never repeats.

Each test here failed on the core before these rules (issue: trust at the edges).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline import Machine, Next, Registry, SetTimer, step
from pipeline.ids import timer_event_id
from pipeline.step import PURGE_TIMER, TTL_TIMER
from tests.samples import event, refused

DAY = 24 * 3600 * 1000


class Chat(BaseModel):
    """casern's chatbot state, with an Any-typed bag the reducer changes in place."""

    status: str = "inquired"
    notes: Any = []


def _chat() -> Machine[Chat]:
    m: Machine[Chat] = Machine("chat", state=Chat, ttl=timedelta(days=30))

    @m.on("note")
    def note(config: Any, state: Chat, event: Any) -> Chat:
        state.notes.append(event.id)  # in place, as casern's reducers do
        return state

    @m.on("check")
    def check(config: Any, state: Chat, event: Any) -> Chat:
        state.status = "timeout"  # casern's checkTimeout: mutate, return the same object
        return state

    @m.on("boom")
    def boom(config: Any, state: Chat, event: Any) -> Chat:
        state.notes.append("half-done")
        raise RuntimeError("fails after changing its state")

    @m.on("close")
    def close(config: Any, state: Chat, event: Any) -> None:
        return None

    @m.on("remind")
    def remind(config: Any, state: Chat, event: Any) -> Next:
        return Next(state, SetTimer("r", "check", after=timedelta(hours=1)))

    return m


def _bag() -> Machine[dict[str, Any]]:
    m: Machine[dict[str, Any]] = Machine("bag", initial={"items": []})

    @m.on("put")
    def put(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
        state["items"].append(event.id)
        return state

    return m


REG = Registry([_chat(), _bag()])


def test_new_instances_of_any_tenant_never_share_an_initial_state() -> None:
    first = step(REG, None, event("note", {}, machine="chat", tenant="a", id="n1"))
    other = step(REG, None, event("note", {}, machine="chat", tenant="b", id="n2"))
    assert first.record is not None
    assert other.record is not None
    assert first.record.state["notes"] == ["n1"]
    assert other.record.state["notes"] == ["n2"]
    bag = step(REG, None, event("put", {}, machine="bag", id="p1"))
    bag2 = step(REG, None, event("put", {}, machine="bag", instance="c2", id="p2"))
    assert (bag.record and bag.record.state, bag2.record and bag2.record.state) == (
        {"items": ["p1"]},
        {"items": ["p2"]},
    )


def test_prev_is_the_state_before_even_when_the_reducer_mutates_in_place() -> None:
    rec = step(REG, None, event("note", {}, machine="chat", id="n1")).record
    assert rec is not None
    out = step(REG, rec, event("check", {}, machine="chat", id="c1"))
    assert out.change is not None
    assert (out.change.prev["status"], out.change.state["status"]) == ("inquired", "timeout")
    assert rec.state["status"] == "inquired"  # the stored record is untouched
    bag = step(REG, None, event("put", {}, machine="bag", id="p1")).record
    assert bag is not None
    more = step(REG, bag, event("put", {}, machine="bag", id="p2"))
    assert more.change is not None
    assert (more.change.prev, more.change.state) == ({"items": ["p1"]}, {"items": ["p1", "p2"]})


def test_a_reducer_that_mutates_then_raises_leaves_the_record_as_it_was() -> None:
    rec = step(REG, None, event("note", {}, machine="chat", id="n1")).record
    assert rec is not None
    before = rec.state
    refused(step(REG, rec, event("boom", {}, machine="chat", id="b1")))
    assert rec.state == before == {"status": "inquired", "notes": ["n1"]}
    after = step(REG, rec, event("note", {}, machine="chat", id="n2"))
    assert after.record is not None
    assert after.record.state["notes"] == ["n1", "n2"]


def test_a_back_dated_event_never_moves_the_clock_or_the_expiry_back() -> None:
    t0 = 1_700_000_000_000
    rec = step(REG, None, event("note", {}, machine="chat", id="n1", time_ms=t0)).record
    assert rec is not None
    assert rec.expires_ms == t0 + 30 * DAY
    old = step(REG, rec, event("remind", {}, machine="chat", id="old", time_ms=t0 - 40 * DAY))
    assert old.record is not None
    assert old.record.updated_ms == t0
    assert old.record.expires_ms == t0 + 30 * DAY  # not 10 days before t0
    assert old.record.timers["r"].due_ms == t0 + 3600 * 1000  # from the clock, not the event


@given(st.lists(st.integers(-50 * DAY, 50 * DAY), min_size=1, max_size=20))
def test_an_instances_clock_is_monotonic(offsets: list[int]) -> None:
    rec = None
    last = None
    for i, offset in enumerate(offsets):
        out = step(REG, rec, event("note", {}, machine="chat", id=f"n{i}", time_ms=10**12 + offset))
        assert out.record is not None
        if last is not None:
            assert out.record.updated_ms >= last
            assert out.record.expires_ms is not None
            assert out.record.expires_ms >= last + 30 * DAY
        last, rec = out.record.updated_ms, out.record


def test_after_expiry_the_sequence_goes_on_and_duplicates_are_still_known() -> None:
    t0 = 1_700_000_000_000
    rec = step(REG, None, event("note", {}, machine="chat", id="n1", time_ms=t0)).record
    assert rec is not None
    due = rec.timers[TTL_TIMER].due_ms
    gone = step(
        REG,
        rec,
        event(
            "x", {}, machine="chat", id=timer_event_id(TTL_TIMER, due), time_ms=due, timer=TTL_TIMER
        ),
    )
    assert gone.status == "expired"
    assert gone.record is not None
    assert gone.change is not None
    assert (gone.record.state, gone.change.seq) == (None, 2)
    assert step(REG, gone.record, event("note", {}, machine="chat", id="n1")).status == "duplicate"
    back = step(REG, gone.record, event("note", {}, machine="chat", id="n9", time_ms=due + 5))
    assert back.change is not None
    assert back.record is not None
    assert (back.change.seq, back.change.prev, back.record.state["notes"]) == (3, None, ["n9"])
    assert PURGE_TIMER not in back.record.timers
    assert {w.name for w in back.timers} == {PURGE_TIMER, TTL_TIMER}


def test_a_reducer_returning_none_ends_the_instance_then_the_tombstone_is_purged() -> None:
    rec = step(REG, None, event("remind", {}, machine="chat", id="r1")).record
    assert rec is not None
    closed = step(REG, rec, event("close", {}, machine="chat", id="c1"))
    assert closed.status == "applied"
    assert closed.change is not None
    assert closed.record is not None
    assert (closed.change.state, closed.change.seq, closed.record.state) == (None, 2, None)
    assert set(closed.record.timers) == {PURGE_TIMER}  # its own timers are all gone
    assert {(w.name, w.timer is None) for w in closed.timers} == {
        ("r", True),
        (TTL_TIMER, True),
        (PURGE_TIMER, False),
    }
    due = closed.record.timers[PURGE_TIMER].due_ms
    purge = event(
        "x", id=timer_event_id(PURGE_TIMER, due), machine="chat", time_ms=due, timer=PURGE_TIMER
    )
    purged = step(REG, closed.record, purge)
    assert (purged.status, purged.record, purged.change) == ("purged", None, None)
    fresh = step(REG, None, event("note", {}, machine="chat", id="n1"))
    assert fresh.change is not None
    assert fresh.change.seq == 1  # only after the purge does an address start over
