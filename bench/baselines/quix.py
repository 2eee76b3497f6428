"""quixstreams baseline for the garrison benchmark.

    python bench/baselines/quix.py --bootstrap HOST:PORT --input TOPIC --output TOPIC \
        --group GROUP --state-dir DIR --partitions P [--guarantee at_least_once|exactly_once] \
        [--commit-interval SECONDS] [--session-timeout-ms MS]

Per event: parse the CloudEvent JSON, read the state of (tenant, machine, instance) from the
RocksDB store (quix state is scoped by message key = tenant, so the state key inside it is
"{machine}/{instance}"; absent = zeros), fold count += 1, total += data.amount, last = id,
write it back and produce one output record keyed by tenant:
{"tenant","machine","instance","seq","event_id","prev","state","time_ms"}.

Prints ``ready`` on stdout once the consumer first gets partitions; logs (WARNING and up)
go to stderr. SIGTERM/SIGINT stop the loop, commit and exit 0 (quix handles the signals).
Needs ``quixstreams`` (see bench/requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

# authlib (a quixstreams dependency, unused here) warns on import and forces its warnings to
# "always" when its deprecate module loads; load that first, then silence them on stderr.
try:
    import authlib.deprecate  # noqa: F401
except ImportError:  # pragma: no cover - other authlib layouts
    pass
warnings.filterwarnings("ignore", module=r"authlib(\.|$)")
warnings.filterwarnings("ignore", message=r".*httpx module is deprecated.*")

from quixstreams import Application  # noqa: E402

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
log = logging.getLogger("quix-baseline")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument(
        "--partitions",
        type=int,
        required=True,
        help="partitions of the input topic (quix reads it from the broker itself)",
    )
    p.add_argument("--guarantee", choices=("at_least_once", "exactly_once"), default="exactly_once")
    p.add_argument(
        "--commit-interval",
        type=float,
        default=5.0,
        help="seconds between commits (quixstreams' default, 5.0)",
    )
    p.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="consumer session timeout (librdkafka's default, 45000, if unset)",
    )
    return p.parse_args(argv)


def time_ms(event: dict[str, Any], fallback_ms: int) -> int:
    text = event.get("time")
    if not isinstance(text, str):
        return fallback_ms
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def fold(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> dict[str, Any]:
    """The stateful step; ``state`` is the tenant's (message key's) slice of the store."""
    tenant, machine, instance = value["tenant"], value["machine"], value["instance"]
    event_id = value["id"]
    data = value.get("data")
    amount = data.get("amount", 0) if isinstance(data, dict) else 0
    skey = f"{machine}/{instance}"
    prev = state.get(skey, None)
    if prev is None:
        new = {"count": 1, "total": amount, "last": event_id}
    else:
        new = {"count": prev["count"] + 1, "total": prev["total"] + amount, "last": event_id}
    state.set(skey, new)
    return {
        "tenant": tenant,
        "machine": machine,
        "instance": instance,
        "seq": new["count"],
        "event_id": event_id,
        "prev": prev,
        "state": new,
        "time_ms": time_ms(value, timestamp),
    }


class _Skipper:
    """Error callbacks that skip a bad record, logging only the first one (nothing per event)."""

    def __init__(self) -> None:
        self.count = 0

    def _skip(self, exc: Exception, where: str) -> bool:
        if self.count == 0:
            log.warning(
                "skipping a bad input record (%s: %r); further ones are skipped silently",
                where,
                exc,
            )
        self.count += 1
        return True

    def consumer(self, exc: Exception, message: Any, logger: logging.Logger) -> bool:
        return self._skip(exc, "consume/deserialize")

    def processing(self, exc: Exception, row: Any, logger: logging.Logger) -> bool:
        return self._skip(exc, "process")


class _ReadyApplication(Application):
    """Prints ``ready`` the first time the consumer is given partitions."""

    _announced = False

    def _on_assign(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(consumer, topic_partitions)
        if topic_partitions and not self._announced:
            self._announced = True
            print("ready", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    skipper = _Skipper()
    app_cls = _ReadyApplication if hasattr(Application, "_on_assign") else Application
    app = app_cls(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        state_dir=args.state_dir,
        auto_offset_reset="earliest",
        processing_guarantee=(
            "exactly-once" if args.guarantee == "exactly_once" else "at-least-once"
        ),
        commit_interval=args.commit_interval,
        loglevel="WARNING",
        use_changelog_topics=True,
        on_consumer_error=skipper.consumer,
        on_processing_error=skipper.processing,
        consumer_extra_config=(
            {"session.timeout.ms": args.session_timeout_ms} if args.session_timeout_ms else None
        ),
    )
    source = app.topic(args.input, key_deserializer="str", value_deserializer="json")
    sink = app.topic(args.output, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(fold, stateful=True, metadata=True)
    sdf.to_topic(sink)
    if app_cls is Application:
        print("ready", flush=True)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
