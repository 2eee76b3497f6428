"""Named queries and computed values: pure reads of an instance's state, never stored.

Declared on a machine (or a chart machine) next to its reducers::

    @order.query("progress", result=Progress)
    def progress(config, state):
        return Progress(done=len(state.done), total=state.total)

    @order.query("items", params=Page)
    def items(config, state, params):
        return state.items[params.offset : params.offset + params.limit]

    @order.computed("total")
    def total(config, state):
        return sum(line.price for line in state.lines)

A reducer machine's query is ``(config, state)`` or ``(config, state, params)`` and a
computed value ``(config, state)``, the state as the reducers see it (the model, when
the machine has one); a chart machine's are ``(snapshot)`` / ``(snapshot, params)`` and
``(snapshot)``. ``params`` is the validated ``params`` model (without one: the raw
parameters, a read-only mapping of text); the answer is checked against ``result`` when
given, and must be JSON either way.

A query answers from the stored record and changes nothing: each call gets a copy of
the state of its own, the answer is computed on read and never written (a test holds the
record's bytes identical). Computed values are the same kind of read, without
parameters: added to every HTTP read of the instance (``computed``), answered by name
like a query, and, with ``publish_computed=True`` on the machine, added to each
published state change (``computed``), computed from the new state as it is applied.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from pipeline.errors import GarrisonError, InvalidDefinition, ReducerFailed, Rejected
from pipeline.record import Record, copy_state

if TYPE_CHECKING:
    from pipeline.registry import Registry

__all__ = [
    "QueryAnswer",
    "InvalidQuery",
    "Queries",
    "Query",
    "Queryable",
    "QueryError",
    "QueryFailed",
    "UnknownQuery",
    "answer",
    "computed_of",
]

F = TypeVar("F", bound=Callable[..., Any])


class QueryError(GarrisonError):
    """A query that cannot be answered; ``status`` is the HTTP status it is served as."""

    status = 500


class UnknownQuery(QueryError):
    """No such machine, or the machine declares no query (or computed value) of that name."""

    status = 404


class InvalidQuery(QueryError, ValueError):
    """The parameters do not fit the query; the message says what to fix."""

    status = 400


class QueryFailed(QueryError):
    """The query (or a computed value) raised, or gave an answer that is not JSON or does
    not fit its result model, or the stored state does not fit the machine's model."""


def _explain(exc: ValidationError) -> str:
    from pipeline.machine import explain  # the one wording of pydantic errors

    return explain(exc)


