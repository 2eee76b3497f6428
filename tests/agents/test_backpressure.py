"""One partition's backlog does not hold up the worker's other partitions (real broker).

A lane with four batches' worth queued has its partition paused in the fetch loop; the
fetch loop itself never waits for it. Before, it waited for that lane's room, so every
other partition of the worker waited behind one backlogged tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.kafka import partition_of
from pipeline import StateChange, encode_event
from tests.harness import (
    drain_topic,
    free_port,
    produce,
    read_topic,
    serving_worker,
    settings_env,
)
from tests.samples import event

pytestmark = pytest.mark.asyncio(loop_scope="function")

BACKLOG = 2000


def _tenants(partitions: int) -> tuple[str, str]:
    """Two tenants on different partitions."""
    first = "busy"
    other = next(
        f"quiet{i}"
        for i in range(100)
        if partition_of(f"quiet{i}".encode(), partitions) != partition_of(b"busy", partitions)
    )
    return first, other


async def test_a_backlogged_partition_does_not_hold_up_the_others(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    # Batches of 5 (an inbox of 20 records): the busy tenant's 2,000 events take 400
    # transactions one after another in its lane, seconds of work.
    env = settings_env(kafka_bootstrap, unique("bp"), tmp_path / "w", partitions=2, batch_size="5")
    busy, quiet = _tenants(2)
    topic = f"{env['GARRISON_APP']}.events"
    changes = f"{env['GARRISON_APP']}.state-changes"
    with serving_worker("tests.sample_app", env, tmp_path / "w.log") as worker:
        backlog: list[tuple[bytes | None, bytes | None]] = [
            (busy.encode(), encode_event(event(id=f"b{n}", tenant=busy, instance=f"c{n % 50}")))
            for n in range(BACKLOG)
        ]
        await produce(kafka_bootstrap, topic, backlog)
        # The busy lane is under way (its partition paused now and then) ...
        await read_topic(
            kafka_bootstrap,
            changes,
            until=lambda rs: len(rs) >= 100,
            timeout_s=60,
            describe=worker.log_tail,
        )
        # ... and the quiet tenant's events, sent after all of the backlog, are applied
        # while most of it still waits.
        await produce(
            kafka_bootstrap,
            topic,
            [(quiet.encode(), encode_event(event(id=f"q{n}", tenant=quiet))) for n in range(5)],
        )

        def quiet_done(records: list[object]) -> bool:
            return sum(StateChange.from_json(r.value).tenant == quiet for r in records) == 5  # type: ignore[attr-defined]

        seen = await read_topic(
            kafka_bootstrap, changes, until=quiet_done, timeout_s=60, describe=worker.log_tail
        )
        busy_applied = sum(StateChange.from_json(r.value).tenant == busy for r in seen)
        assert busy_applied < BACKLOG * 0.8, (
            f"the quiet tenant's events waited for {busy_applied:,} of the busy tenant's "
            f"{BACKLOG:,}\n{worker.log_tail()}"
        )
        # A second worker joins mid-backlog: in the rebalance every lane stops, the busy
        # one with its partition paused, and the partitions are shared out again (the
        # next lane seeks and resumes its own); nothing is lost or applied twice.
        env_b = {
            **env,
            "GARRISON_DATA_DIR": str(tmp_path / "b"),
            "GARRISON_WEB_PORT": str(free_port()),
        }
        with serving_worker("tests.sample_app", env_b, tmp_path / "b.log") as second:
            done = await read_topic(
                kafka_bootstrap,
                changes,
                until=lambda rs: len(rs) >= BACKLOG + 5,
                timeout_s=120,
                describe=lambda: worker.log_tail() + second.log_tail(),
            )
            await asyncio.sleep(2)  # a change applied twice would come after the last one
            done = await drain_topic(kafka_bootstrap, changes)
        ids = [StateChange.from_json(r.value).event_id for r in done]
        assert sorted(ids) == sorted(
            [f"b{n}" for n in range(BACKLOG)] + [f"q{n}" for n in range(5)]
        )
