"""Replay and the determinism check, purely: the log through apply_record again, and the
comparison with what the pipeline published."""

from __future__ import annotations

import itertools
from typing import Any

from pipeline import Machine, Registry
from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.replay import AddressFilter, Comparer, MemoryScratch, Replayer
from pipeline.settings import Topics
from tests.samples import Consumed, consumed, event, sample_registry

TOPICS = Topics.of("app")


def _log() -> list[Consumed]:
    """Two instances, a duplicate, a contract violation, an unknown type, bad JSON."""
    events: list[Any] = []
    for i in range(6):
        events.append(event(data={"amount": i}, id=f"a{i}", instance="c1", time_ms=1000 + i))
        events.append(event(data={"amount": 2 * i}, id=f"b{i}", instance="c2", time_ms=1000 + i))
    events.insert(3, events[0])  # a producer's retry: a duplicate
    events.insert(5, event(data={"amount": 5000}, id="big", instance="c1"))  # contract
    events.insert(7, event("counter.unknown", id="unk", instance="c2"))
    records = [consumed(e, offset=n) for n, e in enumerate(events)]
    records.append(consumed(b"{not json", offset=len(records)))
    return records


def _pipeline(registry: Registry, log: list[Consumed]) -> tuple[list[bytes], dict[Any, str]]:
    """What the worker published (the state changes' bytes) and dead-lettered."""
    rules = Rules(registry, TOPICS, trust_firings=True)  # as if sealed by the worker
    records: dict[Address, Any] = {}
    changes, dead = [], {}
    for rec in log:
        applied = apply_record(rules, records.get, rec)
        if applied.outcome is not None:
            assert applied.address is not None
            records[applied.address] = applied.outcome.record
        if applied.change is not None:
            changes.append(applied.change)
        if applied.verdict == "rejected":
            dead[(rec.partition, rec.offset)] = f"{applied.stage}: {applied.reason}"
    return changes, dead


def _replay(
    registry: Registry,
    log: list[Consumed],
    live: list[bytes],
    dead: dict[Any, str],
    **kw: Any,
) -> Comparer:
    comparer = Comparer(ranged=kw.pop("ranged", False))
    replayer = Replayer(
        Rules(registry, TOPICS, trust_firings=True),
        MemoryScratch(),
        comparer,
        dead_lettered=dead,
        **kw,
    )
    # Interleaved as the command reads them: a few events, a few live changes.
    live_iter = iter(live)
    for start in range(0, len(log), 3):
        for rec in log[start : start + 3]:
            replayer.event(rec)
        for raw in itertools.islice(live_iter, 2):
            comparer.live(raw)
    for raw in live_iter:
        comparer.live(raw)
    comparer.finish()
    return comparer


def test_a_deterministic_app_replays_its_log_identically() -> None:
    log = _log()
    live, dead = _pipeline(sample_registry(), log)
    found = _replay(sample_registry(), log, live, dead)
    assert found.divergences == []
    s = found.stats
    assert (s.events, s.applied, s.duplicate, s.rejected) == (len(log), 12, 1, 3)
    assert (s.compared, s.identical, s.diverged, s.unmatched_live) == (12, 12, 0, 0)
    assert len(dead) == 3


def _clocked(start: int) -> Registry:
    """A counter whose reducer reads a clock (here a counter standing in for one)."""
    ticks = itertools.count(start)
    m: Machine[dict[str, Any]] = Machine("counter", initial={"n": 0})

    @m.on("counter.added")
    def added(config: Any, state: dict[str, Any], ev: Any) -> dict[str, Any]:
        return {"n": state["n"] + 1, "at": next(ticks)}

    return Registry([m])


def test_a_reducer_that_reads_the_clock_is_found_at_its_first_change() -> None:
    log = [consumed(event(id=f"e{i}", instance=f"c{i % 2}"), offset=i) for i in range(6)]
    live, dead = _pipeline(_clocked(0), log)
    found = _replay(_clocked(1000), log, live, dead)
    assert [(d.instance, d.seq) for d in found.divergences] == [("c0", 1), ("c1", 1)]
    first = found.divergences[0]
    assert first.live is not None
    assert first.replayed is not None
    assert (first.live["state"], first.replayed["state"]) == (
        {"n": 1, "at": 0},
        {"n": 1, "at": 1000},
    )
    assert found.stats.diverged == 2


def test_an_event_only_one_side_applied_is_where_they_part() -> None:
    log = _log()
    live, dead = _pipeline(sample_registry(), log)
    relaxed = Registry([_relaxed_counter()])
    found = _replay(relaxed, log, live, dead)
    (d,) = found.divergences
    assert (d.instance, d.seq) == ("c1", 3)
    assert d.replayed is not None
    assert d.replayed["event_id"] == "big"
    # And the other way: the pipeline applied what the replay refuses.
    live_relaxed, dead_relaxed = _pipeline(relaxed, log)
    found = _replay(sample_registry(), log, live_relaxed, dead_relaxed)
    (d,) = found.divergences
    assert (d.instance, d.seq, d.replayed) == ("c1", 3, None)
    assert "the replay rejected it" in d.why


def _relaxed_counter() -> Machine[Any]:
    from pydantic import BaseModel

    class Loose(BaseModel):
        amount: int
        note: str = ""

    m: Machine[dict[str, Any]] = Machine("counter", initial={"count": 0, "total": 0, "last": ""})

    @m.on("counter.added", payload=Loose)
    def added(config: Any, state: dict[str, Any], ev: Any) -> dict[str, Any]:
        return {
            "count": state["count"] + 1,
            "total": state["total"] + ev.data.amount,
            "last": ev.id,
        }

    return m


def test_a_firing_the_pipeline_dead_lettered_is_refused_in_the_replay_too() -> None:
    arm = event("counter.alarm", {"seconds": 1}, id="arm", time_ms=0)
    forged = event("counter.rang", id="timer:alarm:1000", time_ms=1000, timer="alarm")
    log = [consumed(arm, offset=0), consumed(forged, offset=1)]
    registry = sample_registry()
    live, _ = _pipeline(registry, log[:1])  # the sealed pipeline refused the forgery
    found = _replay(registry, log, live, {(0, 1): "origin: no seal"})
    assert found.divergences == []
    assert found.stats.refused_firings == 1
    # Without the dead-letter topic's word, the forgery is applied and shows.
    found = _replay(registry, log, live, {})
    assert [d.seq for d in found.divergences] == [2]


def test_a_range_skips_instances_born_before_it_and_a_filter_narrows() -> None:
    log = [consumed(event(id=f"e{i}", instance=f"c{i % 3}", time_ms=i), offset=i) for i in range(9)]
    live, dead = _pipeline(sample_registry(), log)
    late = log[3:] + [consumed(event(id="new", instance="c9", time_ms=99), offset=9)]
    live_late, _ = _pipeline(sample_registry(), log + late[-1:])
    found = _replay(sample_registry(), late, live_late, dead, ranged=True)
    assert found.divergences == []
    assert found.stats.began_before == 3
    assert found.stats.identical == 1  # c9, born inside the range
    c1 = AddressFilter(instance="c1")
    only = _replay(sample_registry(), log, [x for x in live if c1.admits_change(x)], dead, only=c1)
    assert (only.stats.events, only.divergences) == (3, [])
