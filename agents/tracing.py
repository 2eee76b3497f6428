"""OpenTelemetry spans along an event's path: apply, state change, listener, service.

Off by default (``GARRISON_TRACING_ENABLED``): then nothing here runs, and the only
per-event cost is a ``None`` check in the lane and in the decision. Trace context is
data either way: an event's ``traceparent``/``tracestate`` (the CloudEvents
distributed-tracing extension, read from both content modes) goes on, unchanged, to
the state change (as Kafka headers ``traceparent``/``tracestate``), to the events its
reducer emits and to what listeners and services send because of it, so a process
further on that traces links to the same trace.

With tracing on, each process adds its span and hands *its* context on instead
(arvo's "inherit from event": the span's parent is the event's context, not whatever
the process was doing):

- worker: ``garrison.apply`` (kind CONSUMER), child of the event's ``traceparent``, for
  every event applied, skipped or dead-lettered; the state change and the emitted
  events carry the apply span's context;
- listener: ``garrison.listener <name>``, child of the state change's context; events
  it sends carry the listener span's context, and the listener's own code runs with
  that span current (its spans are children);
- service: ``garrison.service <name>``, child of the command's context; the reply
  carries it;
- client: ``garrison.send <type>`` (kind PRODUCER), child of the caller's current span.

Sampling follows the parent (a producer that sampled an event out is not traced here
either, and costs nothing: garrison does not even start a span for it); events without
a context start a trace at ``GARRISON_TRACING_SAMPLE_RATIO``.

The SDK is optional (``pip install garrison[tracing]``); :func:`setup_tracing` builds a
tracer provider with the exporter the settings name, or uses the process's global
provider (``exporter=none``: the application set one up).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.span import TraceState

from pipeline.envelope import Event, Headers
from pipeline.errors import GarrisonError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.decision import Applied

__all__ = [
    "ApplySpans",
    "FileSpanExporter",
    "Recorder",
    "Tracing",
    "context_of",
    "header_context",
    "sending_tracer",
    "setup_tracing",
    "traceparent_of",
]

_HEX = frozenset("0123456789abcdef")
_UNSAMPLED = frozenset("02468ace")  # the last hex digit of flags without the sampled bit


def context_of(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` names; None if absent or malformed
    (a bad header starts a new trace, as the W3C spec says, and refuses nothing)."""
    if traceparent is None or len(traceparent) < 55:
        return None
    version, trace_id, span_id, flags = (
        traceparent[:2],
        traceparent[3:35],
        traceparent[36:52],
        traceparent[53:55],
    )
    if (
        version == "ff"
        or traceparent[2] != "-"
        or traceparent[35] != "-"
        or traceparent[52] != "-"
        or not _HEX.issuperset(trace_id + span_id + flags + version)
        or (version == "00" and len(traceparent) != 55)
    ):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if not tid or not sid:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(tid, sid, True, TraceFlags(int(flags, 16)), state)


def traceparent_of(span: Span) -> tuple[str | None, str | None]:
    """``(traceparent, tracestate)`` of ``span``'s context (Nones if it is invalid)."""
    return _headers_of(span.get_span_context())


def _headers_of(ctx: SpanContext) -> tuple[str | None, str | None]:
    if not ctx.is_valid:
        return None, None
    # to_bytes().hex(), not format(): a third of the time for a 128-bit id.
    trace_id, span_id = ctx.trace_id.to_bytes(16, "big").hex(), ctx.span_id.to_bytes(8, "big").hex()
    parent = f"00-{trace_id}-{span_id}-{int(ctx.trace_flags):02x}"
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return parent, state or None


def header_context(headers: Headers | None) -> tuple[str | None, str | None]:
    """``(traceparent, tracestate)`` from Kafka record headers (a state change's)."""
    parent = state = None
    for name, raw in headers or ():
        if name == "traceparent":
            parent = raw.decode(errors="replace")
        elif name == "tracestate":
            state = raw.decode(errors="replace")
    return parent, state


