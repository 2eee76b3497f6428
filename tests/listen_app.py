"""A listener app for ``garrison listen`` in broker tests: every counter change is echoed
back as a ``pinger.pong`` event, so a test can count what the listener did."""

from typing import Any

from pipeline import Registry, StateChange
from tests.samples import counter_machine, pinger_machine

registry = Registry([counter_machine(), pinger_machine()])


@registry.listener(machine="counter")
async def echo(change: StateChange, ctx: Any) -> None:
    await ctx.send("pinger", change.instance, "pinger.pong", {"seq": change.seq})
