"""Settings for every garrison process, read once in the entry point and passed down.

Environment variables are prefixed ``GARRISON_``; nested groups use one underscore,
so ``GARRISON_KAFKA_BOOTSTRAP`` sets ``settings.kafka.bootstrap``. Nothing in garrison
reads the environment anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.address import check_id
from pipeline.errors import GarrisonError
from pipeline.partitioning import Partitioning

__all__ = [
    "HistorySettings",
    "HotSettings",
    "InvalidSettings",
    "KafkaSettings",
    "MetricsSettings",
    "RetentionSettings",
    "RocksDBSettings",
    "Settings",
    "Topics",
    "TracingSettings",
    "WebSettings",
    "load_settings",
]


class InvalidSettings(GarrisonError):
    """A ``GARRISON_*`` environment variable holds a value garrison cannot use; the
    message names the variable and what is wrong."""


class KafkaSettings(BaseModel):
    """How to reach the brokers and how garrison's topics are laid out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    partitions: int = Field(default=8, ge=1, description="partitions of every garrison topic")
    connect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="how long a process starting waits for the broker (and its app's "
        "topics) before it says what is wrong and exits; a running worker waits for "
        "a broker that goes away as long as it takes",
    )
    replication_factor: int = Field(default=1, ge=1)


class RocksDBSettings(BaseModel):
    """RocksDB options for the state tables (Faust's rocksdb:// store, via rocksdict)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_buffer_size: int = Field(
        default=16 * 1024 * 1024, ge=1024 * 1024, description="one memtable's size at most"
    )
    max_write_buffer_number: int = Field(
        default=3, ge=1, description="memtables per database (one per table and partition)"
    )
    block_cache_size: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="the block cache, one for all the worker's databases",
    )
    max_open_files: int = 512
    bloom_bits_per_key: int = Field(default=10, ge=1, description="SST bloom filter size")
    memtable_bloom_ratio: float = Field(
        default=0.1,
        ge=0,
        le=0.25,
        description="share of each memtable given to a whole-key bloom filter; 0: none",
    )


class WebSettings(BaseModel):
    """The HTTP API of workers and listeners (``GARRISON_WEB_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    bind: str = Field(default="127.0.0.1", description="address the server listens on")
    host: str | None = Field(
        default=None,
        description="the address other workers and clients reach this one at, for "
        "forwarding a request to the worker that owns its tenant; default: the bind "
        "address, or this machine's hostname when binding every address",
    )
    port: int = Field(default=6066, ge=0, le=65535)
    listener_port: int = Field(
        default=6067,
        ge=0,
        le=65535,
        description="the port of `garrison listen`'s server (/metrics, /health, /ready); "
        "its own default, so a worker and a listener run side by side on one machine",
    )
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="tenant id -> bearer token that may read that tenant's data "
        '(GARRISON_WEB_TOKENS=\'{"acme": "..."}\'); with none and no operator token, '
        "reads are open",
    )
    operator_token: SecretStr | None = Field(
        default=None, description="a bearer token that may read every tenant's data"
    )

    @property
    def advertised_host(self) -> str | None:
        """The host others reach this server at: ``host``, else the bind address unless
        it binds every address; None then (this machine's hostname, Faust's default)."""
        if self.host is not None:
            return self.host
        return self.bind if self.bind not in ("0.0.0.0", "::") else None

    @property
    def guarded(self) -> bool:
        """Whether reads need a token."""
        return bool(self.tokens) or self.operator_token is not None


class HistorySettings(BaseModel):
    """What a worker keeps of each instance's past, and publishes of its present
    (``GARRISON_HISTORY_*``; see docs/history.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="applied changes kept per instance in the worker's store, for history "
        "reads without the topic; older ones are read from the state-change topic; 0: none",
    )
    latest_topic: bool = Field(
        default=False,
        description="also publish every instance's latest state to the compacted topic "
        "<app>.latest (key tenant/machine/instance; a tombstone when the instance ends), "
        "in the same transaction as its state change",
    )
    clock_skew_ms: int = Field(
        default=300_000,
        ge=0,
        description="how far an event's time may run ahead of the worker's clock: a history "
        "read from a time starts this much earlier on the topic, whose records are stamped "
        "when they are produced",
    )


def _names(value: Any) -> Any:
    """``a,b`` or a JSON list (``["a","b"]``): a set of names."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _ids(names: frozenset[str]) -> frozenset[str]:
    for name in names:
        check_id("hot tenant or machine", name)
    return names


