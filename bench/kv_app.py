"""The app of the key-value bench part: ``garrison worker bench.kv_app``.

The bench's counter machine (for the dispatch baseline and ``client.update``) and one
key-value scope, ``bench`` (for ``client.state.set`` and the HTTP reads).
"""

from __future__ import annotations

from bench.app import counter
from pipeline import Registry, Scope

__all__ = ["SCOPE", "registry"]

SCOPE = "bench"

registry = Registry([counter, Scope(SCOPE)])
