"""Apache Kafka's broker jars, fetched once by Maven from Maven Central and cached.

`kafka-broker.pom.xml` beside this file pins the version. Its jars are copied into
`<cache>/kafka-<version>/libs` (`$MSGKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/msgkit`, else
`~/.cache/msgkit`) and reused from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from msgkit.errors import BrokerUnavailableError

POM = Path(__file__).with_name("kafka-broker.pom.xml")
MIN_JAVA = 17
_FETCH_SECONDS = 900.0


def kafka_version() -> str:
    """The Kafka version the pom pins."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert found, f"{POM} names no kafka.version"
    return found.group(1).strip()


def cache_dir() -> Path:
    base = os.environ.get("MSGKIT_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "msgkit"


def libs_dir() -> Path:
    """Named by the version and a hash of the pom: a changed pom fetches anew."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:8]
    return cache_dir() / f"kafka-{kafka_version()}-{digest}" / "libs"


def cached_jars() -> Path | None:
    """The jar folder when a complete fetch is cached, else None."""
    libs = libs_dir()
    return libs if (libs / ".complete").is_file() else None


def java() -> str:
    """The `java` to run (`$JAVA_HOME/bin/java` first); raises when there is none >= 17."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        where = f"at {candidate} ($JAVA_HOME)" if home else "on PATH"
        raise BrokerUnavailableError(f"no java {where}: Apache Kafka needs Java {MIN_JAVA}+ "
                                     "(apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)
    found = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not found or int(found.group(1)) < MIN_JAVA:
        raise BrokerUnavailableError(f"{candidate} is not Java {MIN_JAVA}+ ({out.stderr.strip()[:80]})")
    return candidate


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_jars() -> Path:
    """The broker's jars, fetched by Maven into the cache unless already there."""
    libs = cached_jars()
    if libs is not None:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailableError(
            f"Kafka {kafka_version()}'s jars are not cached in {libs_dir()} and Maven is not "
            "installed to fetch them (apt-get install maven)")
    libs = libs_dir()
    with _file_lock(libs.parent / ".fetch.lock"):
        if cached_jars() is not None:  # another process fetched them meanwhile
            return libs
        for stale in libs.parent.glob("libs.partial-*"):  # left by a killed fetch
            shutil.rmtree(stale, ignore_errors=True)
        partial = libs.with_name(f"libs.partial-{os.getpid()}")
        command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                   f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_FETCH_SECONDS)
        except subprocess.TimeoutExpired:
            raise BrokerUnavailableError(
                f"Maven did not fetch Kafka's jars within {_FETCH_SECONDS:.0f}s") from None
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise BrokerUnavailableError(
                f"Maven could not fetch Kafka {kafka_version()}: {(done.stdout + done.stderr)[-1500:]}")
        (partial / ".complete").touch()
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
    return libs
