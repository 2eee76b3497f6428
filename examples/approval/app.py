"""Document approval: ``garrison worker examples.approval.app``.

ZoopFlow's ``documentApproval`` workflow, ported. Temporal waits in workflow code
(``waitForCondition``) with a signal handler and a query handler beside it; in garrison
the waiting is the state itself, ``PENDING``, and what ends it are events:

- ``approval.requested`` opens a request for a reviewer and arms two durable timers:
  ``reminder``, every ``remind_every_s`` (a reminder counted in the state; a listener on
  ``reminders`` would mail the reviewer), and ``timeout``, once, after ``timeout_s``;
- ``approvalDecision`` is the signal: it approves or rejects with a comment and
  disarms both timers (a decision on a request no longer pending is refused: its dead
  letter says why);
- the ``timeout`` firing ends a request nobody decided: ``TIMED_OUT``.

``getApprovalState`` is the query (``garrison query acme approval doc-1
getApprovalState``, ``client.query(...)``); ``pending`` is a computed value. The update
that returns the new state is ``examples.update.send_and_wait(..., "approvalDecision",
...)``, and a client waits for the outcome with ``client.wait_for(..., lambda s:
s["status"] != "PENDING", timeout)``, as ZoopFlow's workflow waits for its condition.

Try it::

    garrison kafka up
    garrison worker examples.approval.app &
    garrison send acme approval doc-1 approval.requested \\
        --data '{"document": "doc-1", "reviewer": "ann", "timeout_s": 3600}'
    garrison send acme approval doc-1 approvalDecision --data '{"approved": true, "comment": "ok"}'
    garrison query acme approval doc-1 getApprovalState
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline import CancelTimer, Incoming, Machine, Next, Registry, SetTimer

__all__ = ["Approval", "ApprovalView", "approval", "registry"]


class Comment(BaseModel):
    """A reviewer's comment, with the time of the decision."""

    text: str
    time_ms: int


class Approval(BaseModel):
    """The approval state (ZoopFlow's ``approvalState``)."""

    status: Literal["PENDING", "APPROVED", "REJECTED", "TIMED_OUT"] = "PENDING"
    document: str = ""
    assigned_to: str = ""
    created_ms: int = 0
    decided_ms: int | None = None
    comments: list[Comment] = []
    reminders: int = 0


class Requested(BaseModel):
    """Payload of ``approval.requested``."""

    model_config = ConfigDict(extra="forbid")
    document: str
    reviewer: str
    timeout_s: float = Field(default=7 * 24 * 3600, gt=0)
    remind_every_s: float = Field(default=24 * 3600, gt=0)


class Decision(BaseModel):
    """Payload of the ``approvalDecision`` signal."""

    model_config = ConfigDict(extra="forbid")
    approved: bool
    comment: str = ""


class ApprovalView(BaseModel):
    """What ``getApprovalState`` answers."""

    status: str
    document: str
    assigned_to: str
    comments: list[str]
    reminders: int


approval: Machine[Approval] = Machine("approval", state=Approval)


@approval.on("approval.requested")
def requested(config: None, state: Approval, event: Incoming[Requested]) -> Next:
    """Open the request; the reminder and the timeout are timers, as durable as the state."""
    ask = event.data
    return Next(
        Approval(document=ask.document, assigned_to=ask.reviewer, created_ms=event.time_ms),
        SetTimer(
            "reminder",
            "approval.reminded",
            after=timedelta(seconds=ask.remind_every_s),
            every=timedelta(seconds=ask.remind_every_s),
        ),
        SetTimer("timeout", "approval.timed_out", after=timedelta(seconds=ask.timeout_s)),
    )


@approval.on("approvalDecision")
def decided(config: None, state: Approval, event: Incoming[Decision]) -> Next:
    """The signal: decide a pending request."""
    if state.status != "PENDING":
        raise ValueError(f"the request is {state.status} already; a decision needs PENDING")
    comments = [*state.comments, Comment(text=event.data.comment, time_ms=event.time_ms)]
    return Next(
        state.model_copy(
            update={
                "status": "APPROVED" if event.data.approved else "REJECTED",
                "decided_ms": event.time_ms,
                "comments": comments,
            }
        ),
        CancelTimer("reminder"),
        CancelTimer("timeout"),
    )


@approval.on("approval.reminded")
def reminded(config: None, state: Approval, event: Incoming[None]) -> Approval:
    """The periodic reminder fired: one more reminder sent."""
    return state.model_copy(update={"reminders": state.reminders + 1})


@approval.on("approval.timed_out")
def timed_out(config: None, state: Approval, event: Incoming[None]) -> Next:
    """Nobody decided in time."""
    return Next(
        state.model_copy(update={"status": "TIMED_OUT", "decided_ms": event.time_ms}),
        CancelTimer("reminder"),
    )


@approval.query("getApprovalState", result=ApprovalView)
def get_approval_state(config: None, state: Approval) -> ApprovalView:
    """ZoopFlow's query handler, as a pure function of the state."""
    return ApprovalView(
        status=state.status,
        document=state.document,
        assigned_to=state.assigned_to,
        comments=[c.text for c in state.comments],
        reminders=state.reminders,
    )


@approval.computed("pending")
def pending(config: None, state: Approval) -> bool:
    """Whether the request still waits for a decision."""
    return state.status == "PENDING"


registry = Registry([approval])