class Tracing:
    """garrison's tracer and the provider it came from (shut down with the process);
    ``recorder`` when that provider is the one :func:`setup_tracing` built."""

    def __init__(self, tracer: Tracer, provider: Any = None, recorder: Recorder | None = None):
        self.tracer = tracer
        self.provider = provider
        self.recorder = recorder

    def start(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> Span | None:
        """A started span, child of the given context (a root without one); None when
        that context was sampled out: nothing to record, and the context goes on as it
        came."""
        parent = context_of(traceparent, tracestate)
        if parent is None:
            return self.tracer.start_span(name, kind=kind, attributes=attributes)
        if not parent.trace_flags.sampled:
            return None
        ctx = trace.set_span_in_context(NonRecordingSpan(parent), Context())
        return self.tracer.start_span(name, ctx, kind=kind, attributes=attributes)

    @contextmanager
    def span(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[tuple[str | None, str | None]]:
        """Run the block in a span (current, so user code's spans are its children);
        yields the context to carry on. An exception is recorded and re-raised."""
        started = self.start(name, traceparent, tracestate, kind=kind, attributes=attributes)
        if started is None:
            yield traceparent, tracestate
            return
        with trace.use_span(started, end_on_exit=True):
            yield traceparent_of(started)

    def shutdown(self) -> None:
        """Export what is left (the SDK's provider; a global one is the app's own)."""
        if self.provider is not None:
            self.provider.shutdown()


class Recorder:
    """Finished spans handed straight to the span processors of a provider garrison
    built, for the one span of every event: ``garrison.apply``.

    An apply span's whole life is known when it ends: its parent (the event's context),
    its start (taken at begin), its attributes and status. No code runs inside it (the
    reducer does not see it as current), so the SDK's mutable ``Span`` (a lock, bounded
    attributes, a context object per start, the sampler for a parent that already
    decided) is not needed: the SDK's own ``ReadableSpan`` is built once, at the end,
    and goes to the same processors and exporter as every other span. Measured on one
    core (``time.process_time``, 100,000 spans with eight attributes, BatchSpanProcessor):
    55 us a span through ``Tracer.start_span``/``end``, 20 us this way with
    :class:`FileSpanExporter`, 11 us with an exporter that does nothing.

    Sampling is the provider's ``ParentBased`` sampler: a sampled parent is recorded
    (ParentBased's default for it), an unsampled one never reaches here, and a root
    asks the sampler. The processors' ``on_start`` is not called (the SDK's batch and
    simple processors do nothing there)."""

    def __init__(self, provider: Any, processors: Any, scope: str) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._span = ReadableSpan
        self.resource = provider.resource
        self.ids = provider.id_generator
        self.sampler = provider.sampler
        # The W3C level-2 "random trace id" flag, as the SDK sets it on a root it starts.
        random = getattr(self.ids, "is_trace_id_random", lambda: False)()
        self.random_ids = _RANDOM_ID if random else 0
        self.processors = processors
        self.scope = InstrumentationScope(scope)

    def finish(self, begun: _Pending, status: Status) -> None:
        """End an apply span: hand it to the processors (an exporter sees it as any)."""
        span = self._span(
            "garrison.apply",
            begun.context,
            begun.parent,
            self.resource,
            begun.attributes,
            kind=SpanKind.CONSUMER,
            status=status,
            start_time=begun.start_ns,
            end_time=time.time_ns(),
            instrumentation_scope=self.scope,
        )
        self.processors.on_end(span)


_UNSET = Status(StatusCode.UNSET)
_RANDOM_ID = 0x02  # TraceFlags.RANDOM_TRACE_ID, which API versions before 1.39 lack


class _Pending(NamedTuple):
    """An apply span begun by the :class:`Recorder` path, not yet ended."""

    context: SpanContext
    parent: SpanContext | None
    start_ns: int
    attributes: dict[str, Any]


class ApplySpans:
    """The ``garrison.apply`` spans of one lane: :meth:`begin` is the decision's trace
    hook (``Rules.trace``), :meth:`end` runs once the record's outcome is known."""

    def __init__(self, tracing: Tracing, partition: int) -> None:
        self.tracing = tracing
        self.recorder = tracing.recorder
        self.partition = partition
        self._open: Span | _Pending | None = None

    def begin(self, event: Event) -> Event:
        """Start the event's apply span; the event, carrying the span's context on."""
        tp = event.traceparent
        if tp is not None and len(tp) == 55 and tp[54] in _UNSAMPLED:
            # Sampled out by its producer (the flags' low bit): no span, the context
            # goes on as it came; a string check, not a parse (measured: the parse and
            # the sampler cost more than the rest of an unsampled event's tracing).
            self._open = None
            return event
        attributes = {
            "messaging.destination.partition.id": self.partition,
            "cloudevents.event_id": event.id,
            "cloudevents.event_type": event.type,
            "garrison.machine": event.machine,
            "garrison.instance": event.instance,
        }
        if self.recorder is not None:
            return self._begin_recorded(event, attributes)
        span = self.tracing.start(
            "garrison.apply", tp, event.tracestate, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._open = span
        if span is None:
            return event
        parent, state = traceparent_of(span)
        return event.traced(parent, state)

    def _begin_recorded(self, event: Event, attributes: dict[str, Any]) -> Event:
        recorder = self.recorder
        assert recorder is not None
        parent = context_of(event.traceparent, event.tracestate)
        if parent is not None and not parent.trace_flags.sampled:
            self._open = None  # sampled out (a version begin's string check does not read)
            return event
        if parent is not None:
            trace_id, state = parent.trace_id, parent.trace_state
            recording, random_id = True, parent.trace_flags & _RANDOM_ID
            flags = TraceFlags(TraceFlags.SAMPLED | random_id)
        else:
            trace_id = recorder.ids.generate_trace_id()
            decided = recorder.sampler.should_sample(
                None, trace_id, "garrison.apply", SpanKind.CONSUMER, attributes
            )
            recording = decided.decision.is_recording()
            flags = TraceFlags(
                (TraceFlags.SAMPLED if decided.decision.is_sampled() else 0) | recorder.random_ids
            )
            state = decided.trace_state
            attributes.update(decided.attributes or {})
        context = SpanContext(trace_id, recorder.ids.generate_span_id(), False, flags, state)
        self._open = _Pending(context, parent, time.time_ns(), attributes) if recording else None
        return event.traced(*_headers_of(context))

    def end(self, applied: Applied, rec: Any) -> None:
        """End the open apply span with the record's verdict (an error if it was
        dead-lettered)."""
        span, self._open = self._open, None
        if span is None:
            return
        done: dict[str, Any] = {
            "garrison.verdict": applied.verdict,
            "messaging.kafka.offset": rec.offset,
        }
        if applied.outcome is not None and applied.outcome.change is not None:
            done["garrison.seq"] = applied.outcome.change.seq
        status = _UNSET
        if applied.verdict == "rejected":
            done["garrison.stage"] = applied.stage
            status = Status(StatusCode.ERROR, applied.reason)
        if isinstance(span, _Pending):
            assert self.recorder is not None
            span.attributes.update(done)
            self.recorder.finish(span, status)
            return
        if status is not _UNSET:
            span.set_status(status)
        span.set_attributes(done)  # one call: each takes the span's lock
        span.end()


class _Sending:
    """The producer client's spans: one per event sent, in the caller's context."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def carried(self, event: Event) -> Event:
        """``event`` carrying the context of a new ``garrison.send`` span (unchanged
        when nothing is traced: no provider, or the caller's trace sampled out)."""
        span = self.tracer.start_span(
            f"garrison.send {event.type}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "garrison.machine": event.machine,
                "garrison.instance": event.instance,
            },
        )
        span.end()
        parent, state = traceparent_of(span)
        if parent is None:
            return event
        return event.traced(parent, state)


def sending_tracer(settings: Settings) -> _Sending | None:
    """For :class:`garrison.Client`: None when tracing is off; else spans from the
    process's global tracer provider (the application's)."""
    if not settings.tracing.enabled:
        return None
    return _Sending(trace.get_tracer("garrison.client"))


class FileSpanExporter:
    """Finished spans as JSON lines in a file (``GARRISON_TRACING_EXPORTER=file``): for
    tests across processes and for looking at a trace without a collector. Each line
    has the fields of the SDK's ``span.to_json()`` that say where a span belongs (name,
    context, parent_id, kind, times, attributes, status, resource), written with orjson
    (the SDK's indented JSON costs several times as much per span)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        resources: dict[int, dict[str, Any]] = {}  # one resource for all, as a rule
        lines = b"".join(orjson.dumps(_span_dict(span, resources)) + b"\n" for span in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_KINDS = {kind: str(kind) for kind in SpanKind}
_STATUS = {code: {"status_code": code.name} for code in StatusCode}


def _span_dict(span: Any, resources: dict[int, dict[str, Any]]) -> dict[str, Any]:
    ctx, parent = span.context, span.parent
    resource = resources.get(id(span.resource))
    if resource is None:
        resource = resources[id(span.resource)] = {"attributes": dict(span.resource.attributes)}
    return {
        "name": span.name,
        "context": {
            "trace_id": "0x" + ctx.trace_id.to_bytes(16, "big").hex(),
            "span_id": "0x" + ctx.span_id.to_bytes(8, "big").hex(),
        },
        "kind": _KINDS[span.kind],
        "parent_id": None if parent is None else "0x" + parent.span_id.to_bytes(8, "big").hex(),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": _STATUS[span.status.status_code],
        "attributes": dict(span.attributes or {}),
        "resource": resource,
    }


def setup_tracing(settings: Settings, role: str, *, install: bool = True) -> Tracing | None:
    """The process's tracing (None when off): a provider exporting as the settings say
    (made the global one if ``install``, so user code's spans join), or the global
    provider with ``exporter=none``. Raises :class:`GarrisonError` if the SDK is
    needed and missing."""
    conf = settings.tracing
    if not conf.enabled:
        return None
    if conf.exporter == "none":
        return Tracing(trace.get_tracer("garrison"))
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise GarrisonError(
            "GARRISON_TRACING_ENABLED needs the OpenTelemetry SDK: pip install "
            "'garrison[tracing]' (or GARRISON_TRACING_EXPORTER=none with your own provider)"
        ) from None
    exporter: Any
    if conf.exporter == "console":
        exporter = ConsoleSpanExporter()
    elif conf.exporter == "file":
        if conf.file is None:
            raise GarrisonError("GARRISON_TRACING_EXPORTER=file needs GARRISON_TRACING_FILE")
        exporter = FileSpanExporter(conf.file)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise GarrisonError(
                "GARRISON_TRACING_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http "
                "(pip install opentelemetry-exporter-otlp-proto-http), or choose console or file"
            ) from None
        exporter = OTLPSpanExporter()
    name = conf.service_name or f"garrison-{role}"
    # The provider's own processors, which the Recorder hands its spans to as well.
    processors: Any = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "garrison.app": settings.app}),
        sampler=ParentBased(TraceIdRatioBased(conf.sample_ratio)),
        active_span_processor=processors,
    )
    # The SDK's queue holds 2,048 spans by default and drops what does not fit; a
    # worker applies tens of thousands of events a second. OTEL_BSP_* still rule.
    queue = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "65536"))
    batch = int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=batch)
    )
    if install:
        trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("garrison")
    # OTEL_SDK_DISABLED makes the tracer a no-op one: then no recorder either.
    recorder = Recorder(provider, processors, "garrison") if isinstance(tracer, SdkTracer) else None
    return Tracing(tracer, provider, recorder)
