"""Installing and running the local broker's parts: the Kafka jars from Maven Central,
a Java runtime check, and the process helpers the runner uses.

The jars come through Maven once, into a per-user cache shared by every local broker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from pipeline.errors import GarrisonError

__all__ = ["BrokerError", "check_java", "pid_alive", "reap", "resolve_jars", "signal_group"]

_LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>garrison.local</groupId><artifactId>kafka-jars</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


class BrokerError(GarrisonError):
    """The local Kafka broker could not be resolved, started or reached."""


def check_java() -> str:
    """The java executable, if it is Java 17 or newer; else :class:`BrokerError`."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java was not found on PATH; the local Kafka broker needs Java 17 or newer. "
            "Install a JDK (e.g. `apt-get install openjdk-17-jdk-headless`), or run "
            "`docker compose up -d kafka` and set GARRISON_KAFKA_BOOTSTRAP=localhost:9092."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major < 17:
        raise BrokerError(
            f"java at {java} is version {major or 'unknown'}; Kafka 4 needs 17 "
            "or newer. Install a JDK 17+, or use `docker compose up -d kafka` and set "
            "GARRISON_KAFKA_BOOTSTRAP."
        )
    return java


def resolve_jars(lib_dir: Path, version: str) -> Path:
    """Fetch the broker jars from Maven Central into the cache, once; return their folder."""
    marker = lib_dir.parent / ".complete"
    if marker.exists():
        return lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn was not found on PATH; it fetches the Kafka broker jars from Maven Central "
            "once. Install Maven (e.g. `apt-get install maven`), or run "
            "`docker compose up -d kafka` and set GARRISON_KAFKA_BOOTSTRAP."
        )
    work = lib_dir.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=_LOG4J_VERSION))
    cmd = [
        mvn,
        "-q",
        "-B",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={lib_dir}",
    ]
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise BrokerError(
            f"Maven could not fetch Kafka {version} jars (exit {done.returncode}). "
            f"Check that Maven Central is reachable. Maven said:\n{tail}"
        )
    if not any(lib_dir.glob(f"kafka_2.13-{version}.jar")):
        raise BrokerError(
            f"Maven finished but kafka_2.13-{version}.jar is missing "
            f"from {lib_dir}; delete {work} and try again."
        )
    marker.write_text(version)
    return lib_dir


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); /proc tells it apart.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group of ``pid`` (or the process, if it has none)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our child and has exited."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
