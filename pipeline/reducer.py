"""What a reducer must look like, and what its annotations say.

A reducer is a synchronous ``(config, state, event)`` function; a mistake in its shape
is an :class:`~pipeline.errors.InvalidDefinition` when it is registered. Its event may
be annotated ``Incoming[Model]``, and then ``Model`` is its payload contract.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from pipeline.errors import InvalidDefinition
from pipeline.incoming import Incoming

__all__ = ["annotated_payload", "check_reducer"]


def check_reducer(event_type: str, fn: Callable[..., Any]) -> None:
    """Raise :class:`InvalidDefinition` unless ``fn`` can be a reducer: synchronous, and
    taking ``(config, state, event)``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return  # builtins and C callables: trust them
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_kw = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw or (len(positional) != 3 and not (variadic and len(positional) <= 3)):
        raise InvalidDefinition(
            f"reducer {getattr(fn, '__name__', fn)!r} for {event_type!r} must take "
            f"(config, state, event); it takes ({', '.join(p.name for p in params)})"
        )
    if inspect.iscoroutinefunction(fn):
        raise InvalidDefinition(
            f"reducer for {event_type!r} is async; reducers are pure and synchronous "
            "(put I/O in a listener)"
        )


def annotated_payload(event_type: str, fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The payload model named by a reducer's ``event: Incoming[Model]`` annotation."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(params) < 3 or params[2].annotation is inspect.Parameter.empty:
        return None
    hint = params[2].annotation
    if isinstance(hint, str):  # postponed evaluation (from __future__ import annotations)
        if not hint.replace(" ", "").startswith("Incoming["):
            return None
        try:
            # As typing.get_type_hints evaluates an annotation, but this one only: the
            # others may name classes local to a function.
            hint = eval(hint, getattr(fn, "__globals__", {}), {"Incoming": Incoming})  # noqa: S307
        except Exception as exc:  # noqa: BLE001 - an annotation that does not resolve
            raise InvalidDefinition(
                f"reducer {getattr(fn, '__name__', fn)!r} for {event_type!r}: its event "
                f"annotation {params[2].annotation!r} does not resolve "
                f"({type(exc).__name__}: {exc}); define the payload model at module "
                "level, or pass payload="
            ) from None
    if typing.get_origin(hint) is not Incoming:
        return None
    args = typing.get_args(hint)
    model = args[0] if args else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None
