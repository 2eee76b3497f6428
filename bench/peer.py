"""The ``peer_latency`` part: latency of every exactly-once system at the same rates.

garrison, garrison with its latency-oriented settings (:data:`LOW_LATENCY`, when they
differ from the defaults), quixstreams (``processing_guarantee="exactly-once"``) and
Kafka Streams (``exactly_once_v2``) each get a latency session (:mod:`bench.session`):
a fresh process on topics of its own, an unmeasured warm-up at 2,000 events/s, then
2,000 events/s, 5,000 events/s and half of garrison's catch-up rate from this run's
throughput part, in increasing order, back to back, with the first seconds of each
left out. Figures: ``<system>_p50_ms_at_<rate>`` and ``<system>_p99_ms_at_<rate>``
with ``<rate>`` ``2000``, ``5000`` or ``half`` (the rate itself in
``peer_latency_half_events_per_s``); the CPU of each system and of the broker at each
rate is in the printed table and the results' ``sections.peer_latency``.
"""

from __future__ import annotations

import os

from bench.latency import Latency, Phase
from bench.parts import PARTS, PartContext
from bench.session import Session, latency_session
from bench.system import SYSTEMS

__all__ = ["FIXED_RATES", "LOW_LATENCY", "PEERS", "measure_peers", "peer_phases", "short_of_rate"]

FIXED_RATES = (2000.0, 5000.0)
LOW_LATENCY = {"GARRISON_BATCH_WAIT_MS": "0"}
"""garrison's latency-oriented settings: a batch's transaction starts at once, without
waiting for more events (the default waits GARRISON_BATCH_WAIT_MS=5 ms)."""

PEERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("quixstreams", "quixstreams", {}),
    ("kafka_streams", "kafka_streams", {}),
    ("garrison_low_latency", "garrison", LOW_LATENCY),
    ("garrison", "garrison", {}),  # last: the partitions part can go on from its session
)
"""(name in the figures, system, extra environment) of each peer."""
QUICK_ONLY_AT = {"garrison_low_latency": "5000"}
"""Peers that ``bench/run --quick`` measures at one rate only, to stay short."""


def _differs_from_defaults(env: dict[str, str]) -> bool:
    from pipeline.settings import Settings

    fields = Settings.model_fields
    for var, value in env.items():
        info = fields.get(var.removeprefix("GARRISON_").lower())
        # The worker inherits the harness's environment: a GARRISON_* set there applies.
        if info is None or os.environ.get(var, str(info.default)) != value:
            return True
    return False


def peer_phases(rates: list[tuple[str, float]], settings: dict[str, float]) -> list[Phase]:
    """The warm-up, then each rate (in increasing order) for ``peer_s`` seconds with the
    first ``peer_left_out_s`` left out."""
    warm = settings["peer_warm_s"]
    ordered = sorted(rates, key=lambda r: r[1])
    return [
        Phase("warm-up", FIXED_RATES[0], warm, warm),
        *(
            Phase(label, rate, settings["peer_s"], settings["peer_left_out_s"])
            for label, rate in ordered
        ),
    ]


def _cell(session: Session, label: str) -> str:
    lat = session.at(label)
    if lat is None:
        return "-"
    cpu, broker = lat.share("system"), lat.us_per_event("broker")
    return (
        f"{_ms(lat.p50_ms)}/{_ms(lat.p99_ms)} ms"
        + ("" if cpu is None else f" {cpu:.0%}")
        + ("" if broker is None else f" b{broker:,.0f}us")
        + ("" if not lat.unseen else f" ({lat.unseen:,} unseen)")
        + short_of_rate(lat)
    )


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def short_of_rate(lat: Latency) -> str:
    """A note when the harness did not send at the rate asked (a busy harness CPU)."""
    rate = lat.sent_rate
    return (
        "" if rate is None or abs(rate - lat.rate) <= 0.05 * lat.rate else f" (sent {rate:,.0f}/s)"
    )


async def measure_peers(ctx: PartContext) -> None:
    """The part: see the module doc."""
    report, s = ctx.report, ctx.settings
    rates = [(f"{r:.0f}", r) for r in FIXED_RATES]
    garrison = report.measured.get("garrison")
    if garrison is not None and garrison.complete and garrison.rate is not None:
        rates.append(("half", garrison.rate / 2))
        report.extra_figures["peer_latency_half_events_per_s"] = garrison.rate / 2
    else:
        report.notes.append("peer_latency: no half-rate runs (garrison's throughput did not run)")
    phases = peer_phases(rates, s)
    sessions: list[Session] = []
    for name, system, env in PEERS:
        if system in report.skipped:
            report.extra_lines.append(f"peer_latency {name}: skipped: {report.skipped[system]}")
            continue
        if env and not _differs_from_defaults(env):
            report.extra_lines.append(
                f"peer_latency {name}: skipped: its settings are garrison's defaults"
            )
            continue
        print(f"  peer_latency: {name} ...", flush=True)
        mine = phases
        if ctx.quick and name in QUICK_ONLY_AT:
            mine = [p for p in phases if p.label in ("warm-up", QUICK_ONLY_AT[name])]
        session = await latency_session(
            ctx.run,
            SYSTEMS[system],
            ctx.workload,
            mine,
            name=name,
            partitions=ctx.run.partitions,
            env=env,
        )
        sessions.append(session)
        report.sessions[name] = session
        if session.error is not None:
            report.notes.append(f"peer_latency {name}: {session.error}")
        for lat in session.latencies:
            if lat.label == "warm-up":
                continue
            for q, value in (("p50", lat.p50_ms), ("p99", lat.p99_ms)):
                if value is not None:
                    report.extra_figures[f"{name}_{q}_ms_at_{lat.label}"] = value
            if lat.unseen:
                report.notes.append(
                    f"peer_latency {name} at {lat.rate:,.0f} ev/s: {lat.unseen:,} state changes "
                    "not seen 30 s after the last send (it fell behind); a percentile among "
                    "them is unknown and has no figure"
                )
    report.extra_sections["peer_latency"] = {
        "rates": {label: round(rate, 1) for label, rate in rates},
        "phases": [vars(p) for p in phases],
        "sessions": {x.name: x.summary() for x in sessions},
    }
    if not sessions:
        return
    labels = [p.label for p in phases[1:]]
    heads = [
        f"{'half' if label == 'half' else ''} {dict(rates)[label]:,.0f} ev/s".strip()
        for label in labels
    ]
    report.extra_lines += [
        f"latency of the exactly-once peers (a fresh process each, topics of its own, "
        f"{ctx.run.partitions} partitions; {phases[0].seconds:.0f} s at "
        f"{phases[0].rate:,.0f} ev/s unmeasured, then {s['peer_s']:.0f} s per rate, the "
        f"first {s['peer_left_out_s']:.0f} s of each left out): p50/p99 ms, the system's "
        "CPU (share of a core), the broker's CPU per event",
        f"  {'system':22}" + "".join(f" {h:>30}" for h in heads),
        *(
            f"  {x.name:22}"
            + "".join(f" {_cell(x, label):>30}" for label in labels)
            + ("" if x.error is None else f"  ({x.error})")
            for x in sessions
        ),
        "  commits: "
        + "; ".join(
            f"{x.name}: {x.commits}" + (f" with {x.env}" if x.env else "") for x in sessions
        ),
    ]


PARTS["peer_latency"] = measure_peers
