"""Prometheus metrics of a worker and of a listener process, at ``/metrics``.

Each process keeps its metrics in a registry of its own (never the client library's
global one, which a user's code may fill too) and serves them in the text format with
``prometheus_client.generate_latest``. Counters end in ``_total``; times are seconds.

The worker's lanes do not touch a Prometheus object per record: a lane counts each
record's verdict in a plain dict per batch (a tuple key and a dict update), and
:meth:`WorkerMetrics.committed` adds those counts to the counters once per committed
transaction, so what is counted is what Kafka committed (a redone batch is counted
once). Gauges that describe a moment (consumer lag, queued records, the store's size,
readiness) are read when Prometheus scrapes, by :class:`_WorkerState`, and cost nothing in
between.

What that costs, measured on the bench's records: the tally's lines about 0.2 us a
record, with metrics off too (:class:`agents.dispatch.DispatchStats` adds it up);
:meth:`WorkerMetrics.committed` 4 us a batch in a tight loop, and 30 us when it follows
``Lane._prepare`` of a batch (an in-memory store for RocksDB; its code out of the
caches by then): 0.015 us a record in a catch-up batch of 2,000,
0.1 us in one of 100, against the worker's 55 to 64 us. A py-spy profile of a worker
catching up on 200k events had no sample in this module or in ``prometheus_client``
outside the imports.

Labels: ``machine`` on event counts, ``stage`` and ``machine`` on dead letters (a record
that could not be read has ``machine=""``), ``partition`` on the per-partition gauges,
``listener`` on listener metrics. Tenants are not a label unless an operator opts in
(``GARRISON_METRICS_TENANT_LABEL=true``): one series per tenant and machine is more
than a Prometheus server should hold for thousands of tenants.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.settings import Settings

if TYPE_CHECKING:
    from agents.app import GarrisonApp
    from agents.lane import Lane

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ListenerMetrics",
    "Tally",
    "WorkerMetrics",
    "add_metrics_route",
    "render",
]

Tally = dict[tuple[str, ...], int]
"""A batch's counts: ``(verdict, machine, stage[, tenant])`` -> records."""

# The series a ``_created`` timestamp would double; Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped there

_VERDICTS = {
    "applied": "events applied to an instance (one state change each)",
    "duplicate": "events skipped: their id was applied to the instance already",
    "stale": "timer firings skipped: the timer was cancelled or re-armed meanwhile",
    "rearmed": "TTL firings that found the instance active and re-armed its expiry",
    "expired": "instances ended by their TTL (one state change each)",
    "purged": "ended instances' tombstones deleted",
    "forwarded": "records found outside their home partition and sent on to it",
}
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
_COMMIT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)


class WorkerMetrics:
    """The worker's counters and histograms (see the module doc for the names)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.by_tenant = settings.metrics.tenant_label
        labels = ("machine", "tenant") if self.by_tenant else ("machine",)
        reg = self.registry
        self._verdicts = {
            verdict: Counter(f"garrison_events_{verdict}", text, labels, registry=reg)
            for verdict, text in _VERDICTS.items()
        }
        self._dead = Counter(
            "garrison_dead_letters",
            "records sent to the dead-letter topic, by the stage that refused them",
            ("stage", *labels),
            registry=reg,
        )
        self.batch_records = Histogram(
            "garrison_batch_records",
            "records per committed transaction (one batch of one partition)",
            buckets=_BATCH_BUCKETS,
            registry=reg,
        )
        self.commit_seconds = Histogram(
            "garrison_transaction_commit_seconds",
            "a batch's transaction, from its start to the broker's commit",
            buckets=_COMMIT_BUCKETS,
            registry=reg,
        )
        self.restored = Counter(
            "garrison_restore_records",
            "changelog records restored into the local stores",
            registry=reg,
        )
        self.restore_remaining = Gauge(
            "garrison_restore_remaining_records",
            "changelog records the restore under way has still to read (0: none under way)",
            registry=reg,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def committed(self, tally: Tally, records: int, seconds: float) -> None:
        """One transaction committed: its records' counts, its size and how long it
        took."""
        self.batch_records.observe(records)
        self.commit_seconds.observe(seconds)
        children = self._children
        for key, n in tally.items():
            child = children.get(key)
            if child is None:
                child = children[key] = self._child(key)
            child.inc(n)

    def _child(self, key: tuple[str, ...]) -> Any:
        verdict, machine, stage = key[:3]
        tenant = (key[3] if len(key) > 3 else "",) if self.by_tenant else ()
        if verdict == "rejected":
            return self._dead.labels(stage, machine, *tenant)
        return self._verdicts[verdict].labels(machine, *tenant)

    def watch(self, app: GarrisonApp) -> None:
        """Also report ``app``'s moment-to-moment state (lag, queues, store sizes)."""
        self.registry.register(_WorkerState(app))


