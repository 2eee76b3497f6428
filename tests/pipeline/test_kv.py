"""Key-value scopes as a machine kind, through ``step`` and ``apply_record``: set, update,
delete, TTL, the dead letters of bad writes, and delivery twice as a property."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Registry, Scope, StateChange, fold, step
from pipeline.address import Address
from pipeline.deadletter import DeadLetter
from pipeline.decision import Rules, apply_record
from pipeline.envelope import Event
from pipeline.errors import (
    ContractViolation,
    InvalidAddress,
    InvalidDefinition,
    InvalidOperation,
    InvalidState,
    UnknownEventType,
)
from pipeline.kv import (
    EXPIRE_TIMER,
    MAX_SCOPE_LENGTH,
    check_key,
    check_scope,
    scope_of,
    set_data,
    ttl_ms,
    update_data,
)
from pipeline.record import Record
from pipeline.settings import Topics
from pipeline.step import timer_firing
from tests.samples import consumed, refused

REG = Registry([Scope("users"), Scope("cache", ttl=timedelta(seconds=30))])
T0 = 1_700_000_000_000


def kv(type: str, data: Any = None, *, id: str = "e1", key: str = "u1", scope: str = "users",
       time_ms: int = T0) -> Event:  # fmt: skip
    return Event(id, type, "tests", "acme", f"kv.{scope}", key, time_ms, data)


def apply(record: Record | None, event: Event) -> Record | None:
    out = step(REG, record, event)
    assert out.status in ("applied", "expired"), out.reason
    return out.record


def test_set_update_delete_keep_one_sequence() -> None:
    rec = apply(None, kv("kv.set", {"value": {"name": "ann"}}))
    assert rec is not None
    assert (rec.state, rec.seq) == ({"value": {"name": "ann"}}, 1)
    ops = [{"op": "increment", "path": "logins"}, {"op": "append", "path": "tags", "value": "x"}]
    rec = apply(rec, kv("kv.update", {"ops": ops}, id="e2"))
    assert rec is not None
    assert rec.state == {"value": {"name": "ann", "logins": 1, "tags": ["x"]}}
    out = step(REG, rec, kv("kv.delete", id="e3"))
    assert out.change is not None
    assert (out.change.prev, out.change.state, out.change.seq) == (rec.state, None, 3)
    assert out.record is not None
    assert (out.record.state, out.record.seq) == (None, 3)  # a tombstone keeps the seq
    again = step(REG, out.record, kv("kv.set", {"value": 1}, id="e4"))
    assert again.change is not None
    assert (again.change.seq, again.change.prev, again.change.state) == (4, None, {"value": 1})


def test_any_json_is_a_value_null_included() -> None:
    for value in (None, 0, "text", [1, 2], {"a": None}):
        rec = apply(None, kv("kv.set", {"value": value}))
        assert rec is not None
        assert rec.state == {"value": value}


def test_a_ttl_arms_a_timer_whose_firing_deletes_as_expired() -> None:
    rec = apply(None, kv("kv.set", set_data("v", 5_000)))
    assert rec is not None
    timer = rec.timers[EXPIRE_TIMER]
    assert (timer.due_ms, timer.event_type) == (T0 + 5_000, "kv.expired")
    out = step(REG, rec, timer_firing(kv("x"), EXPIRE_TIMER, timer))
    assert out.change is not None
    assert (out.change.event_type, out.change.prev, out.change.state) == (
        "kv.expired",
        {"value": "v"},
        None,
    )


def test_a_set_without_ttl_clears_it_and_an_update_keeps_it() -> None:
    rec = apply(None, kv("kv.set", set_data("v", 5_000)))
    kept = apply(rec, kv("kv.update", update_data([{"op": "set", "value": 2}]), id="e2"))
    assert kept is not None
    assert EXPIRE_TIMER in kept.timers
    cleared = apply(kept, kv("kv.set", {"value": 3}, id="e3"))
    assert cleared is not None
    assert EXPIRE_TIMER not in cleared.timers
    # Its firing, still in flight, is stale now: the key stays.
    assert rec is not None
    late = step(REG, cleared, timer_firing(kv("x"), EXPIRE_TIMER, rec.timers[EXPIRE_TIMER]))
    assert late.status == "stale"


def test_a_scope_default_ttl_applies_to_new_keys() -> None:
    rec = apply(None, kv("kv.set", {"value": 1}, scope="cache"))
    assert rec is not None
    assert rec.timers[EXPIRE_TIMER].due_ms == T0 + 30_000
    made = apply(None, kv("kv.update", update_data([{"op": "increment"}]), scope="cache"))
    assert made is not None
    assert made.timers[EXPIRE_TIMER].due_ms == T0 + 30_000


def test_only_removals_on_a_missing_key_make_no_key() -> None:
    out = step(REG, None, kv("kv.update", update_data([{"op": "remove", "path": "a"}])))
    assert out.change is not None
    assert (out.change.prev, out.change.state) == (None, None)


@pytest.mark.parametrize(
    ("ev", "kind", "text"),
    [
        (kv("kv.set", {"val": 1}), ContractViolation, "kv.set needs data {'value': ...}"),
        (kv("kv.set", {"value": 1, "ttl": 5}), ContractViolation, "not ttl"),
        (kv("kv.set", {"value": 1, "ttl_ms": -5}), ContractViolation, "ttl_ms must be a positive"),
        (kv("kv.update", [{"op": "set"}]), ContractViolation, "kv.update needs data {'ops'"),
        (kv("kv.update", {"ops": [{"op": "push"}]}), InvalidOperation, "unknown op 'push'"),
        (kv("kv.expired"), ContractViolation, "sent by garrison's TTL timer only"),
        (kv("kv.get"), UnknownEventType, "scope 'users' has no event 'kv.get'"),
    ],
)
def test_bad_writes_are_refused_with_what_to_fix(ev: Event, kind: type, text: str) -> None:
    with pytest.raises(kind) as err:
        raise refused(step(REG, None, ev))
    assert text in str(err.value)


def test_a_failing_operation_leaves_the_stored_value_as_it_was() -> None:
    rec = apply(None, kv("kv.set", {"value": {"age": "ten", "n": 1}}))
    ops = [{"op": "increment", "path": "n"}, {"op": "increment", "path": "age"}]
    with pytest.raises(InvalidOperation, match="'age' is a string"):
        raise refused(step(REG, rec, kv("kv.update", {"ops": ops}, id="e2")))
    assert rec is not None
    assert rec.state == {"value": {"age": "ten", "n": 1}}


def test_a_stored_state_that_is_not_an_entry_is_refused() -> None:
    rec = Record({"count": 1}, 1, 1, T0, T0)
    with pytest.raises(InvalidState, match="not a key-value entry"):
        raise refused(step(REG, rec, kv("kv.set", {"value": 1})))


def test_in_the_pipeline_bad_addresses_and_undeclared_scopes_are_dead_letters() -> None:
    rules = Rules(REG, Topics.of("app"))
    cases = [
        (kv("kv.set", {"value": 1}, key="a/b"), "decode", "instance id 'a/b' contains '/'"),
        (kv("kv.set", {"value": 1}, scope="a b"), "decode", "machine id 'kv.a b' contains ' '"),
        (
            kv("kv.update", {"ops": [{"op": "set", "path": "a.b", "value": 1}]}),
            "operation",
            "the value is a number, not an object",  # the stored value below is 5
        ),
        (kv("kv.set", {"value": 1}, scope="nope"), "route", "no machine named 'kv.nope'"),
        (kv("kv.update", {"ops": [{"op": "x"}]}), "operation", "unknown op 'x'"),
    ]
    stored = Record({"value": 5}, 1, 1, T0, T0, recent=("e0",))
    for ev, stage, text in cases:
        applied = apply_record(
            rules, lambda a: stored if a == ("acme", "kv.users", "u1") else None, consumed(ev)
        )
        assert applied.verdict == "rejected"
        [letter] = applied.outputs
        headers = DeadLetter.read_headers(letter.headers)
        assert headers["garrison.stage"] == stage
        assert text in headers["garrison.reason"]


def test_scope_and_key_names_follow_the_id_rules() -> None:
    assert check_scope("users") == "users"
    assert check_key("user_123") == "user_123"
    assert scope_of("kv.users") == "users"
    assert scope_of("counter") is None
    for bad, text in (("a b", "contains ' '"), ("", "empty"), ("x" * 126, "limit is 125")):
        with pytest.raises(InvalidAddress, match=text):
            check_scope(bad)
    assert MAX_SCOPE_LENGTH == 125
    with pytest.raises(InvalidAddress, match="key id 'a/b' contains '/'"):
        check_key("a/b")
    with pytest.raises(InvalidDefinition, match="scope id 'a/b' contains '/'"):
        Scope("a/b")
    with pytest.raises(InvalidDefinition, match="ttl must be positive"):
        Scope("c", ttl=timedelta(0))
    assert ttl_ms(timedelta(seconds=1.5)) == 1500
    assert ttl_ms(2) == 2000
    with pytest.raises(ContractViolation):
        ttl_ms(float("nan"))
    with pytest.raises(InvalidOperation):
        update_data({"op": "set"})


# -- delivered twice ----------------------------------------------------------------------

write = st.one_of(
    st.builds(lambda v: ("kv.set", {"value": v}), st.integers(0, 9)),
    st.builds(
        lambda n: ("kv.update", {"ops": [{"op": "increment", "path": "n", "by": n}]}),
        st.integers(-3, 3),
    ),
    st.builds(
        lambda v: ("kv.update", {"ops": [{"op": "append", "path": "l", "value": v}]}),
        st.integers(0, 3),
    ),  # fmt: skip
    st.just(("kv.delete", None)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(write, min_size=1, max_size=10), st.data())
def test_delivering_an_event_twice_changes_nothing(
    writes: list[tuple[str, Any]], data: st.DataObject
) -> None:
    events = [kv(t, d, id=f"e{i}", time_ms=T0 + i) for i, (t, d) in enumerate(writes)]
    once_record, once_changes = fold(REG, events)
    # Applied events, delivered again later. (A rejected event is not remembered: sent
    # again, it is a new attempt, which is what re-driving a dead letter relies on.)
    applied = [e for e in events if e.id in {c.event_id for c in once_changes}]
    again = list(events)
    for _ in range(data.draw(st.integers(0 if not applied else 1, 5 if applied else 0))):
        repeat = data.draw(st.sampled_from(applied))
        at = data.draw(st.integers(again.index(repeat) + 1, len(again)))
        again.insert(at, repeat)
    twice_record, twice_changes = fold(REG, again)
    assert twice_record == once_record
    assert twice_changes == once_changes
    assert [c.seq for c in once_changes] == list(range(1, len(once_changes) + 1))


def test_changes_carry_the_address_of_the_key() -> None:
    _, [change] = fold(REG, [kv("kv.set", {"value": 1})])
    assert isinstance(change, StateChange)
    assert Address(change.tenant, change.machine, change.instance) == ("acme", "kv.users", "u1")
