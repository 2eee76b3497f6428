"""The restore comparison restores every record in each of its variants, and puts
garrison's restore path back after each (``bench.restore_paths``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tables.changelog as changelog
from bench.restore_paths import _VARIANTS, _fill, _round

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_every_variant_restores_every_record_and_garrisons_path_is_back(
    kafka_bootstrap: str, topic_factory, tmp_path: Path
) -> None:
    topic = await topic_factory("restore-paths", partitions=4)
    await _fill(kafka_bootstrap, topic, 4_000)
    for name in _VARIANTS:
        read, cpu = await _round(kafka_bootstrap, topic, name, tmp_path)
        assert read == 4_000, name
        assert cpu > 0
        patched = changelog.aiokafka_fetcher.PartitionRecords._consumer_record  # noqa: SLF001
        assert patched is changelog._record_as_parsed  # noqa: SLF001
        assert changelog.gc.isenabled()