Names = Annotated[frozenset[str], NoDecode, BeforeValidator(_names), AfterValidator(_ids)]


class MetricsSettings(BaseModel):
    """Prometheus metrics at ``/metrics`` of workers and listeners (``GARRISON_METRICS_*``;
    see docs/operations.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="serve the worker's /metrics")
    tenant_label: bool = Field(
        default=False,
        description="also label the applied and dead-letter counters by tenant: one time "
        "series per tenant and machine, so only for a few tenants",
    )


class TracingSettings(BaseModel):
    """OpenTelemetry traces (``GARRISON_TRACING_*``): off unless enabled; the SDK is the
    ``garrison[tracing]`` extra."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    exporter: Literal["otlp", "console", "file", "none"] = Field(
        default="otlp",
        description="where spans go: otlp (opentelemetry-exporter-otlp, configured by the "
        "standard OTEL_EXPORTER_OTLP_* variables), console, file (JSON lines at "
        "GARRISON_TRACING_FILE), or none (a tracer provider the app set up itself)",
    )
    file: Path | None = Field(default=None, description="for exporter=file: the JSON lines file")
    service_name: str | None = Field(
        default=None, description="the service.name resource; default garrison-<role>"
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of the events without a trace context that start a trace; "
        "events with one follow their parent's sampling decision",
    )


class HotSettings(BaseModel):
    """Hot tenants and machines, keyed by tenant and instance (``GARRISON_HOT_TENANTS``,
    ``GARRISON_HOT_MACHINES``: comma-separated names or a JSON list; see
    ``pipeline.partitioning``). Every producer, worker and listener of an app must use
    the same."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenants: Names = Field(
        default=frozenset(),
        description="tenants whose instances are keyed by tenant/instance and spread over "
        "the partitions (comma-separated or a JSON list); the same on every producer, "
        "worker and listener",
    )
    machines: Names = Field(
        default=frozenset(),
        description="machines whose instances are keyed by tenant/instance, for every tenant",
    )


def _broker_default(value: Any) -> Any:
    """``GARRISON_RETENTION_*=default`` (or empty): None, the broker's own default."""
    if isinstance(value, str) and value.strip().lower() in ("", "default", "none"):
        return None
    return value


RetentionMs = Annotated[Annotated[int, Field(ge=-1)] | None, BeforeValidator(_broker_default)]


class RetentionSettings(BaseModel):
    """Retention of garrison's topics, set when garrison creates them
    (``GARRISON_RETENTION_*``, milliseconds; -1 keeps records forever; None leaves the
    broker's default, 7 days unless configured: ``=default``). Replay and history read these topics,
    and a dead letter must stay until it is re-driven, so the default is forever."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events_ms: RetentionMs = Field(default=-1, description="<app>.events")
    state_changes_ms: RetentionMs = Field(default=-1, description="<app>.state-changes")
    dlq_ms: RetentionMs = Field(default=-1, description="<app>.dlq, <app>.listener-redrive")


class Topics(BaseModel):
    """The topic names of one garrison app, all derived from its name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: str
    state_changes: str
    dlq: str
    listener_redrive: str = ""
    latest: str | None = None
    replies: str = ""

    @classmethod
    def of(cls, app: str, *, latest: bool = False) -> Topics:
        """``<app>.events``, ``<app>.state-changes``, ``<app>.dlq``,
        ``<app>.listener-redrive`` (listener dead letters sent back), ``<app>.replies``
        (only the answers to duplicates whose sender waits: ``pipeline.answer``) and, if
        ``latest``, the compacted ``<app>.latest``. Timer firings travel on the events
        topic, in the instance's own partition."""
        return cls(
            events=f"{app}.events",
            state_changes=f"{app}.state-changes",
            dlq=f"{app}.dlq",
            listener_redrive=f"{app}.listener-redrive",
            latest=f"{app}.latest" if latest else None,
            replies=f"{app}.replies",
        )


