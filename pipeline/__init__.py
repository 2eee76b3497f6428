"""garrison: persistent, multi-tenant state machines on Kafka.

The public API of the pure core. Nothing imported here touches Kafka, Faust or
RocksDB, so machines can be unit-tested, property-tested and replayed anywhere.
"""

from pipeline.address import Address, check_id
from pipeline.chart_machine import ChartMachine
from pipeline.contract import Contract, ServiceError, error_event_type
from pipeline.diagram import mermaid
from pipeline.effect import CancelTimer, Emit, Next, SetTimer
from pipeline.envelope import Event, decode_event, encode_event
from pipeline.errors import (
    BrokerError,
    ContractViolation,
    GarrisonError,
    InvalidAddress,
    InvalidDefinition,
    InvalidEvent,
    InvalidState,
    ReducerFailed,
    Rejected,
    TransitionNotAllowed,
    UnknownEventType,
    UnknownMachine,
)
from pipeline.listener import Listener, ListenerContext
from pipeline.machine import Behaviour, Incoming, Machine
from pipeline.outcome import Outcome, StateChange
from pipeline.record import Record
from pipeline.registry import Registry
from pipeline.settings import Settings
from pipeline.step import fold, step

__all__ = [
    "Address", "check_id", "CancelTimer", "Emit", "Next", "SetTimer", "Event",
    "decode_event", "encode_event", "BrokerError", "ContractViolation", "GarrisonError",
    "InvalidAddress", "InvalidDefinition", "InvalidEvent", "InvalidState", "ReducerFailed",
    "Rejected", "UnknownEventType", "UnknownMachine", "Listener", "ListenerContext",
    "Behaviour", "Incoming", "Machine", "Outcome", "StateChange", "Record", "Registry",
    "Settings", "fold", "step", "ChartMachine", "TransitionNotAllowed", "Contract",
    "ServiceError", "error_event_type", "mermaid",
]
