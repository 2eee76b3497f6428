"""A local, single-node Apache Kafka (KRaft) that garrison starts itself, without Docker.

The broker jars come from Maven Central through Maven, once, into a per-user cache;
each broker then gets its own state folder (data, config, log, pid, port). The same
:class:`LocalKafka` backs ``garrison kafka up|down|status`` and the test fixtures.

Example::

    kafka = LocalKafka(state_dir=Path("/tmp/k"), port=0)
    bootstrap = kafka.up()          # "127.0.0.1:40123"; calling it again is safe
    kafka.down()
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from garrison.kafka_install import (
    BrokerError,
    check_java,
    pid_alive,
    reap,
    resolve_jars,
    signal_group,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStatus",
    "LocalKafka",
    "default_cache_dir",
    "default_state_dir",
]

KAFKA_VERSION = "4.1.1"
_READY_TIMEOUT_S = 60.0

_LOG4J2 = """status = error
appender.file.type = Console
appender.file.name = OUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def default_cache_dir() -> Path:
    """Where broker jars are cached: ``$GARRISON_CACHE`` or ``~/.cache/garrison``."""
    base = os.environ.get("GARRISON_CACHE") or os.path.join(Path.home(), ".cache", "garrison")
    return Path(base)


def default_state_dir() -> Path:
    """The state folder of the broker that ``garrison kafka up`` manages."""
    return default_cache_dir() / "broker"


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``status`` found: whether the broker runs, its pid and bootstrap address."""

    running: bool
    pid: int | None
    bootstrap: str | None

    def describe(self) -> str:
        """One line for a person."""
        if self.running:
            return f"kafka is running (pid {self.pid}) at {self.bootstrap}"
        return "kafka is not running"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalKafka:
    """One local KRaft broker+controller bound to 127.0.0.1, with its own state folder.

    ``port=None`` means 9092 (what ``GARRISON_KAFKA_BOOTSTRAP`` defaults to), ``port=0`` a
    free port chosen at start. The jars are shared by every broker through ``cache_dir``.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        port: int | None = None,
        cache_dir: Path | None = None,
        heap_mb: int = 512,
        version: str = KAFKA_VERSION,
    ) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.cache_dir = cache_dir or default_cache_dir()
        self.port = 9092 if port is None else port
        self.heap_mb = heap_mb
        self.version = version

    @property
    def lib_dir(self) -> Path:
        """The folder holding the broker's jars."""
        return self.cache_dir / f"kafka-{self.version}" / "lib"

    # -- jars ---------------------------------------------------------------------------

    def resolve(self) -> Path:
        """Fetch the broker jars from Maven Central into the cache, once; return their folder."""
        return resolve_jars(self.lib_dir, self.version)

    # -- lifecycle ----------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Whether the broker of this state folder runs, from its pid and port files."""
        pid = self._read_int("broker.pid")
        port = self._read_int("broker.port")
        if pid is not None and pid_alive(pid) and port is not None and _port_open(port):
            return BrokerStatus(True, pid, f"127.0.0.1:{port}")
        return BrokerStatus(False, None, None)

    def up(self) -> str:
        """Start the broker unless it runs already; wait until it answers; return bootstrap."""
        current = self.status()
        if current.running:
            assert current.bootstrap is not None
            return current.bootstrap
        java = check_java()
        lib = self.resolve()
        port = self.port or _free_port()
        if _port_open(port):
            raise BrokerError(
                f"port {port} on 127.0.0.1 is taken by another process; stop it, or pass "
                "--port 0 for a free port (and point GARRISON_KAFKA_BOOTSTRAP at it)."
            )
        # The KRaft voter set is written at format time with the controller's address,
        # so a broker restarted on its old data keeps its old controller port.
        controller_port = self._read_int("controller.port")
        if controller_port is None or _port_open(controller_port):
            controller_port = _free_port()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "controller.port").write_text(str(controller_port))
        self._write_config(port, controller_port)
        self._format(java, lib)
        log = open(self.state_dir / "broker.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [
                java,
                f"-Xmx{self.heap_mb}m",
                f"-Xms{min(self.heap_mb, 256)}m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
                "-cp",
                f"{lib}/*",
                "kafka.Kafka",
                str(self.state_dir / "server.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.state_dir,
        )
        log.close()
        (self.state_dir / "broker.pid").write_text(str(proc.pid))
        (self.state_dir / "broker.port").write_text(str(port))
        bootstrap = f"127.0.0.1:{port}"
        try:
            self._wait_ready(proc, bootstrap)
        except BaseException:
            self.down()
            raise
        return bootstrap

    def kill(self) -> bool:
        """SIGKILL the broker (no shutdown at all, as a crash); True if one ran. Its data
        stays; :meth:`up` starts it again on it."""
        pid = self._read_int("broker.pid")
        if pid is None or not pid_alive(pid):
            return False
        signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.05)
        return True

    def down(self, *, purge: bool = False, timeout_s: float = 20.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); True if one ran."""
        pid = self._read_int("broker.pid")
        was_running = pid is not None and pid_alive(pid)
        if pid is not None and was_running:
            signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while pid_alive(pid) and time.monotonic() < deadline:
                reap(pid)
                time.sleep(0.1)
            if pid_alive(pid):
                signal_group(pid, signal.SIGKILL)
                while pid_alive(pid) and time.monotonic() < deadline + 5:
                    reap(pid)
                    time.sleep(0.05)
        for name in ("broker.pid", "broker.port"):
            (self.state_dir / name).unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return was_running

    # -- internals ----------------------------------------------------------------------

    def _read_int(self, name: str) -> int | None:
        try:
            return int((self.state_dir / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _write_config(self, port: int, controller_port: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = self.state_dir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "log.cleaner.threads": "1",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.state_dir / "server.properties").write_text(text)
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2)

    def _format(self, java: str, lib: Path) -> None:
        data = self.state_dir / "data"
        if (data / "meta.properties").exists():
            return  # formatted before: keep the topics of the last run
        cmd = [
            java,
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "-t",
            uuid.uuid4().hex[:22],
            "-c",
            str(self.state_dir / "server.properties"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {data} failed:\n{(done.stdout + done.stderr)[-2000:]}"
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], bootstrap: str) -> None:
        noisy = logging.getLogger("aiokafka")
        was, noisy.disabled = noisy.disabled, True  # refused connects are expected here
        try:
            self._poll_ready(proc, bootstrap)
        finally:
            noisy.disabled = was

    def _poll_ready(self, proc: subprocess.Popen[bytes], bootstrap: str) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"kafka exited with code {proc.returncode} while starting; "
                    f"last lines of {self.state_dir / 'broker.log'}:\n"
                    f"{self._log_tail()}"
                )
            try:
                if asyncio.run(_answers_metadata(bootstrap)):
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = repr(exc)
            time.sleep(0.3)
        raise BrokerError(
            f"kafka did not answer a metadata request at {bootstrap} within "
            f"{_READY_TIMEOUT_S:.0f}s ({last}); log tail:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = (self.state_dir / "broker.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-25:])


async def _answers_metadata(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    finally:
        await client.close()
