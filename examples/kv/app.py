"""The key-value examples as one app: users (:mod:`.users`), configuration
(:mod:`.config`) and a cache with TTL (:mod:`.cache`).

Run it: ``garrison worker examples.kv.app`` (applies the writes, serves the reads) and
``garrison listen examples.kv.app`` (runs the triggers); then e.g.
``garrison kv set acme users u1 '{"name": "Ann", "email": "ann@x"}'``.
"""

from __future__ import annotations

from examples.kv import cache, config, users
from examples.kv.services import Services
from pipeline import Registry

__all__ = ["registry"]

registry = Registry(services=Services())
users.register(registry)
config.register(registry)
cache.register(registry)