class Settings(BaseSettings):
    """Everything a worker, listener or client process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="GARRISON_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    app: str = Field(
        default="garrison",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="app id: prefix of the topics, Faust app id, group id",
    )
    kafka: KafkaSettings = KafkaSettings()
    rocksdb: RocksDBSettings = RocksDBSettings()
    data_dir: Path = Path("var/garrison")
    batch_size: int = Field(default=2000, ge=1, description="events taken per batch")
    max_record_bytes: int = Field(
        default=900_000,
        ge=10_000,
        le=990_000,
        description="the largest record (key and value) the worker produces: a state "
        "change, an emitted event or an instance's changelog record; an event that "
        "would produce a larger one is dead-lettered (the broker's default limit is "
        "1,048,588 bytes per record batch)",
    )
    fetch_max_records: int | None = Field(
        default=None,
        ge=1,
        description="records the worker's consumer takes from the broker per fetch, for "
        "all its partitions (Kafka's max.poll.records); default: GARRISON_BATCH_SIZE",
    )
    batch_wait_ms: int = Field(
        default=5,
        ge=0,
        description="how long a batch's first event waits for more before the batch's "
        "transaction starts, when the partition has none in flight (fewer, "
        "larger transactions at a low rate, for this much latency)",
    )
    dedupe_ids: int = Field(default=16, ge=1, description="recent event ids kept per instance")
    tombstone_retention_s: float | None = Field(
        default=None,
        gt=0,
        description="how long an ended (expired or deleted) instance keeps its sequence "
        "number and recent event ids, so a new event continues its sequence; default: "
        "as long as the state-change topic keeps changes (forever, or the broker's 7 "
        "days), so no reader of an address's old changes sees its sequence repeat",
    )
    timer_tick_ms: int = Field(default=500, ge=10)
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="worker: allocations between young-generation garbage collections "
        "(Python's default is 700); 0 leaves the collector as it is",
    )
    session_timeout_s: float = Field(
        default=6.0,
        ge=3.0,
        le=300.0,
        description="how long the group waits for a worker it no longer hears from before "
        "moving its partitions (a crashed worker that does not come back); a worker that "
        "restarts within it takes its partitions back at once (static membership), and "
        "one stopped with SIGTERM hands them over at once",
    )
    worker_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="this worker's stable identity in the group (static membership, "
        "KIP-345): the same id after a restart gets the same partitions back without a "
        "rebalance; default: the host name and a hash of the data folder; two running "
        "workers must never share one",
    )
    standby_replicas: int = Field(
        default=0,
        ge=0,
        le=4,
        description="warm copies of each partition's state kept by other workers, so "
        "when a worker dies for good another serves its partitions without replaying "
        "the changelog",
    )
    web: WebSettings = WebSettings()
    history: HistorySettings = HistorySettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    hot: HotSettings = HotSettings()
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line (python-json-logger)"
    )

    @property
    def tombstone_ms(self) -> int:
        """How long a tombstone lives, in milliseconds (see ``tombstone_retention_s``)."""
        if self.tombstone_retention_s is not None:
            return int(self.tombstone_retention_s * 1000)
        kept = self.retention.state_changes_ms
        if kept is None:
            return 7 * 24 * 3600 * 1000  # the broker's default retention
        return 100 * 365 * 24 * 3600 * 1000 if kept < 0 else kept  # forever: a century

    @property
    def member_id(self) -> str:
        """The worker's group instance id: ``worker_id``, or one derived from the host
        name and the data folder, stable across restarts of the same worker."""
        if self.worker_id is not None:
            return self.worker_id
        folder = str(self.data_dir.resolve()).encode()
        return f"{socket.gethostname()}-{hashlib.sha256(folder).hexdigest()[:10]}"

    @property
    def group_instance_id(self) -> str:
        """The worker's group.instance.id in the app's consumer group."""
        return f"{self.app}.{self.member_id}"

    @property
    def transactional_id(self) -> str:
        """The transactional id of the worker's producer (``agents.transactions``)."""
        return f"{self.app}.dispatch.{self.member_id}"

    def group_instance_of(self, transactional_id: str) -> str | None:
        """The group.instance.id of the worker of this app whose producer has
        ``transactional_id``; None if it is no worker's of this app."""
        prefix = f"{self.app}.dispatch."
        if not transactional_id.startswith(prefix):
            return None
        return f"{self.app}.{transactional_id.removeprefix(prefix)}"

    @property
    def partitioning(self) -> Partitioning:
        """The app's hot-tenant keying rules (``GARRISON_HOT_*``)."""
        return Partitioning(self.hot.tenants, self.hot.machines)

    @property
    def topics(self) -> Topics:
        """Topic names of this app."""
        return Topics.of(self.app, latest=self.history.latest_topic)


def load_settings() -> Settings:
    """The settings from the environment, as an entry point reads them once; raises
    :class:`InvalidSettings` naming each variable that is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
            name = "GARRISON_" + "_".join(loc).upper()
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            problems.append(f"{name}: {err['msg']}{shown}")
        raise InvalidSettings("; ".join(problems)) from None
