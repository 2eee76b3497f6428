"""The sample app, with a worker that can be made a zombie: while the file named by
``TEST_MISBEHAVE_FLAG`` exists, its consumer sends no heartbeat (as when its
consumer thread stalls), so the group drops it after the session timeout while its lanes
go on applying and committing. ``tests/scenarios/test_faults.py`` loads it with
``garrison worker tests.zombie_app``.
"""

import asyncio
import os
from pathlib import Path
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator

from tests.samples import sample_registry

registry = sample_registry()

_FLAG = Path(os.environ["TEST_MISBEHAVE_FLAG"])
_heartbeat = GroupCoordinator._do_heartbeat  # noqa: SLF001


async def _heartbeat_unless_stalled(self: Any) -> Any:
    while _FLAG.exists():
        await asyncio.sleep(0.1)
    return await _heartbeat(self)


GroupCoordinator._do_heartbeat = _heartbeat_unless_stalled  # type: ignore[method-assign]  # noqa: SLF001
