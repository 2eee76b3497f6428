"""The harness's output: the printed table and ``bench/results/latest.json``."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.latency import Latency
from bench.restore import Restore
from bench.session import Session
from bench.throughput import Measured

__all__ = ["Report", "machine_info", "source_info"]

ORDER = ("garrison", "aiokafka_loop", "faust_naive", "quixstreams", "kafka_streams")


def _first_line(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def source_info(root: Path) -> dict[str, Any]:
    """The checked-out commit, and whether tracked files differ from it (read-only git)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return {"commit": None, "modified": None}
    dirty = subprocess.run(
        ["git", "diff-index", "--quiet", "HEAD", "--"], cwd=root, capture_output=True, check=False
    )
    return {"commit": head.stdout.strip(), "modified": dirty.returncode != 0}


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS, Python and Java of this machine, and its load right now."""
    mem_kb = _first_line("/proc/meminfo", "MemTotal")
    java = None
    if shutil.which("java"):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java = (
            (out.stderr or out.stdout).strip().splitlines()[0]
            if (out.stderr or out.stdout)
            else None
        )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "memory_mib": int(mem_kb.split()[0]) // 1024 if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


@dataclass
class Report:
    """Everything one harness run found."""

    params: dict[str, Any]
    machine: dict[str, Any]
    measured: dict[str, Measured] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    latencies: dict[int, Latency] = field(default_factory=dict)  # by 1/share of the rate
    restore: Restore | None = None
    statechart: dict[str, float] = field(default_factory=dict)
    transactions: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the feature parts (bench/parts.py) measured, under the names their issues
    # give, and the lines they print.
    extra_figures: dict[str, float] = field(default_factory=dict)
    extra_ratios: dict[str, float] = field(default_factory=dict)
    extra_lines: list[str] = field(default_factory=list)
    # What a part measured in detail, under its name in the results' ``sections``.
    extra_sections: dict[str, Any] = field(default_factory=dict)
    # Latency sessions by name (bench/session.py), for a part that builds on another's.
    sessions: dict[str, Session] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds each step took

    def rate(self, name: str) -> float | None:
        """A system's events/s, if it ran and produced a rate."""
        m = self.measured.get(name)
        return None if m is None else m.rate

    def figures(self) -> dict[str, float]:
        """The headline numbers (only of what ran)."""
        out: dict[str, float] = {}
        for name in ORDER:
            rate = self.rate(name)
            if rate is not None:
                out[f"{name}_events_per_s"] = round(rate, 1)
            m = self.measured.get(name)
            if m is not None and m.cpu_us_per_event is not None:
                out[f"{name}_cpu_us_per_event"] = round(m.cpu_us_per_event, 1)
            if m is not None and m.broker_cpu_us_per_event is not None:
                out[f"{name}_broker_cpu_us_per_event"] = round(m.broker_cpu_us_per_event, 1)
        for share, prefix in ((2, "latency"), (4, "latency_quarter_rate")):
            lat = self.latencies.get(share)
            if lat is not None and lat.p50_ms is not None and lat.p99_ms is not None:
                out[f"{prefix}_p50_ms"] = round(lat.p50_ms, 1)
                out[f"{prefix}_p99_ms"] = round(lat.p99_ms, 1)
                out[f"{prefix.replace('_rate', '')}_rate_events_per_s"] = round(lat.rate, 1)
                if lat.worker_cpu is not None:
                    out[f"{prefix}_worker_cpu"] = round(lat.worker_cpu, 2)
        out.update({k: round(v, 3) for k, v in self.statechart.items()})
        out.update({k: round(v, 3) for k, v in self.transactions.items()})
        if self.restore is not None:
            size = self.params["instances_total"]
            tag = "1m" if size == 1_000_000 else str(size)
            if self.restore.seconds is not None:
                out[f"restore_{tag}_s"] = round(self.restore.seconds, 1)
            if self.restore.rss_mib is not None:
                out[f"rss_{tag}_mib"] = round(self.restore.rss_mib, 1)
            if self.restore.rss_restored_mib is not None:
                out[f"rss_restored_{tag}_mib"] = round(self.restore.rss_restored_mib, 1)
        out.update({k: round(v, 3) for k, v in self.extra_figures.items()})
        return out

    def ratios(self) -> dict[str, float]:
        """garrison's events/s over each other system's."""
        ours = self.rate("garrison")
        out: dict[str, float] = {}
        for name in ORDER[1:]:
            theirs = self.rate(name)
            if ours is not None and theirs:
                out[f"garrison_vs_{name}"] = round(ours / theirs, 3)
        out.update({k: round(v, 3) for k, v in self.extra_ratios.items()})
        return out

    def to_json(self) -> bytes:
        """The results file's content."""
        self.machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        doc = {
            "figures": self.figures(),
            "ratios": self.ratios(),
            "machine": self.machine,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": self.params,
            "systems": {
                name: {
                    "events_per_s": None if m.rate is None else round(m.rate, 1),
                    "outputs": m.outputs,
                    "span_s": round(m.span_s, 3),
                    "startup_s": None if m.startup_s is None else round(m.startup_s, 1),
                    "ended": m.ended,
                    "verified": m.verified,
                    "cpu_s": None if m.cpu_s is None else round(m.cpu_s, 3),
                    "broker_cpu_s": None if m.broker_cpu_s is None else round(m.broker_cpu_s, 3),
                    "cores": None if m.cores is None else round(m.cores, 3),
                    "cpus": m.cpus,
                }
                for name, m in self.measured.items()
            },
            "skipped": self.skipped,
            "sections": self.extra_sections,
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
            "latency": {f"1/{k}": vars(v) for k, v in self.latencies.items()},
            "restore": None if self.restore is None else vars(self.restore),
            "notes": self.notes,
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"

    def lines(self) -> list[str]:
        """The printed summary."""
        ours = self.rate("garrison")
        pin = self.params.get("pinning", {})
        out = [
            f"{'system':15} {'events/s':>10} {'outputs':>10} {'span s':>7} {'start s':>7} "
            f"{'garrison/x':>10} {'cpu us/ev':>9} {'cores':>5} {'broker us/ev':>12}  run"
        ]
        blank = f"{'':>10} {'':>7} {'':>7} {'':>10} {'':>9} {'':>5} {'':>12}"
        for name in ORDER:
            m = self.measured.get(name)
            if m is None:
                reason = self.skipped.get(name, "not selected (--only)")
                out.append(f"{name:15} {'-':>10} {blank}  skipped: {reason}")
                continue
            ratio = ours / m.rate if ours is not None and m.rate else None
            out.append(
                f"{name:15} {_num(m.rate):>10} {m.outputs:>10,} {m.span_s:>7.1f} "
                f"{_num(m.startup_s, 1):>7} {_num(ratio, 2):>10} "
                f"{_num(m.cpu_us_per_event, 1):>9} {_num(m.cores, 2):>5} "
                f"{_num(m.broker_cpu_us_per_event, 1):>12}  "
                f"{m.ended}; {m.verified}"
            )
        if self.measured:
            out.append(
                "cpu us/ev: CPU time of the system's processes per output, from its first "
                "output to its last (catch-up); cores: the same as a share of one core; "
                "broker us/ev: the broker's CPU per output over the same window"
            )
        if pin:
            out.append(str(pin.get("description")))
        for part in ("latency", "restore"):
            if part in self.skipped:
                out.append(f"{part}: skipped: {self.skipped[part]}")
        for share, lat in sorted(self.latencies.items()):
            out.append(
                f"latency at 1/{share} of garrison's rate, {lat.rate:,.0f} ev/s for "
                f"{lat.seconds:.0f} s (first "
                f"{lat.warmup_s:.0f} s left out): p50 {_num(lat.p50_ms, 1)} ms, p99 "
                f"{_num(lat.p99_ms, 1)} ms, max {_num(lat.max_ms, 1)} ms "
                f"({lat.received:,}/{lat.sent:,} state changes seen)"
                + (
                    ""
                    if lat.worker_cpu is None
                    else f"; the worker used {lat.worker_cpu:.0%} of a core"
                )
            )
        sc = self.statechart
        if sc:
            line = (
                f"statechart: {sc['statechart_transitions_per_s']:,.0f} transitions/s "
                f"({sc['statechart_us_per_transition']:.2f} us each)"
            )
            if "python_statemachine_sends_per_s" in sc:
                line += (
                    f"; python-statemachine {sc['python_statemachine_sends_per_s']:,.0f}"
                    f" sends/s (x{sc['statechart_vs_python_statemachine']:.1f})"
                )
            out.append(line)
        tx = self.transactions
        if tx:

            def way(name: str) -> str:
                broker = tx.get(f"{name}_broker_cpu_ms_per_batch")
                return (
                    f"{tx[f'{name}_batches_per_s']:,.0f} batches/s, "
                    f"{tx[f'{name}_client_cpu_ms_per_batch']:.2f} ms client CPU"
                    + ("" if broker is None else f" + {broker:.2f} ms broker CPU")
                    + " each"
                )

            line = (
                f"transactions ({tx['txn_lanes']:.0f} lanes, batches of "
                f"{tx['txn_records_per_batch']:.0f} records): in a transaction "
                f"{way('txn')}; idempotent, no transaction {way('plain')}; CPU per "
                f"batch x{tx['txn_vs_plain_client_cpu']:.2f} client"
            )
            if "txn_vs_plain_broker_cpu" in tx:
                line += f", x{tx['txn_vs_plain_broker_cpu']:.2f} broker"
            out.append(line)
        r = self.restore
        if r is not None:
            out.append(
                f"restore of {self.params['instances_total']:,} instances: "
                f"{_num(r.seconds, 1)} s to serve {r.sampled} sampled instances "
                f"({r.changelog_offsets:,} changelog offsets; {r.note}); peak RSS "
                f"{_num(r.rss_mib)} MiB after the run, {_num(r.rss_restored_mib)} MiB "
                f"restored"
            )
        out.extend(self.extra_lines)
        ratios = self.ratios()
        if ratios:
            out.append("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        out.extend(self.notes)
        return out
