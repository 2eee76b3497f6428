"""The chatbot app: one ``conversation`` machine per chat, per tenant.

casern's example, ported: ``initialInquiry`` and ``checkTimeout`` reducers with
``preferences``, and an ``emailSupport`` state-change listener. Where casern pulsed
``checkTimeout`` with ``setInterval`` in the producer, garrison arms a durable periodic
timer, so the check survives restarts and is part of the instance's history.

Run it: ``garrison worker examples.chatbot.app`` and ``garrison listen examples.chatbot.app``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline import CancelTimer, Machine, Next, Registry, SetTimer, StateChange
from pipeline.listener import ListenerContext

__all__ = ["Preferences", "Conversation", "Outbox", "registry", "conversation"]


class Preferences(BaseModel):
    """casern's ``preferences``: the machine's configuration."""

    model_config = ConfigDict(frozen=True)
    support_person: str = "bob@help.example"
    timeout_after: timedelta = timedelta(seconds=3)
    check_every: timedelta = timedelta(seconds=1)


class Conversation(BaseModel):
    """State of one conversation."""

    status: Literal["inquired", "answered", "timeout", "escalated"] = "inquired"
    name: str = ""
    when_ms: int = 0
    checks: int = 0
    replies: int = 0


class Inquiry(BaseModel):
    """Payload of ``chat.inquired``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    message: str = ""


class Reply(BaseModel):
    """Payload of ``chat.replied``."""

    model_config = ConfigDict(extra="forbid")
    by: str
    message: str = ""


conversation: Machine[Conversation] = Machine(
    "conversation", state=Conversation, config=Preferences(), ttl=timedelta(days=30)
)


@conversation.on("chat.inquired", payload=Inquiry)
def initial_inquiry(config: Preferences, state: Conversation, event: Any) -> Next:
    """A person asks: remember who and when, and start checking for a timeout."""
    return Next(
        Conversation(name=event.data.name, when_ms=event.time_ms),
        SetTimer(
            "check", "chat.timeout_checked", after=config.check_every, every=config.check_every
        ),
    )


@conversation.on("chat.timeout_checked")
def check_timeout(config: Preferences, state: Conversation, event: Any) -> Conversation | Next:
    """The periodic check: time out an inquiry nobody answered in time."""
    if state.status != "inquired":
        return Next(state, CancelTimer("check"))
    late = event.time_ms >= state.when_ms + config.timeout_after // timedelta(milliseconds=1)
    checked = state.model_copy(update={"checks": state.checks + 1})
    if late:
        return Next(checked.model_copy(update={"status": "timeout"}), CancelTimer("check"))
    return checked


@conversation.on("chat.replied", payload=Reply)
def replied(config: Preferences, state: Conversation, event: Any) -> Next:
    """Someone answered: the conversation is served; stop checking."""
    return Next(
        state.model_copy(update={"status": "answered", "replies": state.replies + 1}),
        CancelTimer("check"),
    )


@conversation.on("chat.escalated")
def escalated(config: Preferences, state: Conversation, event: Any) -> Conversation:
    """Support was told (by the listener below)."""
    return state.model_copy(update={"status": "escalated"})


@dataclass
class Outbox:
    """The mail service listeners call; a real deployment sends mail here."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, to: str, text: str) -> None:
        """Send one mail."""
        self.sent.append((to, text))


@dataclass
class Services:
    """casern's ``services``: what listeners may call."""

    mail: Outbox = field(default_factory=Outbox)


registry = Registry([conversation], services=Services())


def _timed_out(prev: Any, cur: Any) -> bool:
    return bool(cur and cur["status"] == "timeout" and (prev or {}).get("status") != "timeout")


@registry.listener(machine="conversation", when=_timed_out)
async def email_support(change: StateChange, ctx: ListenerContext) -> None:
    """casern's ``emailSupport``: tell support, then record the escalation."""
    await ctx.services.mail.send(
        ctx.config.support_person, f"The person {change.state['name']} has not responded"
    )
    await ctx.send(
        "conversation", change.instance, "chat.escalated", {"to": ctx.config.support_person}
    )
