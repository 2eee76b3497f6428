"""The four query/view/wait examples in one app, so their scenario tests share one worker
(``garrison worker tests.query_examples_app``); their machine names do not overlap."""

from examples.approval.app import approval
from examples.batch.app import batch
from examples.cart.app import cart
from examples.nodes.app import dashboard, inventory, order
from pipeline import Registry

registry = Registry([approval, batch, cart, inventory, order, dashboard])
