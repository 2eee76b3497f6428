"""Contracts: what one version of a chart machine accepts, emits and finishes with.

In the style of arvo's contracts, every event that crosses a machine's boundary has a
declared pydantic model: the init event that starts an instance, each event it
accepts afterwards (service replies included), each event it emits (commands,
notifications) and the output it completes with. Payloads are checked before the chart
runs; emitted data and the output after. A violation raises
:class:`~pipeline.errors.ContractViolation`, which the pipeline dead-letters.

A service that fails answers ``sys.<command type>.error`` (arvo's convention) with a
:class:`ServiceError` payload; declare it like any other accepted event::

    contract = Contract(
        init="order.place",
        accepts={
            "order.place": PlaceOrder,
            "payment.charged": Charged,
            error_event_type("payment.charge"): ServiceError,
        },
        emits={"payment.charge": Charge},
        output=OrderResult,
    )

A model of ``None`` means the event carries no data (its ``data`` must be null).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ContractViolation, InvalidDefinition, UnknownEventType
from pipeline.machine import explain

__all__ = ["Contract", "ServiceError", "error_event_type"]

Model = type[BaseModel] | None


def error_event_type(command_type: str) -> str:
    """The type a service answers with when ``command_type`` failed: ``sys.<type>.error``.

    >>> error_event_type("payment.charge")
    'sys.payment.charge.error'
    """
    return f"sys.{command_type}.error"


class ServiceError(BaseModel):
    """Payload of ``sys.<command type>.error``; the field names are arvo's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # arvo's wire names (camelCase), kept so arvo services and garrison interoperate.
    errorName: str
    errorMessage: str
    errorStack: str | None = None


def _check_model(where: str, model: Any) -> None:
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise InvalidDefinition(
            f"{where} must be a pydantic BaseModel subclass or None, got {model!r}"
        )


def _check_types(where: str, models: Mapping[str, Model]) -> dict[str, Model]:
    if not isinstance(models, Mapping):
        raise InvalidDefinition(f"contract {where} must be a dict of event type -> model")
    for event_type, model in models.items():
        if not isinstance(event_type, str) or not event_type:
            raise InvalidDefinition(
                f"contract {where}: event type {event_type!r} must be a non-empty string"
            )
        if event_type.startswith("xstate."):
            raise InvalidDefinition(
                f"contract {where}: {event_type!r} is an interpreter event (timers, done "
                "states); garrison delivers those itself, do not declare them"
            )
        _check_model(f"contract {where}[{event_type!r}]", model)
    return dict(models)


def _validate(model: Model, data: Any, what: str, event_type: str) -> Any:
    if model is None:
        if data is not None:
            raise ContractViolation(
                f"{what} {event_type!r} carries no data by contract; got {data!r}",
                event_type=event_type,
                data=data,
            )
        return None
    try:
        return model.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise ContractViolation(
            f"{what} {event_type!r} does not fit {model.__name__}: {explain(exc)}",
            event_type=event_type,
            data=data,
        ) from None


class Contract:
    """The declared boundary of one machine version.

    ``init`` is the event type that starts an instance (and only that one does);
    ``accepts`` maps every event type the machine takes, ``init`` included, to its
    payload model; ``emits`` does the same for what it sends; ``output`` is the model
    of the completion output, checked when the machine reaches a top-level final state.
    Validated data is passed on in its normalised JSON form (defaults filled in).
    """

    def __init__(
        self,
        *,
        init: str,
        accepts: Mapping[str, Model],
        emits: Mapping[str, Model] | None = None,
        output: Model = None,
    ) -> None:
        self._accepts = _check_types("accepts", accepts)
        self._emits = _check_types("emits", emits or {})
        if init not in self._accepts:
            raise InvalidDefinition(
                f"contract init {init!r} is not in accepts; declare its payload model there "
                f"(accepts: {', '.join(sorted(self._accepts)) or 'none'})"
            )
        _check_model("contract output", output)
        self.init = init
        self.output = output

    @property
    def accepts(self) -> Mapping[str, Model]:
        """Accepted event types and their payload models (read-only)."""
        return MappingProxyType(self._accepts)

    @property
    def emits(self) -> Mapping[str, Model]:
        """Emitted event types and their data models (read-only)."""
        return MappingProxyType(self._emits)

    def payload(self, event_type: str, data: Any, *, machine: str = "machine") -> Any:
        """The validated payload of an incoming event; raises UnknownEventType for a type
        the contract does not declare, ContractViolation for data that does not fit."""
        if event_type not in self._accepts:
            raise UnknownEventType(
                f"{machine} does not accept {event_type!r}; its contract accepts: "
                f"{', '.join(sorted(self._accepts))}",
                event_type=event_type,
                data=data,
            )
        return _validate(self._accepts[event_type], data, "payload of", event_type)

    def emitted(self, event_type: str, data: Any, *, machine: str = "machine") -> Any:
        """The validated data of an event the machine sends."""
        if event_type not in self._emits:
            raise ContractViolation(
                f"{machine} emitted {event_type!r}, which its contract does not declare; "
                f"add it to emits= (declared: {', '.join(sorted(self._emits)) or 'none'})",
                event_type=event_type,
                data=data,
            )
        return _validate(self._emits[event_type], data, "emitted", event_type)

    def completed(self, output: Any, *, event_type: str | None = None) -> Any:
        """The validated completion output (unchanged when no model is declared)."""
        if self.output is None:
            return output
        try:
            return self.output.model_validate(output).model_dump(mode="json")
        except ValidationError as exc:
            raise ContractViolation(
                f"output does not fit {self.output.__name__}: {explain(exc)}",
                event_type=event_type,
                data=output,
            ) from None
