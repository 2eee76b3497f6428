"""The answer hook of the per-record decision, without Kafka: a duplicate whose sender
waits (the ``garrison.reply`` header) gets one reply record; without the header, and
on every other verdict, the decision is what it always was."""

from __future__ import annotations

from typing import Any

from pipeline import Registry, StateChange
from pipeline.address import Address
from pipeline.answer import REPLY_WANTED, Answer, duplicate_reply, wants_reply
from pipeline.deadletter import DeadLetter
from pipeline.decision import Applied, Rules, apply_record
from pipeline.record import Record
from pipeline.settings import Topics
from tests.samples import consumed, counter_machine, event

TOPICS = Topics.of("app")
RULES = Rules(Registry([counter_machine()]), TOPICS)
ADDRESS = Address("acme", "counter", "c1")


class Store:
    def __init__(self) -> None:
        self.records: dict[Address, Record | None] = {}

    def apply(self, rec: Any) -> Applied:
        applied = apply_record(RULES, self.records.get, rec)
        if applied.outcome is not None:
            assert applied.address is not None
            self.records[applied.address] = applied.outcome.record
        return applied


def test_a_waited_for_duplicate_gets_one_reply_with_the_current_state() -> None:
    store = Store()
    store.apply(consumed(event(data={"amount": 2}), headers=REPLY_WANTED))
    store.apply(consumed(event(id="e2", data={"amount": 3}), offset=1))
    applied = store.apply(consumed(event(data={"amount": 2}), offset=2, headers=REPLY_WANTED))
    assert (applied.verdict, applied.outcome, applied.stored) == ("duplicate", None, None)
    [reply] = applied.outputs
    assert (reply.topic, reply.key, reply.partition) == (TOPICS.replies, b"acme", None)
    answer = Answer.from_reply(reply.value)
    assert answer is not None
    assert (answer.status, answer.event_id, answer.seq) == ("duplicate", "e1", 2)
    assert answer.state["total"] == 5
    assert (answer.tenant, answer.machine, answer.instance) == ADDRESS


def test_without_the_header_a_duplicate_produces_nothing() -> None:
    store = Store()
    store.apply(consumed(event()))
    applied = store.apply(consumed(event(), offset=1, headers=(("other", b"1"),)))
    assert applied == Applied("duplicate", ADDRESS, reason="event id 'e1' was applied already")


def test_the_header_changes_nothing_on_applied_and_rejected_events() -> None:
    plain, marked = Store(), Store()
    for i, ev in enumerate([event(), event("counter.broken", id="b"), event(id="e3")]):
        a = plain.apply(consumed(ev, offset=i))
        b = marked.apply(consumed(ev, offset=i, headers=REPLY_WANTED))
        assert (a.verdict, a.outcome, a.stored) == (b.verdict, b.outcome, b.stored)
        assert [(o.topic, o.value) for o in a.outputs] == [(o.topic, o.value) for o in b.outputs]
    # And the waiting client finds the outcomes where it looks: the change, the letter.
    applied = marked.apply(consumed(event(id="e4"), offset=3, headers=REPLY_WANTED))
    answer = Answer.from_change(StateChange.from_json(applied.outputs[0].value or b""))
    assert (answer.status, answer.event_id, answer.seq) == ("applied", "e4", 3)
    letter = marked.apply(
        consumed(event("counter.broken", id="b2"), offset=4, headers=REPLY_WANTED)
    )
    out = letter.outputs[0]
    rejected = Answer.from_dead_letter(out.value, out.headers)
    assert rejected is not None
    assert (rejected.status, rejected.event_id, rejected.stage) == ("rejected", "b2", "reducer")
    assert rejected.reason is not None
    assert "this reducer always fails" in rejected.reason
    assert (rejected.tenant, rejected.machine, rejected.instance) == ADDRESS


def test_answers_read_only_what_is_theirs() -> None:
    assert wants_reply(REPLY_WANTED)
    assert not wants_reply(())
    assert not wants_reply(None)
    # A listener's dead letter holds a state change, not a rejected event.
    listener = DeadLetter(b"acme", b'{"event_id": "e1"}', "listener", "x", "E", "t", 0, 0, 0)
    assert Answer.from_dead_letter(b"{}", listener.headers()) is None
    letter = DeadLetter(None, b"{not json", "decode", "bad", "InvalidEvent", "t", 0, 0, 0)
    assert Answer.from_dead_letter(letter.value, letter.headers()) is None
    binary = DeadLetter(None, b"raw", "contract", "bad", "E", "t", 0, 0, 0, (("ce_id", b"x1"),))
    found = Answer.from_dead_letter(binary.value, binary.headers())
    assert found is not None
    assert (found.event_id, found.stage) == ("x1", "contract")
    assert Answer.from_reply(b'{"status": "applied"}') is None
    assert Answer.from_reply(b"nope") is None
    reply = duplicate_reply(event(), None)
    assert Answer.from_reply(reply) == Answer("duplicate", "e1", *ADDRESS, "counter.added")


def test_answers_print_what_their_status_has() -> None:
    applied = Answer("applied", "e1", *ADDRESS, "t", 2, {"a": 1}, None)
    assert applied.to_dict()["seq"] == 2
    assert applied.ok
    rejected = Answer("rejected", "e1", *ADDRESS, "t", stage="contract", reason="r")
    assert not rejected.ok
    assert set(rejected.to_dict()) >= {"stage", "reason"}
    assert "seq" not in rejected.to_dict()