def _positional(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes (None: any number)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


@dataclass(frozen=True, slots=True)
class Query:
    """One declared query: its function, parameter and result models, and whether the
    function takes the parameters."""

    name: str
    fn: Callable[..., Any]
    params: type[BaseModel] | None
    result: type[BaseModel] | None
    takes_params: bool


def _json(value: Any, model: type[BaseModel] | None) -> Any:
    """``value`` as JSON data: through ``model`` when given; TypeError/ValidationError
    when it does not fit."""
    if model is not None:
        return model.model_validate(value).model_dump(mode="json")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return orjson.loads(orjson.dumps(value))


class Queries:
    """The queries and computed values of one machine version.

    ``with_config``: a reducer machine's functions take its config first. ``model``:
    the state model the functions get the state as. ``publish``: computed values go
    into each published state change too.
    """

    def __init__(
        self,
        owner: str,
        *,
        config: Callable[[], Any] | None = None,
        model: type[BaseModel] | None = None,
        publish: bool = False,
    ) -> None:
        self.owner = owner
        self._config = config
        self._model = model
        self.publish = publish
        self.queries: dict[str, Query] = {}
        self.computed: dict[str, Callable[..., Any]] = {}

    @property
    def _lead(self) -> int:
        return 2 if self._config is not None else 1

    def _name(self, name: str, kind: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidDefinition(f"{self.owner}: a {kind} needs a non-empty name")
        if name in self.queries or name in self.computed:
            raise InvalidDefinition(
                f"{self.owner} already has a query or computed value named {name!r}"
            )

    def query(
        self,
        name: str,
        *,
        params: type[BaseModel] | None = None,
        result: type[BaseModel] | None = None,
    ) -> Callable[[F], F]:
        """Register the query ``name`` (see the module doc)."""
        self._name(name, "query")
        for what, model in (("params", params), ("result", result)):
            if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise InvalidDefinition(f"{self.owner}: query {name!r}: {what} must be a model")
        lead = self._lead
        args = "(config, state" if lead == 2 else "(snapshot"

        def register(fn: F) -> F:
            count = _positional(fn)
            if count is not None and count not in (lead, lead + 1):
                raise InvalidDefinition(
                    f"{self.owner}: query {name!r} must take {args}) or {args}, params)"
                )
            takes = count is None or count == lead + 1
            if params is not None and not takes:
                raise InvalidDefinition(
                    f"{self.owner}: query {name!r} declares params= but takes {args}) only"
                )
            self.queries[name] = Query(name, fn, params, result, takes)
            return fn

        return register

    def computed_value(self, name: str) -> Callable[[F], F]:
        """Register the computed value ``name`` (see the module doc)."""
        self._name(name, "computed value")
        lead = self._lead

        def register(fn: F) -> F:
            count = _positional(fn)
            if count is not None and count != lead:
                args = "(config, state)" if lead == 2 else "(snapshot)"
                raise InvalidDefinition(f"{self.owner}: computed {name!r} must take {args}")
            self.computed[name] = fn
            return fn

        return register

    # -- reading ------------------------------------------------------------------------

    def _state(self, state: Any) -> Any:
        copied = copy_state(state)
        if self._model is None:
            return copied
        try:
            return self._model.__pydantic_validator__.validate_python(copied)
        except ValidationError as exc:
            raise QueryFailed(
                f"the stored state of {self.owner} does not fit {self._model.__name__}: "
                f"{_explain(exc)}"
            ) from None

    def _call(self, fn: Callable[..., Any], state: Any, *extra: Any) -> Any:
        if self._config is not None:
            return fn(self._config(), self._state(state), *extra)
        return fn(self._state(state), *extra)

    def ask(self, name: str, state: Any, raw: Mapping[str, Any]) -> Any:
        """The answer of query ``name`` (or of the computed value ``name``) for ``state``
        (its stored JSON form) with the parameters ``raw``."""
        query = self.queries.get(name)
        if query is None:
            if name in self.computed:
                if raw:
                    raise InvalidQuery(f"computed value {name!r} takes no parameters")
                return self._one(name, state)
            known = ", ".join(sorted([*self.queries, *self.computed])) or "none"
            raise UnknownQuery(f"{self.owner} has no query {name!r}; it has: {known}")
        extra: tuple[Any, ...] = ()
        if query.params is not None:
            try:
                extra = (query.params.model_validate(dict(raw)),)
            except ValidationError as exc:
                raise InvalidQuery(
                    f"parameters of query {name!r} do not fit {query.params.__name__}: "
                    f"{_explain(exc)}"
                ) from None
        elif query.takes_params:
            extra = (MappingProxyType(dict(raw)),)
        elif raw:
            raise InvalidQuery(
                f"query {name!r} takes no parameters; remove {', '.join(sorted(raw))}"
            )
        try:
            value = self._call(query.fn, state, *extra)
        except QueryError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: report, never crash
            raise QueryFailed(f"query {name!r} raised {type(exc).__name__}: {exc}") from exc
        try:
            return _json(value, query.result)
        except ValidationError as exc:
            assert query.result is not None
            raise QueryFailed(
                f"query {name!r} answered what does not fit {query.result.__name__}: "
                f"{_explain(exc)}"
            ) from None
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise QueryFailed(f"query {name!r} answered what is not JSON: {exc}") from None

    def _one(self, name: str, state: Any) -> Any:
        try:
            return _json(self._call(self.computed[name], state), None)
        except QueryError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: report, never crash
            raise QueryFailed(f"computed {name!r} raised {type(exc).__name__}: {exc}") from exc

    def values(self, state: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """Every computed value of ``state``, and why those that failed did."""
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in self.computed:
            try:
                out[name] = self._one(name, state)
            except QueryFailed as exc:
                errors[name] = str(exc)
        return out, errors

    def published(self, state: Any, event_type: str) -> dict[str, Any] | None:
        """The computed values a published change carries (None: the machine publishes
        none); one that fails refuses the event, as a reducer that raises does."""
        if not self.publish or not self.computed:
            return None
        out, errors = self.values(state)
        if errors:
            name, why = next(iter(errors.items()))
            raise ReducerFailed(f"{self.owner}: {why}", event_type=event_type)
        return out


class Queryable:
    """The ``query`` and ``computed`` decorators of a machine kind, which keeps its
    :class:`Queries` in ``queries``."""

    queries: Queries

    def query(
        self,
        name: str,
        *,
        params: type[BaseModel] | None = None,
        result: type[BaseModel] | None = None,
    ) -> Callable[[F], F]:
        """Register the named query ``name``: ``fn(config, state[, params])`` on a
        reducer machine, ``fn(snapshot[, params])`` on a chart machine; a pure read of
        an instance's state, served over HTTP, the client and the CLI."""
        return self.queries.query(name, params=params, result=result)

    def computed(self, name: str) -> Callable[[F], F]:
        """Register the computed value ``name``: ``fn(config, state)`` on a reducer
        machine, ``fn(snapshot)`` on a chart machine; derived on every read, never
        stored."""
        return self.queries.computed_value(name)


class QueryAnswer(NamedTuple):
    """A query's answer for one instance: its ``seq`` and ``version`` when answered."""

    seq: int
    version: int
    result: Any


def _current(registry: Registry, machine: str, record: Record) -> tuple[Queries, Any]:
    """The queries of the version the instance runs (migrated as its next event would
    be), and its state in that version's form; the stored record is not touched."""
    try:
        latest = registry.latest(machine)
        # A migration is user code that may change what it is given: give it a copy.
        stored = record.state if latest.version == record.version else copy_state(record.state)
        behaviour, state = registry.for_instance(machine, record.version, stored)
    except Rejected as exc:
        if exc.stage == "route":
            raise UnknownQuery(exc.reason) from None
        raise QueryFailed(exc.reason) from None
    except Exception as exc:  # noqa: BLE001 - a user migration raised
        raise QueryFailed(
            f"migrating {machine!r} from v{record.version} raised {type(exc).__name__}: {exc}"
        ) from exc
    return behaviour.queries, state


def answer(
    registry: Registry, machine: str, record: Record, name: str, params: Mapping[str, Any]
) -> QueryAnswer:
    """Answer query ``name`` of the instance whose stored record is ``record`` (not an
    ended one: its state is not None)."""
    queries, state = _current(registry, machine, record)
    return QueryAnswer(record.seq, record.version, queries.ask(name, state, params))


def computed_of(
    registry: Registry, machine: str, record: Record
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The computed values of the instance, and the errors of those that failed; None
    when its machine declares none."""
    if not any(b.queries.computed for b in registry.versions(machine).values()):
        return None  # the common read: no copy, no migration
    try:
        queries, state = _current(registry, machine, record)
    except QueryError as exc:
        return {}, {"*": str(exc)}
    if not queries.computed:
        return None
    return queries.values(state)
