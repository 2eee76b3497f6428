"""garrison's shell: what a user runs or imports to talk to Kafka.

The ``garrison`` command (:mod:`garrison.cli`, also ``python -m garrison``), the producer
:class:`Client`, the local Kafka runner (:mod:`garrison.local_kafka`) and the worker
process helper (:mod:`garrison.process`). Machines are defined with the pure core,
``pipeline``; the runtime is ``agents``; state at rest is ``tables``.
"""

from importlib.metadata import PackageNotFoundError, version

from garrison.client import Client
from garrison.query import QueryRefused
from garrison.waiter import Seen, WaitTimedOut
from pipeline.settings import Settings

try:
    __version__ = version("garrison")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["Client", "QueryRefused", "Seen", "Settings", "WaitTimedOut", "__version__"]
