"""The error tree: one root, definition errors apart from runtime rejections.

Definition errors (:class:`InvalidDefinition`) are raised when a machine, chart or
listener is defined, so a mistake surfaces at import time. Runtime rejections
(:class:`Rejected` and its children) carry the data they were raised for; the
pipeline turns them into dead-letter records instead of stopping a worker.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GarrisonError",
    "InvalidDefinition",
    "InvalidAddress",
    "Rejected",
    "InvalidEvent",
    "ContractViolation",
    "UnknownMachine",
    "UnknownEventType",
    "ReducerFailed",
    "InvalidState",
    "TransitionNotAllowed",
    "InvalidOutput",
    "ForgedEvent",
    "InvalidOperation",
    "AnswerTimeout",
    "WriteRejected",
]


class GarrisonError(Exception):
    """Root of every error garrison raises on purpose."""


class InvalidDefinition(GarrisonError):
    """A machine, chart, contract or listener is defined wrongly; raised at definition."""


class InvalidAddress(GarrisonError, ValueError):
    """A tenant, machine or instance id breaks the id rules; the message names the fix."""


class Rejected(GarrisonError):
    """An event could not be applied. ``stage`` names the step that refused it."""

    stage = "rejected"

    def __init__(self, reason: str, *, event_type: str | None = None, data: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_type = event_type
        self.data = data


class InvalidEvent(Rejected):
    """The bytes are not a valid garrison CloudEvent (JSON, attributes, ids)."""

    stage = "decode"


class ForgedEvent(Rejected):
    """The event claims to be garrison's own (a timer firing, a ``garrison.*`` type) but
    did not come from garrison's delivery path."""

    stage = "origin"


class UnknownMachine(Rejected):
    """The event names a machine this worker does not define."""

    stage = "route"


class UnknownEventType(Rejected):
    """The machine has no reducer or transition for this event type."""

    stage = "route"


class ContractViolation(Rejected):
    """A payload, emitted event or output breaks the pydantic contract declared for it."""

    stage = "contract"


class ReducerFailed(Rejected):
    """The user's reducer, guard or action raised."""

    stage = "reducer"


class InvalidState(Rejected):
    """The new state a reducer returned does not fit the machine's state model."""

    stage = "state"


class TransitionNotAllowed(Rejected):
    """A declared event that the instance cannot take now: no transition for it is
    enabled in the current state (guards included), or the machine is done.
    ``value`` is the chart's state value when it was refused."""

    stage = "transition"

    def __init__(
        self, reason: str, *, event_type: str | None = None, data: Any = None, value: Any = None
    ) -> None:
        super().__init__(reason, event_type=event_type, data=data)
        self.value = value


class InvalidOutput(Rejected):
    """What applying the event would produce cannot be produced: a state, timer or
    emitted event that is not JSON, a record over the size limit, an undeclared topic."""

    stage = "output"


class InvalidOperation(Rejected):
    """A key-value update operation that cannot be applied: an unknown operation, a
    path into something that is not an object, a number operation on a non-number. The
    whole update is refused; the stored value is unchanged."""

    stage = "operation"


class AnswerTimeout(GarrisonError, TimeoutError):
    """No answer to a sent event arrived in time (``Client.update``). The event may
    still be applied later: send it again with the same id to learn its outcome (the
    answer is then ``duplicate`` if it was applied)."""

    def __init__(self, message: str, *, event_id: str) -> None:
        super().__init__(message)
        self.event_id = event_id


class WriteRejected(GarrisonError):
    """A key-value write the pipeline refused (its dead letter's stage and reason)."""

    def __init__(self, message: str, *, stage: str, reason: str, event_id: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.event_id = event_id
