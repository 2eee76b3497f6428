"""The app the trust-at-the-edges broker tests run (``garrison worker tests.trust_app``).

- ``chat``: casern's chatbot ported literally: ``checkTimeout`` sets
  ``state.status = "timeout"`` on the state it was given and returns it;
- ``session``: an instance that expires after 2 s without events;
- ``shout``: emits to service topics it declares (or one it does not) and grows its
  state on demand, to meet Kafka's limits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from pipeline import CancelTimer, Emit, Machine, Next, Registry, SetTimer, StateChange
from pipeline.listener import ListenerContext

SERVICE_TOPIC, SMALL_TOPIC = "trust.svc", "trust.small"


class Chat(BaseModel):
    status: str = "inquired"
    name: str = ""
    when_ms: int = 0


chat: Machine[Chat] = Machine("chat", state=Chat)


@chat.on("chat.inquired")
def initial_inquiry(config: Any, state: Chat, event: Any) -> Next:
    state.name = event.data["name"]
    state.when_ms = event.time_ms
    return Next(state, SetTimer("check", "chat.timeout_checked", after=timedelta(seconds=1)))


@chat.on("chat.timeout_checked")
def check_timeout(config: Any, state: Chat, event: Any) -> Any:
    if state.status == "inquired":
        state.status = "timeout"  # in place, as casern's reducer does
    return Next(state, CancelTimer("check"))


@chat.on("chat.escalated")
def escalated(config: Any, state: Chat, event: Any) -> Chat:
    state.status = "escalated"
    return state


session: Machine[dict[str, Any]] = Machine("session", ttl=timedelta(seconds=2))


@session.on("session.touched")
def touched(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
    return {"touches": state.get("touches", 0) + 1}


shout: Machine[dict[str, Any]] = Machine("shout", topics=[SERVICE_TOPIC, SMALL_TOPIC])


@shout.on("shout.sent")
def sent(config: Any, state: dict[str, Any], event: Any) -> Next:
    size = event.data.get("size", 10)
    return Next(state, Emit("cmd", {"blob": "x" * size}, topic=event.data["to"]))


@shout.on("shout.grown")
def grown(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
    return {"blob": "x" * event.data["size"]}


@shout.on("shout.counted")
def counted(config: Any, state: dict[str, Any], event: Any) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


registry = Registry([chat, session, shout], services={"mail": []})


@registry.listener(
    machine="chat",
    when=lambda prev, cur: bool(cur) and cur["status"] == "timeout" and prev["status"] != "timeout",
)
async def email_support(change: StateChange, ctx: ListenerContext) -> None:
    ctx.services["mail"].append(change.state["name"])
    await ctx.send("chat", change.instance, "chat.escalated")
