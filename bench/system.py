"""The systems under test: how each one is prepared, started and stopped.

Every system reads the same input topic from the start in its own consumer group and
writes one state change per event to its own output topic. garrison runs as
``garrison worker bench.app`` configured by ``GARRISON_*`` variables; the baselines
take the process interface of :func:`bench.workload.baseline_args`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.affinity import Affinity
from bench.cpu import SessionCpu

__all__ = ["ROOT", "Process", "Run", "System", "SYSTEMS", "cpu_seconds", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "bench" / "baselines"
KSTREAMS = BASELINES / "kstreams"
KSTREAMS_JAR = KSTREAMS / "target" / "kstreams-baseline.jar"


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time process ``pid`` has used so far (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    """What every system of one harness run shares."""

    bootstrap: str
    app: str  # the bench app: input topic <app>.events
    partitions: int
    work_dir: Path  # state dirs live here
    log_dir: Path
    processes: list[Process] = field(default_factory=list)  # stopped at the end, whatever
    affinity: Affinity = field(default_factory=lambda: Affinity(None, None, "not planned"))
    broker_pid: int | None = None  # the local broker's JVM, for its CPU time

    def derived(self, app: str, partitions: int | None = None) -> Run:
        """The same run (broker, folders, pinning, processes to stop) for another app:
        topics of its own, ``partitions`` partitions."""
        return Run(
            self.bootstrap,
            app,
            self.partitions if partitions is None else partitions,
            self.work_dir,
            self.log_dir,
            self.processes,
            self.affinity,
            self.broker_pid,
        )

    @property
    def input(self) -> str:
        """The input topic."""
        return f"{self.app}.events"


@dataclass
class Process:
    """One system process in its own session, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    affinity: Affinity | None = None  # pinned to its system CPU when the plan says so
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    session_cpu: SessionCpu | None = None

    def start(self) -> None:
        """Start it (its output goes to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv if self.affinity is None else self.affinity.command(self.argv)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.session_cpu = SessionCpu(self.proc.pid)  # start_new_session: sid == pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to its process group, then SIGKILL after ``grace_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL its process group (a crash: no shutdown at all) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def peak_rss_mib(self) -> float | None:
        """The process's peak resident set (VmHWM), in MiB, while it runs."""
        if not self.alive():
            return None
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User and system CPU time the process and its children (its session) have
        used so far, or None once it ended."""
        if not self.alive() or self.session_cpu is None:
            return None
        return self.session_cpu()

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class System:
    """A system under test.

    ``check`` returns why it cannot run (None: it can), after building what it needs.
    A ``capped`` system is too slow to run the whole workload: its throughput run is
    stopped a fixed time after its first output.
    """

    name: str
    command: Callable[[Run, str, str, Path], tuple[list[str], dict[str, str]]]
    check: Callable[[], str | None] = lambda: None
    capped: bool = False
    commits: Callable[[], str] = lambda: ""  # its guarantee and commit interval, stated

    def output(self, run: Run) -> str:
        """Its output topic."""
        return (
            f"{run.app}.state-changes" if self.name == "garrison" else f"{run.app}.out.{self.name}"
        )

    def group(self, run: Run) -> str:
        """Its consumer group (garrison's is its app id)."""
        return run.app if self.name == "garrison" else f"{run.app}.{self.name}"

    def process(self, run: Run, *, tag: str = "") -> Process:
        """A process for one run of this system, with a fresh state dir."""
        state_dir = run.work_dir / f"{self.name}{tag}"
        run.work_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        argv, env = self.command(run, self.output(run), self.group(run), state_dir)
        proc = Process(self.name, argv, env, run.log_dir / f"{self.name}.log", run.affinity)
        run.processes.append(proc)
        return proc


def garrison_env(run: Run, state_dir: Path, web_port: int) -> dict[str, str]:
    """The worker's settings: the bench app, a data dir, a web port; the rest default."""
    return {
        "GARRISON_KAFKA_BOOTSTRAP": run.bootstrap,
        "GARRISON_APP": run.app,
        "GARRISON_DATA_DIR": str(state_dir),
        "GARRISON_KAFKA_PARTITIONS": str(run.partitions),
        "GARRISON_WEB_PORT": str(web_port),
        "GARRISON_LOG_LEVEL": "warn",
    }


def _garrison(
    run: Run, output: str, group: str, state_dir: Path
) -> tuple[list[str], dict[str, str]]:
    return (
        [sys.executable, "-m", "garrison", "worker", "bench.app"],
        garrison_env(run, state_dir, free_port()),
    )


def _interface(run: Run, output: str, group: str, state_dir: Path) -> list[str]:
    return [
        "--bootstrap",
        run.bootstrap,
        "--input",
        run.input,
        "--output",
        output,
        "--group",
        group,
        "--state-dir",
        str(state_dir),
        "--partitions",
        str(run.partitions),
    ]


# The third-party Python baselines live in their own venv (made by bench/run): their
# pins (quixstreams caps pydantic) must not move the versions garrison runs with.
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


# The exactly-once peers' commit intervals, passed explicitly (both are their own
# defaults) so that what the results state is what ran: quixstreams commits its
# transaction every 5 s, Kafka Streams under exactly_once_v2 every 100 ms.
QUIX_COMMIT_INTERVAL_S = 5.0
KSTREAMS_COMMIT_INTERVAL_MS = 100


def _script(
    path: Path, python: Path | str = sys.executable, extra: tuple[str, ...] = ()
) -> Callable[[Run, str, str, Path], tuple[list[str], dict[str, str]]]:
    def command(
        run: Run, output: str, group: str, state_dir: Path
    ) -> tuple[list[str], dict[str, str]]:
        return [str(python), str(path), *_interface(run, output, group, state_dir), *extra], {}

    return command


def _kstreams(
    run: Run, output: str, group: str, state_dir: Path
) -> tuple[list[str], dict[str, str]]:
    return [
        "java",
        "-jar",
        str(KSTREAMS_JAR),
        *_interface(run, output, group, state_dir),
        "--commit-interval-ms",
        str(KSTREAMS_COMMIT_INTERVAL_MS),
    ], {}


def _garrison_commit() -> str:
    from pipeline.settings import Settings

    # The worker inherits the harness's environment: a GARRISON_* set there applies.
    fields = Settings.model_fields
    size = os.environ.get("GARRISON_BATCH_SIZE", str(fields["batch_size"].default))
    wait = os.environ.get("GARRISON_BATCH_WAIT_MS", str(fields["batch_wait_ms"].default))
    return (
        "exactly once: a transaction per batch per partition, up to GARRISON_BATCH_SIZE="
        f"{size} events, a batch's first event waiting GARRISON_BATCH_WAIT_MS={wait} ms "
        "for more"
    )


def _check_quix() -> str | None:
    script = BASELINES / "quix.py"
    if not script.exists():
        return f"{script.relative_to(ROOT)} is missing"
    if not BENCH_PYTHON.exists():
        return f"{BENCH_PYTHON.relative_to(ROOT)} is missing; bench/run creates it"
    probe = subprocess.run(
        [str(BENCH_PYTHON), "-c", "import quixstreams"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"`import quixstreams` fails ({last}); add bench/requirements-bench.txt"
    return None


def _check_kstreams() -> str | None:
    pom = KSTREAMS / "pom.xml"
    if not pom.exists():
        return f"{pom.relative_to(ROOT)} is missing"
    if shutil.which("java") is None:
        return "java is not on PATH"
    sources = [pom, *(p for p in (KSTREAMS / "src").rglob("*") if p.is_file())]
    newest = max(p.stat().st_mtime for p in sources)
    if KSTREAMS_JAR.exists() and KSTREAMS_JAR.stat().st_mtime >= newest:
        return None
    mvn = shutil.which("mvn")
    if mvn is None:
        return "the jar needs building and mvn is not on PATH"
    print("  building the Kafka Streams baseline (mvn package) ...", flush=True)
    try:
        done = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "package", "-DskipTests"],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return "mvn package took longer than 10 minutes"
    if done.returncode != 0 or not KSTREAMS_JAR.exists():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        return f"mvn package failed (exit {done.returncode}): {tail}"
    return None


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("garrison", _garrison, commits=_garrison_commit),
        System(
            "aiokafka_loop",
            _script(BASELINES / "aiokafka_loop.py"),
            commits=lambda: "at least once: offsets committed after each fetched batch",
        ),
        System(
            "faust_naive",
            _script(BASELINES / "faust_naive.py"),
            capped=True,
            commits=lambda: "at least once: Faust's offset commits",
        ),
        System(
            "quixstreams",
            _script(
                BASELINES / "quix.py",
                BENCH_PYTHON,
                ("--commit-interval", str(QUIX_COMMIT_INTERVAL_S)),
            ),
            check=_check_quix,
            commits=lambda: (
                'processing_guarantee="exactly-once", commit_interval '
                f"{QUIX_COMMIT_INTERVAL_S} s (quixstreams' default)"
            ),
        ),
        System(
            "kafka_streams",
            _kstreams,
            check=_check_kstreams,
            commits=lambda: (
                f"exactly_once_v2, commit.interval.ms {KSTREAMS_COMMIT_INTERVAL_MS} "
                "(Kafka Streams' default under exactly-once)"
            ),
        ),
    )
}
