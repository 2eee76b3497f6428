"""Views: what a reducer (or a chart's guards and actions) may read of its siblings.

All of a tenant's instances live in the tenant's partition, applied in one order, so a
machine may read another instance of the same tenant as it is at that point of the
order. What a reducer reads is declared with it, so reducers stay pure functions of
their inputs: the declaration says which siblings, the pipeline reads them and hands
the reducer private copies in ``event.views``::

    @order.on(
        "order.placed",
        views=[View("stock", machine="inventory", instance=lambda ev: ev.data.sku)],
    )
    def placed(config, state, event):
        stock = event.views["stock"]  # the inventory instance's state, or None
        ...

    @dashboard.on(
        "dashboard.refresh",
        views=[Collect("orders", machine="order", transform=lambda s: s["total"])],
    )
    def refresh(config, state, event):
        totals = event.views["orders"]  # a Slice: instance id -> total, at most 100
        ...

- :class:`View` reads one sibling (``machine``, and an instance id: fixed or taken
  from the event), and gives its state (a JSON copy) or None when it does not exist.
- :class:`Collect` gathers a slice of many siblings of one machine: every instance
  whose id starts with ``prefix``, or the ``ids`` listed, each through ``transform``;
  at most ``limit`` of them (a :class:`Slice`, whose ``more`` says some were left out).

The tenant is always the event's own: a view of another tenant cannot be declared.
The reads go through the batch's uncommitted writes, so a view sees every event applied
before this one in the partition and nothing after it, and a replay of the partition
sees exactly the same (``pipeline.replay`` gives its scratch store the same reads).
What a reducer does to a view changes nothing else: each is its own copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from pipeline.address import Address, check_id
from pipeline.errors import GarrisonError, InvalidDefinition, ReducerFailed
from pipeline.record import Record, copy_state

__all__ = [
    "MAX_COLLECT",
    "NO_VIEWS",
    "Collect",
    "Loader",
    "Reads",
    "Scanner",
    "Siblings",
    "Slice",
    "View",
    "ViewSpec",
    "check_views",
    "instance_order",
    "resolve",
]

MAX_COLLECT = 10_000
"""The largest ``limit`` a :class:`Collect` may declare: a reducer's inputs stay bounded."""

NO_VIEWS: Mapping[str, Any] = MappingProxyType({})

Loader = Callable[[Address], Record | None]
"""An instance's record as of this point in the partition (None: no such instance)."""

Scanner = Callable[[str, str, str], Iterator[tuple[str, Record]]]
"""``scan(tenant, machine, prefix)``: the records of ``machine``'s instances of ``tenant``
whose id starts with ``prefix``, as of this point in the partition, in
:func:`instance_order`."""

StateReader = Callable[[Address], Any]
"""An instance's state as of this point in the partition, as a copy the caller may keep
and change (None: no such instance, or it has ended)."""


class Reads(NamedTuple):
    """What views read besides the decision's ``load``: ``scan`` for collects, and
    ``state``, a quicker read of one sibling's state (a store read decoded straight
    into a fresh copy: ``tables.batch.StateBatch.state``); without it a view reads
    through ``load`` and copies the state."""

    scan: Scanner | None = None
    state: StateReader | None = None


def instance_order(instance: str) -> bytes:
    """The order the state table keeps one machine's instances in (its key codec writes
    an id as ``<length>:<id>``, ``tables.keys.part``): scans and collects go in this order,
    the live store and a replay's scratch alike (a test holds the two to agreement)."""
    raw = instance.encode()
    return b"%d:%s" % (len(raw), raw)


@dataclass(frozen=True, slots=True)
class View:
    """One sibling: the instance ``instance`` of ``machine`` in the event's tenant.

    ``instance`` is an id, or a function of the event as the machine's code sees it
    (``Incoming`` for a reducer, the chart event for a chart) returning one. The view's
    value is a private JSON copy of the sibling's state, or None if it does not exist
    (or has ended).
    """

    name: str
    machine: str
    instance: str | Callable[[Any], str]

    def __post_init__(self) -> None:
        _check_name("View", self.name, self.machine)
        if isinstance(self.instance, str):
            _checked("View", self.name, "instance", self.instance)
        elif not callable(self.instance):
            raise InvalidDefinition(
                f"View {self.name!r}: instance must be an id or a function of the event"
            )


