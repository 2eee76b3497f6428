"""Restore time and memory of a garrison worker holding the whole workload's instances.

After the throughput run, the worker's peak RSS (VmHWM) is read and a sample of its
instances is read through its query API. Then it is stopped, its data dir (the local
RocksDB) is deleted, and a fresh worker starts with the same app id. It is ready when
``GET /state/<tenant>/counter/<instance>`` returns the same seq for every sampled
instance; the restore time runs from the fresh process's start to that moment (so it
includes Python and Faust start-up, group join and the changelog replay).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.system import Process, Run, free_port
from bench.topic import Watcher
from bench.workload import MACHINE, Expected

__all__ = ["Restore", "measure_restore"]


@dataclass
class Restore:
    """What restoring took."""

    seconds: float | None
    sampled: int
    changelog_offsets: int
    rss_mib: float | None  # the worker that processed the workload
    rss_restored_mib: float | None  # the fresh worker, once restored
    note: str


def _get_seq(port: str, tenant: str, instance: str) -> int | None:
    url = f"http://127.0.0.1:{port}/state/{tenant}/{MACHINE}/{instance}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local worker
            body: dict[str, Any] = json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None
    seq = body.get("seq")
    return seq if isinstance(seq, int) else None


async def measure_restore(
    run: Run, worker: Process, sample: list[Expected], *, timeout_s: float
) -> Restore:
    """Stop ``worker``, wipe its local state, time a fresh worker's restore."""
    port = worker.env["GARRISON_WEB_PORT"]
    expected: dict[tuple[str, str], int] = {}
    for e in sample:
        seq = await asyncio.to_thread(_get_seq, port, e.tenant, e.instance)
        if seq is not None:
            expected[(e.tenant, e.instance)] = seq
    rss = worker.peak_rss_mib()
    async with Watcher(run.bootstrap) as watch:
        changelog = await watch.high_water(f"{run.app}-state-changelog")
    await asyncio.to_thread(worker.stop)
    if not expected:
        return Restore(
            None, 0, changelog, rss, None, "the worker's query API answered for no sampled instance"
        )
    shutil.rmtree(Path(worker.env["GARRISON_DATA_DIR"]), ignore_errors=True)
    fresh = Process(
        "garrison-restore",
        worker.argv,
        {**worker.env, "GARRISON_WEB_PORT": str(free_port())},
        worker.log_path.with_name("garrison-restore.log"),
        worker.affinity,
    )
    run.processes.append(fresh)
    fresh.start()
    new_port = fresh.env["GARRISON_WEB_PORT"]
    pending = dict(expected)
    note = "ok"
    try:
        while pending:
            if not fresh.alive():
                note = f"the fresh worker exited; see {fresh.log_path}"
                break
            if time.monotonic() - fresh.started > timeout_s:
                note = f"{len(pending)} sampled instances not restored within {timeout_s:.0f} s"
                break
            # In order, and no further than the first one not restored: the worker is
            # busy replaying, so the polling stays at about one request per round.
            for (tenant, instance), seq in list(pending.items()):
                if await asyncio.to_thread(_get_seq, new_port, tenant, instance) != seq:
                    break
                del pending[(tenant, instance)]
            if pending:
                await asyncio.sleep(0.5)
        seconds = None if pending else time.monotonic() - fresh.started
        rss_restored = fresh.peak_rss_mib()
    finally:
        await asyncio.to_thread(fresh.stop)
    return Restore(seconds, len(expected), changelog, rss, rss_restored, note)
