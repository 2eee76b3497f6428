"""The sample app, with the worker's commits answering as if lost now and then.

Every fifth ``commit_transaction`` of the worker's producer commits and then raises, as when
the sender dies or the commit timeout passes after EndTxn was written: the transaction
is committed, and its lanes believe it failed. ``tests/agents/test_worker.py`` loads it
with ``garrison worker tests.lost_answer_app``.
"""

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from tests.samples import sample_registry

registry = sample_registry()

_commit = AIOKafkaProducer.commit_transaction
_commits = 0


async def _committed_but_lost(self: AIOKafkaProducer) -> None:
    global _commits
    await _commit(self)
    if ".dispatch." in (self._txn_manager.transactional_id or ""):
        _commits += 1
        if _commits % 5 == 0:
            raise KafkaConnectionError("injected: the commit's answer was lost")


AIOKafkaProducer.commit_transaction = _committed_but_lost  # type: ignore[method-assign]
