"""The pure step: sequencing, de-duplication, rejections, effects, timers, TTL, versions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import (
    ContractViolation,
    InvalidState,
    Machine,
    ReducerFailed,
    Registry,
    UnknownEventType,
    UnknownMachine,
    fold,
    step,
)
from pipeline.ids import timer_event_id
from pipeline.step import TTL_TIMER
from tests.samples import Counter, counter_machine, event, refused, sample_registry

REG = sample_registry()


def test_first_event_creates_the_instance_with_seq_1() -> None:
    out = step(REG, None, event(data={"amount": 5}))
    assert out.status == "applied"
    assert out.record is not None
    assert out.change is not None
    assert out.record.seq == 1
    assert out.change.seq == 1
    assert out.record.state == {"count": 1, "total": 5, "last": "e1"}
    assert out.change.prev is None
    assert out.change.state == out.record.state
    assert out.record.created_ms == out.record.updated_ms == 1_700_000_000_000


def test_sequence_grows_by_one_and_prev_is_the_last_state() -> None:
    first = step(REG, None, event(id="a")).record
    out = step(REG, first, event(id="b", data={"amount": 2}))
    assert out.change is not None
    assert first is not None
    assert out.change.seq == 2
    assert out.change.prev == first.state
    assert out.change.state["total"] == 3


def test_duplicate_id_is_skipped() -> None:
    rec = step(REG, None, event(id="a")).record
    out = step(REG, rec, event(id="a", data={"amount": 100}))
    assert out.status == "duplicate"
    assert out.record is None
    assert out.change is None


def test_recent_ids_are_bounded() -> None:
    rec = None
    for i in range(30):
        rec = step(REG, rec, event(id=f"e{i}"), keep_ids=4).record
    assert rec is not None
    assert rec.recent == ("e26", "e27", "e28", "e29")


@pytest.mark.parametrize(
    ("kind", "data", "error", "text"),
    [
        ("counter.nope", None, UnknownEventType, "has no reducer for 'counter.nope'"),
        ("counter.added", {"amount": "many"}, ContractViolation, "amount"),
        ("counter.added", {"amount": 5000}, ContractViolation, "less than or equal to 1000"),
        ("counter.added", {"amount": 1, "extra": 1}, ContractViolation, "extra"),
        ("counter.broken", None, ReducerFailed, "RuntimeError: this reducer always fails"),
        ("counter.corrupt", None, InvalidState, "does not fit Counter"),
    ],
)
def test_rejections_carry_stage_and_reason(
    kind: str, data: Any, error: type[Exception], text: str
) -> None:
    rec = step(REG, None, event(id="a")).record
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")) as info:
        raise refused(step(REG, rec, event(kind, data, id="b")))
    assert info.value.stage in {"route", "contract", "reducer", "state"}  # type: ignore[attr-defined]


def test_unknown_machine_is_rejected_with_the_known_names() -> None:
    with pytest.raises(UnknownMachine, match="this app defines: counter, pinger"):
        raise refused(step(REG, None, event(machine="ghost")))


def test_emit_gets_a_derived_id_same_tenant_and_parent() -> None:
    out = step(REG, None, event("counter.ping", {}, id="p1"))
    assert len(out.emitted) == 1
    sent = out.emitted[0].event
    assert (sent.id, sent.type, sent.tenant, sent.machine, sent.instance) == (
        "p1/e0",
        "pinger.pong",
        "acme",
        "pinger",
        "c1",
    )
    assert sent.parentid == "p1"
    assert sent.time_ms == 1_700_000_000_000
    assert out.emitted[0].topic is None


def test_one_shot_timer_fires_once_then_is_gone() -> None:
    out = step(REG, None, event("counter.alarm", {"seconds": 10}, id="a"))
    rec = out.record
    assert rec is not None
    due = 1_700_000_000_000 + 10_000
    assert rec.timers["alarm"].due_ms == due
    assert [(w.name, w.old_due_ms, w.timer and w.timer.due_ms) for w in out.timers] == [
        ("alarm", None, due)
    ]
    fire = event("counter.alarm", None, id=timer_event_id("alarm", due), time_ms=due, timer="alarm")
    fired = step(REG, rec, fire)
    assert fired.status == "applied"
    assert fired.change is not None
    assert fired.change.event_type == "counter.rang"
    assert fired.change.state["count"] == 100
    assert fired.record is not None
    assert "alarm" not in fired.record.timers
    assert [(w.old_due_ms, w.timer) for w in fired.timers] == [(due, None)]
    # The same firing again (e.g. redelivered) is a duplicate; a firing of another due
    # time is stale.
    assert step(REG, fired.record, fire).status == "duplicate"
    other = event(id=timer_event_id("alarm", due + 1), time_ms=due + 1, timer="alarm")
    assert step(REG, fired.record, other).status == "stale"


def test_periodic_timer_rearms_one_period_on() -> None:
    rec = step(REG, None, event("counter.alarm", {"seconds": 5, "every": 5}, id="a")).record
    assert rec is not None
    due = rec.timers["alarm"].due_ms
    for k in range(3):
        out = step(REG, rec, event(id=f"t{k}", time_ms=due, timer="alarm"))
        assert out.status == "applied"
        rec = out.record
        assert rec is not None
        assert rec.timers["alarm"].due_ms == due + 5000
        assert out.timers[0].old_due_ms == due
        due += 5000
    assert rec.state["count"] == 300


def test_cancelled_timer_firing_is_stale() -> None:
    rec = step(REG, None, event("counter.alarm", {"seconds": 5}, id="a")).record
    assert rec is not None
    due = rec.timers["alarm"].due_ms
    cancelled = step(REG, rec, event("counter.snooze", None, id="b"))
    assert cancelled.record is not None
    assert cancelled.record.timers == {}
    assert cancelled.timers[0].old_due_ms == due
    assert cancelled.timers[0].timer is None
    assert step(REG, cancelled.record, event(id="f", time_ms=due, timer="alarm")).status == "stale"


def test_ttl_expires_an_idle_instance_and_rearms_for_a_busy_one() -> None:
    reg = Registry([counter_machine(ttl=timedelta(seconds=60))])
    t0 = 1_700_000_000_000
    rec = step(reg, None, event(id="a", time_ms=t0)).record
    assert rec is not None
    assert rec.expires_ms == t0 + 60_000
    assert rec.timers[TTL_TIMER].due_ms == t0 + 60_000
    rec = step(reg, rec, event(id="b", time_ms=t0 + 30_000)).record
    assert rec is not None
    assert rec.expires_ms == t0 + 90_000
    # The index was not rewritten by the touch; the firing at t0+60s re-arms it.
    rearm = step(reg, rec, event(id="x", time_ms=t0 + 60_000, timer=TTL_TIMER))
    assert rearm.status == "rearmed"
    assert rearm.change is None
    assert rearm.record is not None
    assert rearm.record.timers[TTL_TIMER].due_ms == t0 + 90_000
    gone = step(reg, rearm.record, event(id="y", time_ms=t0 + 90_000, timer=TTL_TIMER))
    assert gone.status == "expired"
    assert gone.record is not None
    assert gone.record.state is None  # a tombstone
    assert gone.change is not None
    assert gone.change.state is None
    assert gone.change.event_type == "garrison.expired"
    assert gone.change.seq == 3


def test_instances_keep_their_version_without_a_migration() -> None:
    reg = Registry([counter_machine(version=1)])
    rec = step(reg, None, event(id="a")).record
    reg.add(counter_machine(version=2))
    out = step(reg, rec, event(id="b"))
    assert out.record is not None
    assert out.record.version == 1
    fresh = step(reg, None, event(id="c", instance="c2"))
    assert fresh.record is not None
    assert fresh.record.version == 2


def test_migration_upgrades_on_the_next_event() -> None:
    reg = Registry([counter_machine(version=1)])
    rec = step(reg, None, event(id="a", data={"amount": 7})).record
    v2 = counter_machine(version=2)

    @v2.migrate(from_version=1)
    def double(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "total": state["total"] * 2}

    reg.add(v2)
    out = step(reg, rec, event(id="b", data={"amount": 1}))
    assert out.record is not None
    assert out.record.version == 2
    assert out.record.state["total"] == 15


def test_plain_dict_machine_and_initial_callable() -> None:
    m: Machine[dict[str, Any]] = Machine(
        "greeter", initial=lambda config, ev: {"hello": ev.instance}
    )

    @m.on("greeted")
    def greeted(config: Any, state: dict[str, Any], ev: Any) -> dict[str, Any]:
        return {**state, "n": state.get("n", 0) + 1}

    out = step(Registry([m]), None, event("greeted", {}, machine="greeter", instance="bob"))
    assert out.record is not None
    assert out.record.state == {"hello": "bob", "n": 1}


# -- properties ---------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["counter.added", "counter.reset", "counter.nope"]), st.integers(-5, 5)
    ),
    max_size=40,
)


def _events(ops: list[tuple[str, int]]) -> list[Any]:
    return [
        event(
            kind,
            {"amount": n} if kind == "counter.added" else None,
            id=f"e{i}",
            time_ms=1_700_000_000_000 + i,
        )
        for i, (kind, n) in enumerate(ops)
    ]


def _run(events: list[Any], keep_ids: int = 64) -> tuple[Any, list[Any]]:
    rec, changes = None, []
    for ev in events:
        try:
            out = step(REG, rec, ev, keep_ids=keep_ids)
        except UnknownEventType:
            continue
        if out.record is not None:
            rec = out.record
        if out.change is not None:
            changes.append(out.change)
    return rec, changes


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_replay_rebuilds_identical_state_and_changes(ops: list[tuple[str, int]]) -> None:
    evs = _events(ops)
    assert _run(evs) == _run(evs)


@settings(max_examples=200, deadline=None)
@given(_ops, st.data())
def test_delivering_events_twice_is_harmless(ops: list[tuple[str, int]], data: Any) -> None:
    evs = _events(ops)
    doubled = []
    for ev in evs:
        doubled.append(ev)
        if data.draw(st.booleans()):
            doubled.append(ev)
    assert _run(doubled) == _run(evs)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_sequence_numbers_have_no_gaps(ops: list[tuple[str, int]]) -> None:
    rec, changes = _run(_events(ops))
    assert [c.seq for c in changes] == list(range(1, len(changes) + 1))
    if rec is not None:
        assert rec.seq == len(changes)
        assert changes[-1].state == rec.state
        for before, after in zip(changes, changes[1:], strict=False):
            assert after.prev == before.state


def test_fold_matches_step_by_step() -> None:
    evs = [event(id=f"e{i}", data={"amount": i}) for i in range(5)]
    rec, changes = fold(REG, evs)
    assert rec is not None
    assert rec.state["total"] == 10
    assert len(changes) == 5
    assert Counter.model_validate(rec.state).count == 5


def test_a_stored_state_the_model_refuses_is_rejected_not_raised() -> None:
    # The model changed without a new version: the stored state no longer fits. The
    # event is rejected (it goes to the dead-letter topic); the worker carries on.
    rec = step(REG, None, event(id="a")).record
    assert rec is not None
    broken = rec._replace(state={"count": "many", "total": 0, "last": ""})
    with pytest.raises(
        InvalidState,
        match="stored state of 'counter' v1 does not fit Counter.*register a migration",
    ) as info:
        raise refused(step(REG, broken, event(id="b")))
    assert info.value.stage == "state"


def test_records_never_share_a_timer_mapping() -> None:
    # Records are immutable values: arming a timer builds a new mapping, and a record
    # without timers holds the shared read-only empty one.
    plain = step(REG, None, event(id="a")).record
    assert plain is not None
    with pytest.raises(TypeError):
        plain.timers["x"] = None  # type: ignore[index]
    armed = step(REG, plain, event("counter.alarm", {"seconds": 5}, id="b")).record
    assert armed is not None
    assert "alarm" in armed.timers
    assert dict(plain.timers) == {}
