"""The sample app, with a worker whose transactions hang in their commit: while the file
named by ``TEST_MISBEHAVE_FLAG`` exists, the worker's producer never sends EndTxn, so its
transaction stays open with its records and group offsets sent (as when a worker is
killed between the two). ``tests/scenarios/test_faults.py`` loads it with
``garrison worker tests.stuck_commit_app``.
"""

import asyncio
import os
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.samples import sample_registry

registry = sample_registry()

_FLAG = Path(os.environ["TEST_MISBEHAVE_FLAG"])
_commit = AIOKafkaProducer.commit_transaction


async def _commit_unless_hung(self: AIOKafkaProducer) -> None:
    if _FLAG.exists() and ".dispatch." in (self._txn_manager.transactional_id or ""):  # noqa: SLF001
        await asyncio.Event().wait()  # until the process is killed
    await _commit(self)


AIOKafkaProducer.commit_transaction = _commit_unless_hung  # type: ignore[method-assign]
