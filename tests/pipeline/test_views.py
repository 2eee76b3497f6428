"""Views and collects, purely: a reducer reads its tenant's siblings as of its place in the
partition's order (earlier events, also those not yet committed, and nothing later),
gets copies, never another tenant's instances; a replay of the partition gives the same
changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Collect, InvalidDefinition, Machine, ReducerFailed, View, step
from pipeline.address import Address
from pipeline.decision import Rules, apply_record
from pipeline.record import Record
from pipeline.replay import Comparer, MemoryScratch, Replayer
from pipeline.settings import Topics
from pipeline.view import Reads, instance_order
from tests.pipeline.shop import shop_registry
from tests.samples import consumed, event, refused

TOPICS = Topics.of("shop")
REGISTRY = shop_registry()


class Partition:
    """One partition's records as the lane keeps them: committed ones, and the batch's
    uncommitted writes over them (what ``tables.batch.StateBatch`` does on RocksDB)."""

    def __init__(self) -> None:
        self.committed: dict[Address, Record] = {}
        self.batch: dict[Address, Record | None] = {}
        self.asked: list[Address] = []
        self.changes: list[bytes] = []

    def load(self, address: Address) -> Record | None:
        self.asked.append(address)
        if address in self.batch:
            return self.batch[address]
        return self.committed.get(address)

    def scan(self, tenant: str, machine: str, prefix: str) -> Iterator[tuple[str, Record]]:
        merged: dict[Address, Record | None] = {**self.committed, **self.batch}
        found = [
            (a.instance, r)
            for a, r in merged.items()
            if r is not None
            and (a.tenant, a.machine) == (tenant, machine)
            and a.instance.startswith(prefix)
        ]
        return iter(sorted(found, key=lambda x: instance_order(x[0])))

    def apply(self, rec: Any) -> Any:
        applied = apply_record(Rules(REGISTRY, TOPICS), self.load, rec, Reads(self.scan))
        if applied.outcome is not None:
            self.batch[applied.address] = applied.outcome.record
        if applied.change is not None:
            self.changes.append(applied.change)
        return applied

    def commit(self) -> None:
        for address, record in self.batch.items():
            if record is None:
                self.committed.pop(address, None)
            else:
                self.committed[address] = record
        self.batch = {}

    def state(self, machine: str, instance: str, tenant: str = "acme") -> Any:
        record = self.load(Address(tenant, machine, instance))
        return None if record is None else record.state


def ev(type: str, data: Any, machine: str, instance: str, n: int, tenant: str = "acme") -> Any:
    return event(
        type, data, id=f"e{n}", machine=machine, instance=instance, tenant=tenant, time_ms=1000 + n
    )


# A log: stock arrives for skus and orders are placed for them, interleaved.
_ops = st.lists(
    st.tuples(st.sampled_from(["stock", "order"]), st.sampled_from("ab"), st.integers(1, 5)),
    min_size=1,
    max_size=40,
)


def _log(ops: list[tuple[str, str, int]]) -> list[Any]:
    out = []
    for n, (kind, sku, qty) in enumerate(ops):
        if kind == "stock":
            out.append(ev("inventory.stocked", {"qty": qty}, "inventory", sku, n))
        else:
            out.append(ev("order.placed", {"sku": sku, "qty": qty}, "order", f"o{n}", n))
    return [consumed(e, offset=n) for n, e in enumerate(out)]


@settings(max_examples=60, deadline=None)
@given(ops=_ops, cuts=st.sets(st.integers(0, 40)))
def test_a_view_sees_the_partitions_earlier_events_committed_or_not_and_nothing_later(
    ops: list[tuple[str, str, int]], cuts: set[int]
) -> None:
    part = Partition()
    stock = {"a": 0, "b": 0}
    for n, (rec, (kind, sku, qty)) in enumerate(zip(_log(ops), ops, strict=True)):
        if n in cuts:
            part.commit()  # a batch boundary: the view must not care where it falls
        assert part.apply(rec).verdict == "applied"
        if kind == "stock":
            stock[sku] += qty
        else:
            seen = part.state("order", f"o{n}")
            assert seen["seen_stock"] == stock[sku]
            assert seen["status"] == ("accepted" if stock[sku] >= qty else "refused")
    # What the reducer did to its view changed no inventory record.
    part.commit()
    for sku, count in stock.items():
        state = part.state("inventory", sku)
        assert state == (
            None if not any(o[0] == "stock" and o[1] == sku for o in ops) else {"count": count}
        )


@settings(max_examples=40, deadline=None)
@given(ops=_ops, cuts=st.sets(st.integers(0, 40)), refresh_at=st.sets(st.integers(0, 40)))
def test_a_replay_of_the_partition_gives_identical_changes_with_views_and_collects(
    ops: list[tuple[str, str, int]], cuts: set[int], refresh_at: set[int]
) -> None:
    log = _log(ops)
    for n in sorted(refresh_at, reverse=True):  # dashboards collecting orders, in between
        at = min(n, len(log))
        log.insert(at, consumed(ev("dashboard.refresh", None, "dashboard", "d", 100 + n)))
    log = [r._replace(offset=n) for n, r in enumerate(log)]
    live = Partition()
    for n, rec in enumerate(log):
        if n in cuts:
            live.commit()
        live.apply(rec)
    comparer = Comparer()
    replayer = Replayer(Rules(REGISTRY, TOPICS, trust_firings=True), MemoryScratch(), comparer)
    for rec in log:
        replayer.event(rec)
    for change in live.changes:
        comparer.live(change)
    comparer.finish()
    assert comparer.stats.diverged == 0, comparer.divergences
    assert comparer.stats.identical == len(live.changes) == len(log)


def test_collect_gathers_a_bounded_slice_in_key_order_skipping_ended_instances() -> None:
    part = Partition()
    ids = ["o-1", "o-10", "o-2", "x-1", "o-3", "o-9", "o-11"]
    for n, instance in enumerate(ids):
        part.apply(consumed(ev("order.placed", {"sku": "a", "qty": n + 1}, "order", instance, n)))
    part.apply(consumed(ev("order.placed", {"sku": "a", "qty": 1}, "order", "o-5", 50, "other")))
    part.commit()
    part.apply(consumed(ev("dashboard.refresh", {"prefix": "o-"}, "dashboard", "d", 60)))
    state = part.state("dashboard", "d")
    # Key order: shorter ids first; the limit (5) leaves o-10 and o-11 out, and says so.
    assert list(state["orders"]) == ["o-1", "o-2", "o-3", "o-9", "o-10"]
    assert state["orders"]["o-2"] == ["refused", 3]
    assert state["more"] is True
    part.apply(consumed(ev("dashboard.refresh", {"prefix": "x"}, "dashboard", "d", 61)))
    assert part.state("dashboard", "d")["orders"] == {"x-1": ["refused", 4]}
    assert part.state("dashboard", "d")["more"] is False
    # By ids: missing ones are left out, the limit (2) holds.
    part.apply(
        consumed(ev("dashboard.pick", {"ids": ["o-3", "ghost", "o-1"]}, "dashboard", "d", 62))
    )
    assert part.state("dashboard", "d")["picked"] == {"o-3": 5, "o-1": 1}
    part.apply(consumed(ev("dashboard.pick", {"ids": ["o-3", "o-1", "o-2"]}, "dashboard", "d", 63)))
    assert part.state("dashboard", "d")["more"] is True


def test_collect_sees_the_batchs_own_writes_and_leaves_ended_instances_out() -> None:
    part = Partition()
    part.apply(consumed(ev("order.placed", {"sku": "a", "qty": 1}, "order", "o1", 1)))
    part.commit()
    part.apply(consumed(ev("order.placed", {"sku": "a", "qty": 2}, "order", "o2", 2)))
    part.batch[Address("acme", "order", "o1")] = part.committed[
        Address("acme", "order", "o1")
    ]._replace(state=None)  # a tombstone, in the uncommitted batch
    part.apply(consumed(ev("dashboard.refresh", None, "dashboard", "d", 3)))
    assert part.state("dashboard", "d")["orders"] == {"o2": ["refused", 2]}


def test_a_view_reads_only_the_events_own_tenant() -> None:
    part = Partition()
    part.apply(consumed(ev("inventory.stocked", {"qty": 9}, "inventory", "a", 1, tenant="acme")))
    part.asked.clear()
    rec = consumed(ev("order.placed", {"sku": "a", "qty": 1}, "order", "o1", 2, tenant="globex"))
    part.apply(rec)
    assert {a.tenant for a in part.asked} == {"globex"}
    assert part.state("order", "o1", tenant="globex")["seen_stock"] == 0  # acme's is not seen
    part.apply(consumed(ev("dashboard.refresh", None, "dashboard", "d", 3, tenant="globex")))
    assert list(part.state("dashboard", "d", tenant="globex")["orders"]) == ["o1"]


def test_a_charts_guard_and_action_read_a_view() -> None:
    part = Partition()
    part.apply(consumed(ev("gate.open", None, "gate", "g", 1)))
    no = part.apply(consumed(ev("gate.try", {"sku": "a"}, "gate", "g", 2)))
    assert (no.verdict, no.stage) == ("rejected", "transition")
    assert "no guard of 'gate.try' allows it" in no.reason
    part.apply(consumed(ev("inventory.stocked", {"qty": 4}, "inventory", "a", 3)))
    assert part.apply(consumed(ev("gate.try", {"sku": "a"}, "gate", "g", 4))).verdict == "applied"
    assert part.state("gate", "g")["value"] == "open"
    assert part.state("gate", "g")["context"] == {"opened_with": 4}


def test_a_selector_that_fails_or_names_a_bad_id_refuses_the_event() -> None:
    bad = Machine("bad")

    @bad.on("bad.go", views=[View("v", machine="other", instance=lambda ev: ev.data["id"])])
    def go(config: None, state: dict[str, Any], event: Any) -> dict[str, Any]:
        return state

    registry = shop_registry()
    registry.add(bad)
    with pytest.raises(ReducerFailed, match="View 'v' of 'other': instance raised KeyError"):
        raise refused(step(registry, None, event("bad.go", {}, machine="bad"), load=lambda a: None))
    with pytest.raises(ReducerFailed, match="the event gives instance 'a/b'.*contains '/'"):
        raise refused(
            step(registry, None, event("bad.go", {"id": "a/b"}, machine="bad"), load=lambda a: None)
        )


def test_without_reads_a_view_is_of_nothing() -> None:
    out = step(REGISTRY, None, event("order.placed", {"sku": "a", "qty": 1}, machine="order"))
    assert out.record is not None
    assert out.record.state["seen_stock"] == 0


def test_views_are_checked_when_declared() -> None:
    m = Machine("m")
    for views, text in (
        ([View("x", machine="a", instance="i"), View("x", machine="b", instance="j")], "unique"),
        (["nope"], "must be View"),
    ):
        with pytest.raises(InvalidDefinition, match=text):
            m.on("m.e", views=views)  # type: ignore[arg-type]
    for make, text in (
        (lambda: View("", machine="a", instance="i"), "non-empty name"),
        (lambda: View("v", machine="a/b", instance="i"), "contains '/'"),
        (lambda: View("v", machine="a", instance="i/j"), "instance: instance id"),
        (lambda: Collect("c", machine="a", limit=0), "limit must be a whole number"),
        (lambda: Collect("c", machine="a", limit=10_001), "from 1 to 10000"),
        (lambda: Collect("c", machine="a", prefix="p", ids=["x"]), "not both"),
        (lambda: Collect("c", machine="a", ids=["x y"]), "contains ' '"),
    ):
        with pytest.raises(InvalidDefinition, match=text):
            make()


def test_a_published_change_carries_computed_values_the_record_does_not() -> None:
    part = Partition()
    part.apply(consumed(ev("inventory.stocked", {"qty": 5}, "inventory", "a", 1)))
    applied = part.apply(
        consumed(ev("order.placed", {"sku": "a", "qty": 2, "price": 7}, "order", "o", 2))
    )
    change = orjson.loads(applied.change)
    assert change["computed"] == {"total": 14}
    assert "total" not in applied.outcome.record.state
    assert b"computed" not in applied.stored
    stock_change = orjson.loads(part.changes[0])
    assert "computed" not in stock_change  # inventory publishes none: bytes as before


def test_a_charts_first_event_reads_its_views_too() -> None:
    from pipeline import ChartMachine, Contract
    from pipeline.statechart import Chart, assign

    chart = Chart(
        {
            "id": "watch",
            "initial": "on",
            "context": {},
            "states": {"on": {"entry": "note"}},
        },
        actions={"note": assign(lambda ctx, ev: {"seen": ev.views["stock"]})},
    )
    watch = ChartMachine(
        chart,
        Contract(init="watch.start", accepts={"watch.start": None}),
        views={"watch.start": [View("stock", machine="inventory", instance="a")]},
    )
    registry = shop_registry()
    registry.add(watch)
    stock = step(REGISTRY, None, event("inventory.stocked", {"qty": 2}, machine="inventory"))
    assert stock.record is not None
    records = {Address("acme", "inventory", "c1"): stock.record}
    out = step(registry, None, event("watch.start", None, machine="watch"), load=records.get)
    assert out.record is not None
    assert out.record.state["context"] == {"seen": None}  # inventory/a does not exist
    records[Address("acme", "inventory", "a")] = stock.record
    out = step(
        registry, None, event("watch.start", None, machine="watch", id="e2"), load=records.get
    )
    assert out.record is not None
    assert out.record.state["context"] == {"seen": {"count": 2}}