class _WorkerState(Collector):
    """Gauges read at scrape time from the running worker."""

    def __init__(self, app: GarrisonApp) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        app = self.app
        dispatcher = app.dispatcher
        lag = GaugeMetricFamily(
            "garrison_consumer_lag",
            "events records past what the partition's lane committed (the consumer's "
            "high watermark minus the applied offset; transaction markers count too)",
            labels=["partition"],
        )
        queued = GaugeMetricFamily(
            "garrison_lane_queued_records",
            "records fetched for the partition and waiting for its lane",
            labels=["partition"],
        )
        keys = GaugeMetricFamily(
            "garrison_state_keys_estimate",
            "RocksDB's estimate of the keys in the partition's state store "
            "(rocksdb.estimate-num-keys): its instances, their kept history "
            "(GARRISON_HISTORY_KEEP per instance at most) and 2 bookkeeping keys",
            labels=["partition"],
        )
        for partition, lane in sorted(_lanes(app)):
            label = [str(partition)]
            queued.add_metric(label, lane.inbox.queued)
            high = _highwater(app, lane.tp)
            if high is not None:  # known once the partition has been fetched from
                lag.add_metric(label, max(0, high - max(lane.committed, 0)))
            estimate = _estimate_keys(app, partition)
            if estimate is not None:
                keys.add_metric(label, estimate)
        yield lag
        yield queued
        yield keys
        yield CounterMetricFamily(
            "garrison_events_replayed",
            "records consumed again below the partition's applied offset and skipped",
            value=dispatcher.stats.replayed,
        )
        yield GaugeMetricFamily(
            "garrison_partitions_serving",
            "events partitions whose lanes serve on this worker",
            value=len(dispatcher.partitions),
        )
        yield GaugeMetricFamily(
            "garrison_ready", "1 when the worker serves (as GET /ready)", value=int(app.serving)
        )


def _lanes(app: GarrisonApp) -> Iterator[tuple[int, Lane]]:
    for partition in app.dispatcher.partitions:
        lane = app.dispatcher.lane(partition)
        if lane is not None and lane.serving:
            yield partition, lane


def _highwater(app: GarrisonApp, tp: Any) -> int | None:
    try:
        high = app.consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - a consumer being rebuilt: no figure this time
        return None
    return None if high is None else int(high)


def _estimate_keys(app: GarrisonApp, partition: int) -> int | None:
    try:
        found = app.state_store.db(partition).property_int_value("rocksdb.estimate-num-keys")
    except Exception:  # noqa: BLE001 - a store not open (yet): no figure this time
        return None
    return None if found is None else int(found)


class ListenerMetrics:
    """A listener process's metrics, by listener."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reg, by = self.registry, ("listener",)
        self.changes = Counter(
            "garrison_listener_changes", "state changes the listener read", by, registry=reg
        )
        self.runs = Counter(
            "garrison_listener_runs", "changes the listener handled successfully", by, registry=reg
        )
        self.failures = Counter(
            "garrison_listener_failures", "listener attempts that raised", by, registry=reg
        )
        self.retries = Counter(
            "garrison_listener_retries", "attempts made again after a failure", by, registry=reg
        )
        self.dead_letters = Counter(
            "garrison_listener_dead_letters",
            "changes sent to the dead-letter topic after the last retry",
            by,
            registry=reg,
        )
        self.sent = Counter(
            "garrison_listener_sent_events", "events listeners sent", by, registry=reg
        )
        self.seconds = Histogram(
            "garrison_listener_run_seconds",
            "one change handled by the listener, retries and backoff included",
            by,
            buckets=_RUN_BUCKETS,
            registry=reg,
        )
        self.ready = Gauge(
            "garrison_listener_ready",
            "1 when every listener's consumer has joined its group",
            registry=reg,
        )


def add_metrics_route(app: GarrisonApp, metrics: WorkerMetrics) -> None:
    """``GET /metrics`` on the worker's web server. Open like ``/health``, unless the
    tenant label is on and tokens guard reads: then the operator token is needed, as
    the labels name tenants."""
    from faust import web

    from agents.http import authorize

    web_settings = app.settings.web
    guarded = metrics.by_tenant and web_settings.guarded

    @app.page("/metrics")
    async def scrape(view: web.View, request: web.Request) -> web.Response:
        if (
            guarded
            and authorize(web_settings, request.headers.get("Authorization"), "") is not None
        ):
            return view.json({"error": "the operator token is needed"}, status=401)
        return view.bytes(render(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
