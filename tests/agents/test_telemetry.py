"""Metrics, trace context and log rate limits without a broker."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client.parser import text_string_to_metric_families

from agents.dispatch import DispatchStats
from agents.logs import TokenBucket, announce_ready, dead_letter_log
from agents.metrics import WorkerMetrics, render
from agents.tracing import (
    ApplySpans,
    Recorder,
    Tracing,
    context_of,
    header_context,
    setup_tracing,
    traceparent_of,
)
from pipeline.decision import Applied
from pipeline.settings import Settings
from tests.samples import event

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(render(metrics.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_committed_tally_becomes_counters_by_machine_and_stage() -> None:
    metrics = WorkerMetrics(Settings())
    tally = {("applied", "order", ""): 5, ("rejected", "", "decode"): 2}
    metrics.committed(tally, 7, 0.012)
    metrics.committed({("applied", "order", ""): 1, ("duplicate", "order", ""): 3}, 4, 0.004)
    got = _samples(metrics)
    assert got[("garrison_events_applied_total", (("machine", "order"),))] == 6
    assert got[("garrison_events_duplicate_total", (("machine", "order"),))] == 3
    assert got[("garrison_dead_letters_total", (("machine", ""), ("stage", "decode")))] == 2
    assert got[("garrison_batch_records_count", ())] == 2
    assert got[("garrison_batch_records_sum", ())] == 11
    assert got[("garrison_transaction_commit_seconds_bucket", (("le", "0.005"),))] == 1
    assert not any(name.endswith("_created") for name, _ in got)
    stats = DispatchStats()
    stats.add(tally)
    assert (stats.applied, stats.dead_letters) == (5, 2)


def test_tenants_are_a_label_only_when_asked_for() -> None:
    plain = WorkerMetrics(Settings())
    plain.committed({("applied", "order", ""): 1}, 1, 0.001)
    assert all("tenant" not in dict(labels) for _, labels in _samples(plain))
    labelled = WorkerMetrics(Settings(metrics={"tenant_label": True}))
    labelled.committed({("applied", "order", "", "acme"): 2, ("rejected", "", "output"): 1}, 3, 0.1)
    got = _samples(labelled)
    assert got[("garrison_events_applied_total", (("machine", "order"), ("tenant", "acme")))] == 2
    key = ("garrison_dead_letters_total", (("machine", ""), ("stage", "output"), ("tenant", "")))
    assert got[key] == 1


def test_trace_context_parses_w3c_and_refuses_what_is_not() -> None:
    ctx = context_of(PARENT, "k=v")
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert ctx.trace_flags.sampled
    assert ctx.trace_state.get("k") == "v"
    for bad in (
        None,
        "",
        "00-xyz",
        PARENT.replace("0af7", "0AF7"),
        "ff" + PARENT[2:],
        PARENT + "-x",
    ):
        assert context_of(bad) is None, bad
    assert context_of("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None  # an all-zero id
    assert header_context([("traceparent", PARENT.encode()), ("x", b"y")]) == (PARENT, None)


def test_spans_follow_their_parent_and_skip_a_sampled_out_one() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("t"))
    span = tracing.start("child", PARENT)
    assert span is not None
    span.end()
    [done] = exporter.get_finished_spans()
    assert done.parent is not None
    assert done.parent.span_id == 0xB7AD6B7169203331
    assert traceparent_of(span)[0].startswith("00-0af7651916cd43dd8448eb211c80319c-")  # type: ignore[union-attr]
    assert tracing.start("skipped", PARENT[:-2] + "00") is None  # the producer sampled it out
    with tracing.span("unsampled", PARENT[:-2] + "00") as carried:
        assert carried == (PARENT[:-2] + "00", None)  # the context goes on as it came
    with pytest.raises(ValueError, match="boom"), tracing.span("fails", PARENT):
        raise ValueError("boom")
    assert exporter.get_finished_spans()[-1].status.is_ok is False


class _Applied:
    offset = 7


def _apply_spans(*, recorded: bool, ratio: float = 1.0) -> tuple[ApplySpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processors = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(ratio)), active_span_processor=processors
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(provider, processors, "garrison") if recorded else None
    return ApplySpans(Tracing(provider.get_tracer("garrison"), provider, recorder), 2), exporter


def _one(
    spans: ApplySpans, exporter: InMemorySpanExporter, traceparent: str | None
) -> tuple[str | None, ReadableSpan]:
    carried = spans.begin(event()._replace(traceparent=traceparent))
    spans.end(Applied("rejected", stage="contract", reason="bad amount"), _Applied())
    [span] = exporter.get_finished_spans()
    exporter.clear()
    return carried.traceparent, span


def test_a_recorded_apply_span_is_the_span_the_sdk_would_make() -> None:
    sdk, recorded = _apply_spans(recorded=False), _apply_spans(recorded=True)
    for parent in (PARENT, None):  # a child of the event's context, and a root
        (tp_a, a), (tp_b, b) = _one(*sdk, parent), _one(*recorded, parent)
        assert (a.name, a.kind, a.status.status_code, a.status.description) == (
            b.name,
            b.kind,
            b.status.status_code,
            b.status.description,
        )
        assert dict(a.attributes or {}) == dict(b.attributes or {})
        assert a.resource == b.resource
        assert (a.parent is None) == (b.parent is None) == (parent is None)
        if parent is not None:
            assert a.parent is not None
            assert b.parent is not None
            assert (a.parent.span_id, a.context.trace_id) == (b.parent.span_id, b.context.trace_id)
        # The event goes on carrying the apply span's own context, flagged as the SDK's.
        flags = f"{int(a.context.trace_flags):02x}"
        assert tp_a == f"00-{a.context.trace_id:032x}-{a.context.span_id:016x}-{flags}"
        assert tp_b == f"00-{b.context.trace_id:032x}-{b.context.span_id:016x}-{flags}"
        assert b.start_time is not None
        assert b.end_time is not None
        assert b.start_time <= b.end_time


def test_a_root_the_sampler_drops_is_not_recorded_but_its_context_goes_on() -> None:
    spans, exporter = _apply_spans(recorded=True, ratio=0.0)
    carried = spans.begin(event())
    spans.end(Applied("applied"), _Applied())
    assert exporter.get_finished_spans() == ()
    assert carried.traceparent is not None
    assert int(carried.traceparent[-2:], 16) & 1 == 0  # unsampled, as the sampler said
    assert context_of(carried.traceparent) is not None
    unsampled = PARENT[:-2] + "00"  # sampled out by the producer: passed on as it came
    assert spans.begin(event()._replace(traceparent=unsampled)).traceparent == unsampled
    # A later version may carry more fields; sampled out, it is passed on as well.
    later = "01" + unsampled[2:] + "-extra"
    assert spans.begin(event()._replace(traceparent=later)).traceparent == later
    spans.end(Applied("applied"), _Applied())
    assert exporter.get_finished_spans() == ()


def test_the_file_exporter_writes_one_json_span_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    settings = Settings(tracing={"enabled": True, "exporter": "file", "file": path})
    tracing = setup_tracing(settings, "test", install=False)
    assert tracing is not None
    spans = ApplySpans(tracing, 3)
    carried = spans.begin(event()._replace(traceparent=PARENT))
    assert carried.traceparent is not None
    assert carried.traceparent != PARENT

    class Rec:
        offset = 41

    spans.end(Applied("rejected", stage="contract", reason="bad amount"), Rec())
    tracing.shutdown()  # ends the batch: everything exported
    [line] = path.read_text().splitlines()
    span = json.loads(line)
    assert span["name"] == "garrison.apply"
    assert span["parent_id"] == "0xb7ad6b7169203331"
    assert span["context"]["span_id"] == "0x" + carried.traceparent.split("-")[2]
    assert span["attributes"]["garrison.verdict"] == "rejected"
    assert span["attributes"]["messaging.kafka.offset"] == 41
    assert span["status"]["status_code"] == "ERROR"
    assert span["resource"]["attributes"]["service.name"] == "garrison-test"
    assert setup_tracing(Settings(), "test") is None  # off by default


def test_dead_letter_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    dead_letter_log.bucket = TokenBucket(3, 1.0, clock=lambda: now[0])
    dead_letter_log.left_out = 0

    class Rec:
        offset = 7

    with caplog.at_level(logging.WARNING, logger="garrison"):
        dead_letter_log.committed(2, [(Rec(), "contract", "amount is not an int")] * 10)
        assert len(caplog.records) == 3
        now[0] = 2.0  # two seconds on: two more lines
        dead_letter_log.committed(2, [(Rec(), "decode", "not JSON")] * 5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[0] == "dead letter: partition 2 offset 7, stage contract: amount is not an int"
    assert "(7 more dead letters not logged; see garrison_dead_letters_total)" in lines[3]


def test_the_ready_line_shows_at_the_default_level(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(app="shop", web={"bind": "0.0.0.0", "host": "w1", "port": 7000})
    with caplog.at_level(logging.WARNING):
        announce_ready(settings, [0, 2])
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert (
        line.getMessage()
        == "garrison worker ready: app shop, partitions [0, 2], web http://w1:7000"
    )


def test_json_lines_come_from_the_json_format() -> None:
    from agents.logs import _json

    record = logging.LogRecord("garrison", logging.WARNING, __file__, 1, "x %s", ("y",), None)
    record.app = "shop"
    line = json.loads(_json().format(record))
    assert (line["level"], line["logger"], line["message"], line["app"]) == (
        "WARNING",
        "garrison",
        "x y",
        "shop",
    )


def test_a_service_reply_carries_the_commands_trace_context() -> None:
    from agents.service import reply_to

    command = event("stock.reserve")._replace(traceparent=PARENT, tracestate="k=v")
    reply = reply_to(command, "stock.reserved", {}, source="/service/stock")
    assert (reply.traceparent, reply.tracestate, reply.parentid) == (PARENT, "k=v", command.id)


def test_the_ready_line_and_faust_advertise_the_same_host(caplog: pytest.LogCaptureFixture) -> None:
    from agents.api import faust_web_options
    from pipeline.settings import WebSettings

    assert WebSettings(bind="10.0.0.5").advertised_host == "10.0.0.5"
    assert WebSettings(bind="0.0.0.0", host="worker-2").advertised_host == "worker-2"
    every = WebSettings(bind="0.0.0.0")
    assert every.advertised_host is None  # this machine's hostname
    assert "web_host" not in faust_web_options(every)  # Faust's own default: the hostname
    assert faust_web_options(WebSettings(bind="0.0.0.0", host="w2"))["web_host"] == "w2"
    with caplog.at_level(logging.WARNING, logger="garrison.ready"):
        announce_ready(Settings(web={"bind": "0.0.0.0", "host": "w2", "port": 7001}), [0])
    assert "web http://w2:7001" in caplog.text