@dataclass(frozen=True, slots=True)
class Collect:
    """A slice of many siblings of ``machine`` in the event's tenant.

    Either every instance whose id starts with ``prefix`` (an id prefix, or a function
    of the event; ``""``: all of them), or the instances ``ids`` names (a list, or a
    function of the event returning one; ids with no instance are left out). Each
    state goes through ``transform`` (default: the state itself, a JSON copy). At most
    ``limit`` instances are gathered, in :func:`instance_order` (for ``ids``: in their
    order); the :class:`Slice` says when more matched.
    """

    name: str
    machine: str
    prefix: str | Callable[[Any], str] = ""
    ids: Iterable[str] | Callable[[Any], Iterable[str]] | None = None
    transform: Callable[[Any], Any] | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        _check_name("Collect", self.name, self.machine)
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_COLLECT:
            raise InvalidDefinition(
                f"Collect {self.name!r}: limit must be a whole number from 1 to {MAX_COLLECT}"
            )
        if self.ids is not None and self.prefix != "":
            raise InvalidDefinition(f"Collect {self.name!r}: give prefix= or ids=, not both")
        if isinstance(self.prefix, str):
            if self.prefix:
                _checked("Collect", self.name, "prefix", self.prefix)
        elif not callable(self.prefix):
            raise InvalidDefinition(f"Collect {self.name!r}: prefix must be text or a function")
        if self.ids is not None and not callable(self.ids):
            ids = tuple(self.ids)  # a generator given once must not be used up
            for one in ids:
                _checked("Collect", self.name, "ids", one)
            object.__setattr__(self, "ids", ids)
        if self.transform is not None and not callable(self.transform):
            raise InvalidDefinition(f"Collect {self.name!r}: transform must be a function")


ViewSpec = View | Collect


