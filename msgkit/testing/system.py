"""Bringing up the system services that tests need (RabbitMQ, Redis, PostgreSQL) on a
machine where nothing started them: find them, start installed ones, install missing ones
from Debian's packages when running as root with apt.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from msgkit.errors import BrokerUnavailableError

_POLICY_RC = Path("/usr/sbin/policy-rc.d")
_random = random.SystemRandom()  # test runners reseed `random`: each test would pick alike


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(taken: set[int] | None = None, *, span: int = 1) -> int:
    """A port free now on every address, with the `span - 1` ports after it, none in `taken`
    (the ports a cluster already chose; the chosen ones are added to it).

    Chosen below the kernel's ephemeral range: a port the kernel handed out for `bind(0)`
    is one an outgoing connection can take before the server that was meant to get it binds.
    """
    taken = set() if taken is None else taken
    lowest = _ephemeral_start()
    while True:
        port = _random.randrange(max(1024, lowest - 12000), lowest - span)
        ports = range(port, port + span)
        if not taken.intersection(ports) and all(map(_bindable, ports)):
            taken.update(ports)
            return port


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def run(*command: str, timeout: float = 120, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `command` (as `user` when given and we are root); never raises on its exit code."""
    if user is not None and os.geteuid() == 0:
        command = ("runuser", "-u", user, "--", *command)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(command, -1, "", f"timed out after {exc.timeout}s")


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Packages install without their init scripts starting the service: the tests start
    their own instance, configured for them (Debian's policy-rc.d convention)."""
    if _POLICY_RC.exists():
        yield
        return
    _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
    _POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC.unlink(missing_ok=True)


def apt_install(*packages: str) -> None:
    """Installs Debian packages (refreshing the package lists once if they are stale)."""
    install = ("apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-q",
               "--no-install-recommends", *packages)
    with _services_not_started():
        done = run(*install, timeout=900)
        if done.returncode != 0:
            run("apt-get", "update", "-q", timeout=600)
            done = run(*install, timeout=900)
    if done.returncode != 0:
        raise BrokerUnavailableError(
            f"apt-get install {' '.join(packages)} failed: {(done.stdout + done.stderr)[-1000:]}")


def ensure_installed(command: str, package: str, what: str, env_var: str) -> str:
    """The path of `command`, installing `package` first when root with apt; else raises
    saying how to provide `what`."""
    found = shutil.which(command)
    if found:
        return found
    if not can_install():
        raise BrokerUnavailableError(
            f"{what} is not running and {command} is not installed: install it "
            f"(apt-get install {package}), start it, or set ${env_var}")
    apt_install(package)
    found = shutil.which(command)
    if not found:
        raise BrokerUnavailableError(f"installed {package} but {command} is not on PATH")
    return found
