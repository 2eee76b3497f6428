"""Operating a worker and a listener on the real broker: /metrics counts a known run,
one trace follows an event through the worker, a listener and back, /ready turns
ready after recovery, and the logs say what an operator needs.

One worker (``tests.listen_app``, traced to a file) and one ``garrison listen``
process (traced to another file, JSON logs) serve the whole module; each test counts
what it adds (the difference of two scrapes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from agents.tracing import traceparent_of
from garrison.process import ROOT
from pipeline import Event, StateChange, encode_event
from tests.harness import WorkerProcess, curl, free_port, produce, read_topic, settings_env
from tests.harness import wait_until as wait

pytestmark = pytest.mark.asyncio(loop_scope="function")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Listener:
    """``garrison listen tests.listen_app`` in a subprocess."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "garrison", "listen", "tests.listen_app"],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("observe")
    app = f"obs-{os.getpid()}-{int(time.time() * 1000) % 100_000}"
    common = {
        "tracing_enabled": "true",
        "tracing_exporter": "file",
    }
    env = settings_env(
        kafka_bootstrap,
        app,
        work / "data",
        tracing_file=str(work / "worker-spans.jsonl"),
        log_format="json",
        **common,
    )
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export spans within 0.1 s
    worker = WorkerProcess("tests.listen_app", env, work / "worker.log")
    worker.start()
    port = env["GARRISON_WEB_PORT"]
    listener_env = {
        **env,
        "GARRISON_TRACING_FILE": str(work / "listener-spans.jsonl"),
        "GARRISON_WEB_LISTENER_PORT": str(free_port()),
        "GARRISON_LOG_FORMAT": "json",
    }
    listener: Listener | None = None
    try:
        deadline = time.monotonic() + 120
        while curl(port, "/ready")[0] != 200:
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.3)
        listener = Listener(listener_env, work / "listener.log")
        yield {
            "env": env,
            "worker": worker,
            "port": port,
            "listener": listener,
            "listener_port": listener_env["GARRISON_WEB_LISTENER_PORT"],
            "work": work,
        }
    finally:
        if listener is not None:
            listener.stop()
        worker.stop()


def scrape(port: str | int) -> Samples:
    status, body = curl(port, "/metrics")
    assert status == 200, body
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _event(i: int, instance: str, data: Any, *, id: str | None = None, **kw: Any) -> Event:
    return Event(
        id or f"ob-{i}-{time.monotonic_ns()}",
        kw.get("type", "counter.added"),
        "tests",
        "acme",
        kw.get("machine", "counter"),
        instance,
        1_700_000_000_000 + i,
        data,
        None,
        None,
        kw.get("traceparent"),
    )


async def test_metrics_count_a_known_run(world: dict[str, Any], kafka_bootstrap: str) -> None:
    port, env = world["port"], world["env"]
    before = scrape(port)
    good = [_event(i, f"m{i % 5}", {"amount": 1}) for i in range(30)]
    dup = good[0]
    bad_contract = [_event(100 + i, "m-bad", {"amount": "lots"}) for i in range(3)]
    records = [(b"acme", encode_event(e)) for e in [*good, dup, *bad_contract]]
    records += [(b"acme", b"{not json"), (b"acme", b"[1, 2]")]  # stage decode
    await produce(kafka_bootstrap, f"{env['GARRISON_APP']}.events", records)

    def counted() -> Samples | None:
        now = scrape(port)
        done = value(now, "garrison_events_applied_total", machine="counter") - value(
            before, "garrison_events_applied_total", machine="counter"
        )
        letters = sum(v for (n, _), v in now.items() if n == "garrison_dead_letters_total")
        letters -= sum(v for (n, _), v in before.items() if n == "garrison_dead_letters_total")
        return now if done >= 30 and letters >= 5 else None

    after = await wait(
        counted, timeout_s=60, what="the run's counts", describe=world["worker"].log_tail
    )

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("garrison_events_applied_total", machine="counter") == 30
    assert delta("garrison_events_duplicate_total", machine="counter") == 1
    assert delta("garrison_dead_letters_total", stage="contract", machine="counter") == 3
    assert delta("garrison_dead_letters_total", stage="decode", machine="") == 2
    assert delta("garrison_batch_records_count") >= 1
    assert delta("garrison_batch_records_sum") >= 36  # every record of the run, in batches
    assert delta("garrison_transaction_commit_seconds_count") >= 1
    assert value(after, "garrison_ready") == 1
    assert value(after, "garrison_partitions_serving") == 4
    for p in range(4):
        assert ("garrison_consumer_lag", (("partition", str(p)),)) in after
        assert ("garrison_state_keys_estimate", (("partition", str(p)),)) in after
    # Dead letters are logged at warning with their stage and reason.
    log = world["worker"].log_tail(400)
    assert "dead letter: partition" in log
    assert "stage contract" in log
    assert "stage decode" in log


