"""The ``partitions`` part: what one worker's partition count costs, measured.

One garrison worker (default settings) owning 4 partitions, then one owning 32, each
in a latency session (:mod:`bench.session`: a fresh process on topics of its own),
at 2,000 events/s after the same unmeasured warm-up as the peers. When the
``peer_latency`` part has just measured garrison with 4 partitions the same way (its
session ran last among the peers, warm-up then 2,000 events/s first), that session
is the 4-partition one, and the 32-partition worker starts right after it. For each count:
p50/p99 latency, the worker's and the broker's CPU per event, and the transaction
markers per second on its state-change topic (one per partition a transaction wrote
to; a measure of how many transactions commit). The paced producer writes one record
batch per partition that has events each 5 ms, so with more partitions it also
sends the broker more, smaller batches: that is part of the broker's figure, as it
would be for any producer of the events topic.

Figures ``partitions_<n>_p50_ms``, ``partitions_<n>_p99_ms``,
``partitions_<n>_cpu_us_per_event``, ``partitions_<n>_broker_cpu_us_per_event``,
``partitions_<n>_markers_per_s``; ratios ``p99_32_vs_4_partitions``,
``broker_cpu_32_vs_4_partitions``, ``cpu_32_vs_4_partitions``.
"""

from __future__ import annotations

from bench.latency import Latency, Phase
from bench.parts import PARTS, PartContext
from bench.peer import short_of_rate
from bench.session import Session, latency_session
from bench.system import SYSTEMS

__all__ = ["COUNTS", "RATE", "measure_partitions"]

COUNTS = (4, 32)
RATE = 2000.0


def _reusable(ctx: PartContext, count: int, phases: list[Phase]) -> Session | None:
    """garrison's peer_latency session, when it just ran this protocol on ``count``
    partitions: the warm-up and then 2,000 events/s first (saves a worker start)."""
    session = ctx.report.sessions.get("garrison")
    if session is None or session.error is not None or session.partitions != count:
        return None
    return session if session.phases[: len(phases)] == phases else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


async def measure_partitions(ctx: PartContext) -> None:
    """The part: see the module doc."""
    report, s = ctx.report, ctx.settings
    warm = s["peer_warm_s"]
    phases = [
        Phase("warm-up", RATE, warm, warm),
        Phase(f"{RATE:.0f}", RATE, s["peer_s"], s["peer_left_out_s"]),
    ]
    measured: dict[int, Latency] = {}
    sections = {}
    f = report.extra_figures
    for count in COUNTS:
        session = _reusable(ctx, count, phases)
        if session is None:
            print(f"  partitions: one worker, {count} partitions ...", flush=True)
            session = await latency_session(
                ctx.run,
                SYSTEMS["garrison"],
                ctx.workload,
                phases,
                name=f"p{count}",
                partitions=count,
            )
        else:
            print(f"  partitions: {count}: the garrison peer_latency session", flush=True)
        sections[str(count)] = {"session": session.name, **session.summary()}
        lat = session.at(phases[1].label)
        if session.error is not None or lat is None or lat.p99_ms is None or lat.p50_ms is None:
            why = session.error or (
                "no latencies" if lat is None else f"{lat.unseen:,} state changes unseen"
            )
            report.notes.append(f"partitions {count}: {why}")
            continue
        measured[count] = lat
        f[f"partitions_{count}_p50_ms"] = lat.p50_ms
        f[f"partitions_{count}_p99_ms"] = lat.p99_ms
        for key, value in (
            ("cpu_us_per_event", lat.us_per_event("system")),
            ("broker_cpu_us_per_event", lat.us_per_event("broker")),
            ("markers_per_s", lat.markers_per_s),
        ):
            if value is not None:
                f[f"partitions_{count}_{key}"] = value
    report.extra_sections["partitions"] = {"rate": RATE, "sessions": sections}
    few, many = COUNTS
    a, b = measured.get(many), measured.get(few)
    if a is None or b is None:
        return
    r = report.extra_ratios
    for key, ours, theirs in (
        ("p99", a.p99_ms, b.p99_ms),
        ("broker_cpu", a.us_per_event("broker"), b.us_per_event("broker")),
        ("cpu", a.us_per_event("system"), b.us_per_event("system")),
    ):
        if (value := _ratio(ours, theirs)) is not None:
            r[f"{key}_{many}_vs_{few}_partitions"] = value

    def describe(count: int, lat: Latency) -> str:
        cpu, broker = lat.us_per_event("system"), lat.us_per_event("broker")
        markers = lat.markers_per_s
        return (
            f"{count} partitions p50 {lat.p50_ms:,.1f} ms, p99 {lat.p99_ms:,.1f} ms, "
            f"worker {'-' if cpu is None else f'{cpu:,.0f}'} us/event, broker "
            f"{'-' if broker is None else f'{broker:,.0f}'} us/event, "
            f"{'-' if markers is None else f'{markers:,.0f}'} markers/s{short_of_rate(lat)}"
        )

    report.extra_lines.append(
        f"partitions per worker at {RATE:,.0f} ev/s ({s['peer_s']:.0f} s, first "
        f"{s['peer_left_out_s']:.0f} s left out): {describe(few, b)}; {describe(many, a)}"
    )


PARTS["partitions"] = measure_partitions
