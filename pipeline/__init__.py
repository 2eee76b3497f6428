"""garrison: persistent, multi-tenant state machines on Kafka.

The public API of the pure core. Nothing imported here touches Kafka, Faust or
RocksDB, so machines can be unit-tested, property-tested and replayed anywhere.
"""

from pipeline.address import Address, check_id
from pipeline.answer import Answer
from pipeline.behaviour import Behaviour
from pipeline.chart_machine import ChartMachine
from pipeline.contract import Contract, ServiceError, error_event_type
from pipeline.diagram import mermaid
from pipeline.effect import CancelTimer, Emit, Next, SetTimer
from pipeline.envelope import Event, decode_event, encode_event, new_event
from pipeline.errors import (
    AnswerTimeout,
    ContractViolation,
    GarrisonError,
    InvalidAddress,
    InvalidDefinition,
    InvalidEvent,
    InvalidOperation,
    InvalidOutput,
    InvalidState,
    ReducerFailed,
    Rejected,
    TransitionNotAllowed,
    UnknownEventType,
    UnknownMachine,
    WriteRejected,
)
from pipeline.kv import Scope
from pipeline.listener import Listener, ListenerContext
from pipeline.machine import Incoming, Machine
from pipeline.outcome import Outcome, StateChange
from pipeline.record import Record
from pipeline.registry import Registry
from pipeline.settings import Settings
from pipeline.step import fold, step
from pipeline.trigger import KeyChange, TriggerContext
from pipeline.view import Collect, Slice, View

__all__ = [
    "Address",
    "check_id",
    "CancelTimer",
    "Emit",
    "Next",
    "SetTimer",
    "Event",
    "decode_event",
    "encode_event",
    "new_event",
    "ContractViolation",
    "GarrisonError",
    "InvalidAddress",
    "InvalidDefinition",
    "InvalidEvent",
    "InvalidOutput",
    "InvalidState",
    "ReducerFailed",
    "Rejected",
    "UnknownEventType",
    "UnknownMachine",
    "Listener",
    "ListenerContext",
    "Behaviour",
    "Incoming",
    "Machine",
    "Outcome",
    "StateChange",
    "Record",
    "Registry",
    "Settings",
    "fold",
    "step",
    "ChartMachine",
    "TransitionNotAllowed",
    "Contract",
    "ServiceError",
    "error_event_type",
    "mermaid",
    "Answer",
    "AnswerTimeout",
    "InvalidOperation",
    "KeyChange",
    "Scope",
    "TriggerContext",
    "WriteRejected",
    "View",
    "Collect",
    "Slice",
]
