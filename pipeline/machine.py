"""Reducer machines: a name, a version, a state model, and one pure reducer per event type.

A reducer is ``(config, state, event) -> new state``, or ``-> Next(state, *effects)``
to also emit events or arm timers. It performs no I/O and reads no clock: the time is
``event.time``. Mistakes in a definition raise :class:`InvalidDefinition` at once.

Example::

    class Counter(BaseModel):
        count: int = 0

    class Added(BaseModel):
        amount: int

    counter = Machine("counter", state=Counter)

    @counter.on("counter.added", payload=Added)
    def added(config, state, event):
        return state.model_copy(update={"count": state.count + event.data.amount})
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from pipeline.behaviour import Migration, migration_registrar
from pipeline.effect import Effect, Emit, Next
from pipeline.envelope import Event
from pipeline.errors import (
    ContractViolation,
    InvalidDefinition,
    InvalidState,
    ReducerFailed,
    Rejected,
    UnknownEventType,
)
from pipeline.incoming import Incoming
from pipeline.query import Queries, Queryable
from pipeline.record import copy_state
from pipeline.reducer import annotated_payload, check_reducer
from pipeline.view import Siblings, ViewSpec, check_views, resolve

__all__ = ["Incoming", "Machine", "Reducer", "explain"]

S = TypeVar("S")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
P = TypeVar("P")
R = TypeVar("R", bound=Callable[..., Any])


class Reducer(Protocol):
    """``(config, state, event) -> state | Next``; pure."""

    def __call__(self, config: Any, state: Any, event: Incoming[Any], /) -> Any: ...


def explain(exc: ValidationError) -> str:
    """A pydantic error list as one line saying what to fix."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _validated(
    model: type[BaseModel],
    value: Any,
    error: type[Rejected],
    what: str,
    *,
    hint: str = "",
    **context: Any,
) -> Any:
    """``value`` validated by ``model``, or ``error`` saying what does not fit. Calls the
    compiled validator directly: model_validate's wrapper is a measurable share of a
    small model's cost, per event."""
    try:
        return model.__pydantic_validator__.validate_python(value)
    except ValidationError as exc:
        raise error(
            f"{what} does not fit {model.__name__}: {explain(exc)}{hint}", **context
        ) from None