def _check_name(kind: str, name: object, machine: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidDefinition(f"{kind} needs a non-empty name (the key in event.views)")
    try:
        check_id("machine", machine)
    except GarrisonError as exc:
        raise InvalidDefinition(f"{kind} {name!r}: {exc}") from None


def _checked(kind: str, name: str, what: str, value: object) -> str:
    try:
        return check_id("instance", value)
    except GarrisonError as exc:
        raise InvalidDefinition(f"{kind} {name!r}: {what}: {exc}") from None


def check_views(owner: str, event_type: str, views: Iterable[ViewSpec]) -> tuple[ViewSpec, ...]:
    """The declared views of one event type, checked: each a View or Collect, names unique."""
    specs = tuple(views)
    names: set[str] = set()
    for spec in specs:
        if not isinstance(spec, View | Collect):
            raise InvalidDefinition(
                f"{owner}: views of {event_type!r} must be View(...) or Collect(...), got {spec!r}"
            )
        if spec.name in names:
            raise InvalidDefinition(
                f"{owner}: two views of {event_type!r} are named {spec.name!r}; names are "
                "the keys of event.views and must be unique"
            )
        names.add(spec.name)
    return specs


class Slice(Mapping[str, Any]):
    """What a :class:`Collect` gathered: instance id -> its (transformed) state, in the
    order gathered. ``more`` is True when more instances matched than the limit let in."""

    __slots__ = ("_items", "more")

    def __init__(self, items: dict[str, Any], more: bool) -> None:
        self._items = items
        self.more = more

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Slice({self._items!r}, more={self.more})"


class Siblings:
    """Read-only access to the instances of one tenant as of one point in the partition:
    built by ``step`` for the event's tenant, so no other tenant is reachable."""

    __slots__ = ("tenant", "_load", "_scan", "_state")

    def __init__(self, tenant: str, load: Loader | None, reads: Reads | None = None) -> None:
        self.tenant = tenant
        self._load = load
        self._scan = None if reads is None else reads.scan
        self._state = None if reads is None else reads.state

    def state(self, machine: str, instance: str) -> Any:
        """A private copy of the instance's state, or None."""
        if self._state is not None:
            return self._state(Address(self.tenant, machine, instance))
        if self._load is None:
            return None
        record = self._load(Address(self.tenant, machine, instance))
        return None if record is None or record.state is None else copy_state(record.state)

    def gather(self, machine: str, prefix: str, limit: int) -> Iterator[tuple[str, Any]]:
        """Up to ``limit + 1`` live instances whose id starts with ``prefix``, in order
        (the extra one says there are more), each a private copy of its state."""
        if self._scan is None:
            return
        taken = 0
        for instance, record in self._scan(self.tenant, machine, prefix):
            if record.state is None:
                continue  # an ended instance's tombstone
            yield instance, copy_state(record.state)
            taken += 1
            if taken > limit:
                return


def _fail(spec: ViewSpec, what: str, exc: BaseException, event_type: str) -> ReducerFailed:
    return ReducerFailed(
        f"{type(spec).__name__} {spec.name!r} of {spec.machine!r}: {what} raised "
        f"{type(exc).__name__}: {exc}",
        event_type=event_type,
    )


def _id(spec: ViewSpec, value: Any, event_type: str) -> str:
    try:
        return check_id("instance", value)
    except GarrisonError as exc:
        raise ReducerFailed(
            f"{type(spec).__name__} {spec.name!r} of {spec.machine!r}: the event gives "
            f"instance {value!r}: {exc}",
            event_type=event_type,
        ) from None


def _collect(spec: Collect, event: Any, siblings: Siblings, event_type: str) -> Slice:
    found: list[tuple[str, Any]] = []
    if spec.ids is not None:
        try:
            ids = list(spec.ids(event) if callable(spec.ids) else spec.ids)
        except Exception as exc:  # noqa: BLE001 - user code: report, never crash
            raise _fail(spec, "ids", exc, event_type) from exc
        for value in ids:
            instance = _id(spec, value, event_type)
            state = siblings.state(spec.machine, instance)
            if state is not None:
                found.append((instance, state))
                if len(found) > spec.limit:
                    break
    else:
        try:
            prefix = spec.prefix(event) if callable(spec.prefix) else spec.prefix
        except Exception as exc:  # noqa: BLE001
            raise _fail(spec, "prefix", exc, event_type) from exc
        if prefix != "":
            _id(spec, prefix, event_type)  # an id's characters, at most an id's length
        found = list(siblings.gather(spec.machine, prefix, spec.limit))
    more = len(found) > spec.limit
    transform = spec.transform
    items: dict[str, Any] = {}
    for instance, state in found[: spec.limit]:
        if transform is None:
            items[instance] = state
            continue
        try:
            items[instance] = transform(state)
        except Exception as exc:  # noqa: BLE001
            raise _fail(spec, "transform", exc, event_type) from exc
    return Slice(items, more)


def resolve(
    specs: tuple[ViewSpec, ...], event: Any, event_type: str, siblings: Siblings | None
) -> Mapping[str, Any]:
    """The views ``specs`` declare, read for ``event`` (as the machine's code sees it);
    without ``siblings`` (a single instance folded alone) nothing exists. A selector or
    transform that raises, or names an invalid id, refuses the event (ReducerFailed)."""
    reader = siblings if siblings is not None else Siblings("", None)
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.__class__ is View:  # the common case, kept short: it runs per event
            selector = spec.instance
            if selector.__class__ is str:
                value: Any = selector
            else:
                try:
                    value = selector(event)  # type: ignore[operator]  # a callable here
                except Exception as exc:  # noqa: BLE001 - user code: report, never crash
                    raise _fail(spec, "instance", exc, event_type) from exc
            out[spec.name] = reader.state(spec.machine, _id(spec, value, event_type))
        else:
            assert isinstance(spec, Collect)
            out[spec.name] = _collect(spec, event, reader, event_type)
    return MappingProxyType(out)