async def test_one_trace_follows_an_event_through_worker_listener_and_back(
    world: dict[str, Any], kafka_bootstrap: str
) -> None:
    env, work = world["env"], world["work"]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("test.produce") as root:
        parent, _ = traceparent_of(root)
    ev = _event(0, "traced-1", {"amount": 2}, traceparent=parent)
    await produce(kafka_bootstrap, f"{env['GARRISON_APP']}.events", [(b"acme", encode_event(ev))])
    [span] = exporter.get_finished_spans()
    trace_id = f"0x{span.context.trace_id:032x}"

    def spans(name: str) -> list[dict[str, Any]]:
        path = work / name
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [s for s in found if s["context"]["trace_id"] == trace_id]

    def whole() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        w, lst = spans("worker-spans.jsonl"), spans("listener-spans.jsonl")
        return (w, lst) if len(w) >= 2 and len(lst) >= 1 else None

    def describe() -> str:
        return world["worker"].log_tail() + "\n" + world["listener"].tail()

    worker_spans, listener_spans = await wait(
        whole, timeout_s=60, what="the trace's spans", describe=describe
    )
    by_id = {s["context"]["span_id"]: s for s in worker_spans + listener_spans}
    apply = next(s for s in worker_spans if s["attributes"]["garrison.machine"] == "counter")
    assert apply["name"] == "garrison.apply"
    assert apply["parent_id"] == f"0x{span.context.span_id:016x}"  # the producer's span
    assert apply["attributes"]["garrison.verdict"] == "applied"
    [run] = listener_spans
    assert run["name"] == "garrison.listener echo"
    assert by_id[run["parent_id"]] is apply  # the state change carried the apply span
    pong = next(s for s in worker_spans if s["attributes"]["garrison.machine"] == "pinger")
    assert by_id[pong["parent_id"]] is run  # the event the listener sent carried its span

    # The records themselves carry the context: the state change's headers.
    changes = await read_topic(
        kafka_bootstrap,
        f"{env['GARRISON_APP']}.state-changes",
        until=lambda rs: any(b"traced-1" in (r.value or b"") for r in rs),
        timeout_s=30,
    )
    [change] = [
        r
        for r in changes
        if StateChange.from_json(r.value)[1:3] == ("counter", "traced-1")  # machine, instance
    ]
    headers = dict(change.headers)
    assert headers["traceparent"].decode().split("-")[2] == apply["context"]["span_id"][2:]


async def test_the_listener_serves_health_ready_and_metrics_and_logs_json(
    world: dict[str, Any],
) -> None:
    port = world["listener_port"]
    status, body = await wait(
        lambda: (s := curl(port, "/ready"))[0] == 200 and s,
        timeout_s=60,
        what="the listener ready",
        describe=world["listener"].tail,
    )
    assert body == {"ready": True, "app": world["env"]["GARRISON_APP"], "listeners": ["echo"]}
    assert curl(port, "/health")[0] == 200
    runs = await wait(
        lambda: value(scrape(port), "garrison_listener_runs_total", listener="echo"),
        timeout_s=60,
        what="a counted listener run",
        describe=world["listener"].tail,
    )
    assert runs >= 1
    samples = scrape(port)
    assert value(samples, "garrison_listener_ready") == 1
    assert value(samples, "garrison_listener_run_seconds_count", listener="echo") >= runs
    assert value(samples, "garrison_listener_sent_events_total", listener="echo") >= runs
    lines = [
        json.loads(line) for line in world["listener"].tail().splitlines() if line.startswith("{")
    ]
    ready = [line for line in lines if "garrison listener ready" in line["message"]]
    assert ready, world["listener"].tail()
    assert ready[0]["level"] == "WARNING"
    assert ready[0]["app"] == world["env"]["GARRISON_APP"]


async def test_ready_turns_ready_after_a_restore(
    world: dict[str, Any], kafka_bootstrap: str
) -> None:
    env, worker, port = world["env"], world["worker"], world["port"]
    events = [_event(i, "restored-1", {"amount": 1}) for i in range(20)]
    await produce(
        kafka_bootstrap,
        f"{env['GARRISON_APP']}.events",
        [(b"acme", encode_event(e)) for e in events],
    )

    def seq() -> int:
        status, body = curl(port, "/state/acme/counter/restored-1")
        return int(body["seq"]) if status == 200 else 0

    await wait(lambda: seq() == 20, timeout_s=60, what="seq 20", describe=worker.log_tail)
    worker.stop()
    shutil.rmtree(env["GARRISON_DATA_DIR"])  # a new machine: everything from the changelog
    worker.start()
    answers = []
    deadline = time.monotonic() + 120
    while True:
        status, _ = curl(port, "/ready")
        answers.append(status)
        if status == 200:
            break
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.1)
    assert set(answers[:-1]) <= {0, 503}  # refused or not ready, then ready
    assert seq() == 20  # ready means served: the restored state is there
    samples = scrape(port)
    assert value(samples, "garrison_restore_records_total") > 0
    assert value(samples, "garrison_restore_remaining_records") == 0
    lines = [json.loads(line) for line in worker.log_tail(400).splitlines() if line[:1] == "{"]
    ready = [line for line in lines if line["message"].startswith("garrison worker ready")]
    assert ready, worker.log_tail()
    assert ready[-1]["level"] == "WARNING"
    assert ready[-1]["message"] == (
        f"garrison worker ready: app {env['GARRISON_APP']}, partitions [0, 1, 2, 3], "
        f"web http://127.0.0.1:{port}"
    )
    assert ready[-1]["partitions"] == [0, 1, 2, 3]