class Machine(Queryable, Generic[S]):
    """A machine whose transitions are reducers, one per event type; ``query`` and
    ``computed`` declare its named queries and computed values (``pipeline.query``)."""

    def __init__(
        self,
        name: str,
        *,
        state: type[S] | type[dict[str, Any]] = dict,
        initial: S | dict[str, Any] | Callable[[Any, Incoming[Any]], Any] | None = None,
        version: int = 1,
        config: Any = None,
        ttl: timedelta | None = None,
        emits: dict[str, type[BaseModel]] | None = None,
        topics: Iterable[str] = (),
        publish_computed: bool = False,
    ) -> None:
        from pipeline.address import check_id  # one rule for names everywhere

        try:
            check_id("machine", name)
        except ValueError as exc:
            raise InvalidDefinition(str(exc)) from None
        if not isinstance(version, int) or version < 1:
            raise InvalidDefinition(f"machine {name!r}: version must be an int >= 1")
        self.name = name
        self.version = version
        self.config = config
        self.ttl_ms = None if ttl is None else int(ttl.total_seconds() * 1000)
        if self.ttl_ms is not None and self.ttl_ms <= 0:
            raise InvalidDefinition(f"machine {name!r}: ttl must be positive")
        self.migrations: dict[int, Migration] = {}
        self.emits = dict(emits or {})
        # A model state reaches the reducer as a fresh model built from its JSON: a copy.
        self.copies_state = state is not dict
        self.topics = frozenset(topics)  # service topics its reducers may Emit(topic=) to
        for topic in self.topics:
            if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:
                raise InvalidDefinition(
                    f"machine {name!r}: {topic!r} is not a Kafka topic name "
                    "(1 to 249 letters, digits, '.', '_', '-')"
                )
        self._model: type[BaseModel] | None = (
            state if isinstance(state, type) and issubclass(state, BaseModel) else None
        )
        if self._model is None and state is not dict:
            raise InvalidDefinition(
                f"machine {name!r}: state must be a pydantic BaseModel subclass or dict"
            )
        self._reducers: dict[str, tuple[Reducer, type[BaseModel] | None]] = {}
        # What reducers read of their siblings, by event type (pipeline.view).
        self.views: dict[str, tuple[ViewSpec, ...]] = {}
        self.queries = Queries(
            f"machine {name!r} v{version}",
            config=lambda: self.config,
            model=self._model,
            publish=publish_computed,
        )
        # A fixed initial state is validated and dumped once, not per new instance.
        self._initial_fn: Callable[[Any, Incoming[Any]], Any] | None = None
        self._initial_state: Any = None
        if callable(initial) and not isinstance(initial, BaseModel | dict):
            self._initial_fn = initial
        elif initial is not None:
            self._initial_state = self._dump(initial, "initial state")
        elif self._model is None:
            self._initial_state = {}
        else:
            try:
                self._initial_state = self._dump(self._model(), "initial state")
            except ValidationError as exc:
                raise InvalidDefinition(
                    f"machine {self.name!r}: its state model has required fields "
                    f"({explain(exc)}); give initial="
                ) from None

    @property
    def event_types(self) -> frozenset[str]:
        """The event types this machine has reducers for."""
        return frozenset(self._reducers)

    def on(
        self,
        event_type: str,
        *,
        payload: type[BaseModel] | None = None,
        views: Iterable[ViewSpec] = (),
    ) -> Callable[[R], R]:
        """Register the reducer for ``event_type``; ``payload`` is the event's contract;
        ``views`` what it reads of sibling instances (``event.views``, ``pipeline.view``).

        Without ``payload``, a reducer whose event is annotated ``Incoming[Model]`` takes
        ``Model`` as its contract::

            @counter.on("counter.added")
            def added(config: None, state: Counter, event: Incoming[Added]) -> Counter:
                return Counter(count=state.count + event.data.amount)
        """
        if not event_type:
            raise InvalidDefinition(f"machine {self.name!r}: event type must be non-empty")
        if event_type in self._reducers:
            raise InvalidDefinition(
                f"machine {self.name!r} v{self.version} already has a reducer for "
                f"{event_type!r}; one reducer per event type"
            )
        if payload is not None and not (
            isinstance(payload, type) and issubclass(payload, BaseModel)
        ):
            raise InvalidDefinition(f"payload for {event_type!r} must be a pydantic model")

        specs = check_views(f"machine {self.name!r}", event_type, views)

        def register(fn: R) -> R:
            check_reducer(event_type, fn)
            model = payload if payload is not None else annotated_payload(event_type, fn)
            self._reducers[event_type] = (fn, model)
            if specs:
                self.views[event_type] = specs
            return fn

        return register

    def migrate(self, from_version: int) -> Callable[[Migration], Migration]:
        """Register ``fn(old_state_json) -> state_json`` upgrading instances of
        ``from_version`` to this version on their next event."""
        return migration_registrar(
            self.migrations, self.version, from_version, f"machine {self.name!r} v{self.version}"
        )

    # -- the Behaviour protocol ---------------------------------------------------------

    def start(
        self, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """Initial state, then the first event applied to it (``siblings``: what its
        views read, when it declares any)."""
        reducer, payload = self._reducer(event.type)
        incoming = self._incoming(event, payload)
        if self.views:
            incoming = self._viewed(incoming, siblings)
        if self._initial_fn is None:
            # Every new instance gets its own copy, or a reducer changing it in place would
            # change the initial state of every later instance, of any tenant (a model
            # state is copied by _run, which builds the model from the JSON).
            shared = self._initial_state
            return self._run(reducer, shared if self._model else copy_state(shared), incoming)
        try:
            initial = self._initial_fn(self.config, incoming)
        except Exception as exc:  # noqa: BLE001 - user code: report, never crash
            raise ReducerFailed(
                f"initial state of {self.name!r} raised {type(exc).__name__}: {exc}",
                event_type=event.type,
            ) from exc
        return self._run(reducer, self._dump(initial, "initial state"), incoming)

    def apply(
        self, state: Any, event: Event, siblings: Siblings | None = None
    ) -> tuple[Any, tuple[Effect, ...]]:
        """Apply one event to a stored state."""
        reducer, payload = self._reducer(event.type)
        incoming = self._incoming(event, payload)
        if self.views:
            incoming = self._viewed(incoming, siblings)
        return self._run(reducer, state, incoming)

    # -- internals ----------------------------------------------------------------------

    def _reducer(self, event_type: str) -> tuple[Reducer, type[BaseModel] | None]:
        try:
            return self._reducers[event_type]
        except KeyError:
            known = ", ".join(sorted(self._reducers)) or "none"
            raise UnknownEventType(
                f"machine {self.name!r} v{self.version} has no reducer for {event_type!r}; "
                f"it handles: {known}",
                event_type=event_type,
            ) from None

    def _viewed(self, incoming: Incoming[Any], siblings: Siblings | None) -> Incoming[Any]:
        specs = self.views.get(incoming.type)
        if specs is None:
            return incoming
        return Incoming._make((*incoming[:8], resolve(specs, incoming, incoming.type, siblings)))

    def _incoming(self, event: Event, payload: type[BaseModel] | None) -> Incoming[Any]:
        data = event.data
        if payload is not None:
            data = _validated(
                payload,
                data,
                ContractViolation,
                f"payload of {event.type!r}",
                event_type=event.type,
                data=event.data,
            )
        return Incoming(
            event.id,
            event.type,
            event.tenant,
            event.machine,
            event.instance,
            event.time_ms,
            data,
            event.parentid,
        )

    def _run(
        self, reducer: Reducer, state: Any, incoming: Incoming[Any]
    ) -> tuple[Any, tuple[Effect, ...]]:
        current = state
        if self._model is not None:
            # The model is built from the state's JSON, so it shares nothing with the
            # stored state (pydantic keeps Any-typed values by reference): this is the
            # reducer's private copy, made in one pass. A stored state the model refuses
            # (its fields changed without a new version and a migration): dead-letter
            # the event, keep the state.
            try:
                current = self._model.__pydantic_validator__.validate_json(orjson.dumps(state))
            except TypeError as exc:  # a migration returned something that is not JSON
                raise InvalidState(
                    f"stored state of {self.name!r} v{self.version} is not JSON: {exc}",
                    event_type=incoming.type,
                ) from None
            except ValidationError as exc:
                raise InvalidState(
                    f"stored state of {self.name!r} v{self.version} does not fit "
                    f"{self._model.__name__}: {explain(exc)}; bump the version and register "
                    "a migration",
                    event_type=incoming.type,
                    data=incoming.data,
                ) from None
        try:
            result = reducer(self.config, current, incoming)
        except Exception as exc:  # noqa: BLE001 - user code: report, never crash
            raise ReducerFailed(
                f"reducer for {incoming.type!r} raised {type(exc).__name__}: {exc}",
                event_type=incoming.type,
                data=incoming.data,
            ) from exc
        effects: tuple[Effect, ...] = ()
        if isinstance(result, Next):
            result, effects = result.state, result.effects
        for effect in effects:
            self._check_emit(effect)
        if result is None:  # the reducer ends the instance (a tombstone keeps its seq)
            return None, effects
        return self._dump(result, f"state returned for {incoming.type!r}"), effects

    def _check_emit(self, effect: Effect) -> None:
        if isinstance(effect, Emit) and (contract := self.emits.get(effect.type)):
            _validated(contract, effect.data, ContractViolation, f"emitted {effect.type!r}")

    def _dump(self, value: Any, what: str) -> Any:
        model = self._model
        if model is None:
            if not isinstance(value, dict):
                raise InvalidState(
                    f"{what} of {self.name!r} is {type(value).__name__}, expected a dict"
                )
            return value
        try:
            if isinstance(value, model):
                raw = model.__pydantic_serializer__.to_python(value, mode="json", warnings=False)
                # Validate the dumped form too: a mutated model can hold values its
                # fields would refuse, and what we store must load again.
                model.__pydantic_validator__.validate_python(raw)
                return raw
            return model.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidState(
                f"{what} of {self.name!r} does not fit {model.__name__}: {explain(exc)}"
            ) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidState(
                f"{what} of {self.name!r} is not a {model.__name__}: {exc}"
            ) from None
