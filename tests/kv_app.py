"""The key-value app workers load in broker tests (``garrison worker tests.kv_app``):
the sample machines plus three scopes, one with a short default TTL."""

from datetime import timedelta

from pipeline import Scope
from tests.samples import sample_registry

registry = sample_registry()
for scope in (Scope("users"), Scope("config"), Scope("cache", ttl=timedelta(seconds=60))):
    registry.add(scope)
