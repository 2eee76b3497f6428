"""The shop app broker tests of views, queries and waiting load
(``garrison worker tests.view_app``): ``tests.pipeline.shop``'s machines."""

from tests.pipeline.shop import shop_registry

registry = shop_registry()
