"""The sample app module workers load in broker tests (``garrison worker tests.sample_app``)."""

from tests.samples import sample_registry

registry = sample_registry()
