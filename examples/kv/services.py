"""What the key-value examples' triggers call: a mailbox and a feature-flag reloader.

In memory, so a test (or the demo) can look at what the triggers did. A trigger is
at-least-once: after a crash it may run again, so a real mailer would de-duplicate by
the change's ``event_id``, as :class:`Mailbox` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FlagReloads", "Mailbox", "Services"]


@dataclass
class Mailbox:
    """Sent mails, once per change that caused them."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    async def send(self, to: str, text: str, *, key: str) -> None:
        """Send ``text`` to ``to`` unless the change ``key`` sent it already."""
        if key not in self._seen:
            self._seen.add(key)
            self.sent.append((to, text))


@dataclass
class FlagReloads:
    """Feature-flag reloads: (tenant, config key, the flags that changed)."""

    reloads: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def reload(self, tenant: str, key: str, changed: dict[str, Any]) -> None:
        """Tell the (imagined) fleet that ``changed`` flags of ``key`` have new values."""
        self.reloads.append((tenant, key, changed))


@dataclass
class Services:
    """The services of the key-value examples' registry."""

    mail: Mailbox = field(default_factory=Mailbox)
    flags: FlagReloads = field(default_factory=FlagReloads)
