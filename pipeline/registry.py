"""The registry: the machines, their versions and the listeners of one garrison app.

A user's module builds one and garrison's entry points find it::

    registry = Registry(services={"mail": Mailer()})
    registry.add(counter)
    registry.add(Scope("users"))  # a key-value scope (pipeline.kv)

    @registry.listener(machine="counter", when=lambda prev, cur: cur["count"] >= 10)
    async def celebrate(change, ctx): ...

    @registry.trigger(scope="users", on="created")  # a listener on a scope's keys
    async def welcome(change, ctx): ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, overload

from pipeline.behaviour import Behaviour
from pipeline.errors import InvalidDefinition, UnknownMachine
from pipeline.listener import Listener, ListenerFn, Predicate
from pipeline.trigger import Trigger, TriggerFn, ValuePredicate

__all__ = ["Registry"]

L = TypeVar("L", bound=ListenerFn)
T = TypeVar("T", bound=TriggerFn)


class Registry:
    """Machines by name and version, plus listeners and the services they may call."""

    def __init__(self, machines: Iterable[Behaviour] = (), *, services: Any = None) -> None:
        self._versions: dict[str, dict[int, Behaviour]] = {}
        self._latest: dict[str, Behaviour] = {}
        self.listeners: list[Listener] = []
        self.services = services
        for machine in machines:
            self.add(machine)

    def add(self, machine: Behaviour) -> Behaviour:
        """Register a machine version; the highest version is what new instances take."""
        versions = self._versions.setdefault(machine.name, {})
        if machine.version in versions:
            raise InvalidDefinition(
                f"machine {machine.name!r} v{machine.version} is registered twice; "
                "give the new definition a higher version"
            )
        versions[machine.version] = machine
        if machine.name not in self._latest or machine.version > self._latest[machine.name].version:
            self._latest[machine.name] = machine
        return machine

    @property
    def machines(self) -> dict[str, Behaviour]:
        """The latest version of every machine, by name."""
        return dict(self._latest)

    @property
    def service_topics(self) -> frozenset[str]:
        """Every topic a machine (any registered version) declares it emits to."""
        return frozenset(
            topic
            for versions in self._versions.values()
            for machine in versions.values()
            for topic in getattr(machine, "topics", ())
        )

    def versions(self, name: str) -> dict[int, Behaviour]:
        """Every registered version of ``name``."""
        return dict(self._versions.get(name, {}))

    def latest(self, name: str) -> Behaviour:
        """The version new instances of ``name`` start with."""
        try:
            return self._latest[name]
        except KeyError:
            known = ", ".join(sorted(self._latest)) or "none"
            raise UnknownMachine(f"no machine named {name!r}; this app defines: {known}") from None

    def for_instance(self, name: str, version: int, state: Any) -> tuple[Behaviour, Any]:
        """The behaviour an existing instance runs, and its state, upgraded along the
        registered migrations as far as they reach (an instance without a migration path
        keeps its version)."""
        latest = self._latest.get(name)
        if latest is not None and latest.version == version:
            return latest, state  # the common case: nothing to migrate
        versions = self._versions.get(name)
        if not versions or version not in versions:
            raise UnknownMachine(
                f"instance runs {name!r} v{version}, which this worker does not define; "
                "keep old versions registered while instances use them"
            )
        current = versions[version]
        for newer in sorted(v for v in versions if v > version):
            step = versions[newer].migrations.get(current.version)
            if step is None:
                continue
            state = step(state)
            current = versions[newer]
        return current, state

    @overload
    def listener(
        self,
        fn: L,
        /,
        *,
        name: str | None = None,
        machine: str | None = None,
        on: Iterable[str] | str | None = None,
        when: Predicate | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> L: ...

    @overload
    def listener(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        machine: str | None = None,
        on: Iterable[str] | str | None = None,
        when: Predicate | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> Callable[[L], L]: ...

    def listener(
        self,
        fn: ListenerFn | None = None,
        /,
        *,
        name: str | None = None,
        machine: str | None = None,
        on: Iterable[str] | str | None = None,
        when: Predicate | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> Any:
        """Register a listener on state changes, bare (``@registry.listener``) or with
        conditions (``@registry.listener(machine="order", when=...)``). ``start`` is
        where a new listener begins: the oldest change kept, or only changes from now."""

        def register(f: ListenerFn) -> ListenerFn:
            listener = Listener.build(
                f,
                name=name,
                machine=machine,
                on=on,
                when=when,
                retries=retries,
                backoff_s=backoff_s,
                start=start,
            )
            self._add_listener(listener)
            return f

        return register(fn) if fn is not None else register

    def _add_listener(self, listener: Listener) -> None:
        if any(existing.name == listener.name for existing in self.listeners):
            raise InvalidDefinition(
                f"two listeners are named {listener.name!r}; "
                "listener names must be unique (pass name=; a trigger is a listener too)"
            )
        self.listeners.append(listener)

    def trigger(
        self,
        *,
        scope: str,
        on: Iterable[str] | str | None = None,
        key: str | re.Pattern[str] | None = None,
        when: ValuePredicate | None = None,
        name: str | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        start: Literal["earliest", "latest"] = "earliest",
    ) -> Callable[[T], T]:
        """Register a trigger on the key-value ``scope`` (declared with
        ``registry.add(Scope(...))`` first): it runs when a key is ``created``,
        ``updated``, ``deleted`` or ``expired`` (``on``, default all), whose name
        matches ``key`` (a glob or a compiled regex), when ``when(old, new)`` holds;
        ``start`` as for a listener. A listener underneath (``pipeline.trigger``)::

            @registry.trigger(scope="users", on="created")
            async def welcome(change: KeyChange, ctx: TriggerContext) -> None: ...
        """

        def register(f: T) -> T:
            trigger = Trigger.make(
                f,
                scope=scope,
                on=on,
                key=key,
                when=when,
                name=name,
                retries=retries,
                backoff_s=backoff_s,
                start=start,
            )
            declared = self._latest.get(trigger.machine or "")
            if declared is None or getattr(declared, "scope", None) != trigger.scope:
                raise InvalidDefinition(
                    f"trigger {trigger.name!r}: no scope {trigger.scope!r} is declared; "
                    f"add registry.add(Scope({trigger.scope!r})) before the trigger"
                )
            self._add_listener(trigger)
            return f

        return register
