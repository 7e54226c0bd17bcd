"""A RabbitMQ cluster on loopback for tests: `nodes` nodes of the local installation, each with
its own node name and ports, joined into one cluster (quorum queues replicate on all).

Independent of the test broker on 5672: the failover tests kill its nodes. Every start wipes
the nodes' data (`/var/lib/rabbitmq/mnesia/<node>`, where `join_cluster` needs it) and kills
what an earlier run left of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.system import ensure_installed, free_port, port_open, run

PREFIX = "msgkit-node"
_MNESIA = Path("/var/lib/rabbitmq/mnesia")
_START_SECONDS = 120.0


class RabbitNode:
    """One node: its name, ports, and the server process (started in a session of its own)."""

    def __init__(self, name: str, root: Path, server: str, ports: set[int],
                 config: Path | None = None) -> None:
        self.name = f"{name}@localhost"
        self.port = free_port(ports)
        self.dist_port = free_port(ports)
        self.plugins = root / f"plugins-{name}"
        self.plugins.write_text("[].\n")  # no plugins: nothing to start but the broker
        self.log_dir = root
        self.server = server
        self.config = config
        """A rabbitmq.conf for this node (e.g. a TLS listener), or none."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        env = {**os.environ, "RABBITMQ_NODENAME": self.name,
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_CONFIG_FILE": str(self.config or "/nonexistent"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins),
               "RABBITMQ_LOG_BASE": str(self.log_dir)}
        self.process = subprocess.Popen(
            [self.server], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        done = run("rabbitmqctl", "-n", self.name, *args, timeout=timeout)
        if done.returncode != 0:
            raise BrokerUnavailableError(
                f"rabbitmqctl -n {self.name} {' '.join(args)} failed: "
                f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def await_startup(self) -> None:
        """Blocks until the node's broker runs (`await_startup` needs its VM up first)."""
        deadline = time.monotonic() + _START_SECONDS
        while run("rabbitmqctl", "-n", self.name, "ping", timeout=15).returncode != 0:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerUnavailableError(
                    f"RabbitMQ node {self.name} exited ({self.process.returncode}): "
                    f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"RabbitMQ node {self.name} did not start: {self.log_tail()}")
            time.sleep(0.3)
        self.ctl("await_startup", "--timeout", str(int(_START_SECONDS)), timeout=_START_SECONDS + 10)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the node's log, for an error that must say why (a test fixture may
        delete the directory right after)."""
        logs = sorted(self.log_dir.glob(f"{self.name}*.log"), key=lambda p: p.stat().st_size)
        if not logs:
            return f"no log in {self.log_dir}"
        text = logs[-1].read_text(errors="replace").splitlines()[-lines:]
        return f"{logs[-1]} ends:\n" + "\n".join(text)

    def pid(self) -> int | None:
        """The node's Erlang VM, if it runs (its launcher script may have exec'd into it)."""
        done = run("rabbitmqctl", "-n", self.name, "eval", "os:getpid().", timeout=15)
        text = done.stdout.strip().strip('"')
        return int(text) if done.returncode == 0 and text.isdigit() else None

    def kill(self) -> None:
        """SIGKILL of the node's VM: it dies at once, as with a lost machine."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    @property
    def running(self) -> bool:
        return port_open("127.0.0.1", self.port)


class LocalRabbitCluster:
    def __init__(self, nodes: int = 3) -> None:
        self.server = ensure_installed("rabbitmq-server", "rabbitmq-server",
                                       "a RabbitMQ installation for a local cluster",
                                       "MSGKIT_TEST_AMQP_URL")
        self.root = Path(f"/tmp/msgkit-rabbit-cluster-{os.getpid()}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        shutil.chown(self.root, "rabbitmq", "rabbitmq")  # the server runs as rabbitmq
        self.ports: set[int] = set()
        self.nodes = [RabbitNode(f"{PREFIX}{i}", self.root, self.server, self.ports)
                      for i in range(1, nodes + 1)]
        kill_leftovers()
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.await_startup()
            first = self.nodes[0]
            for node in self.nodes[1:]:  # one at a time: a join needs every member running
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
                node.await_startup()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """Every node in one URL."""
        return "amqp://guest:guest@" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def url_from(self, node: RabbitNode) -> str:
        """Every node in one URL, `node` first (clients connect to it first)."""
        rest = [n for n in self.nodes if n is not node]
        return "amqp://guest:guest@" + ",".join(f"127.0.0.1:{n.port}" for n in [node, *rest]) + "/"

    def wait_ready(self, timeout: float = _START_SECONDS) -> None:
        """Blocks until every node that should run answers and sees all of them running."""
        deadline = time.monotonic() + timeout
        want = {n.name for n in self.nodes}
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.running:
                    continue
                done = run("rabbitmqctl", "-n", node.name, "cluster_status", "--formatter",
                           "json", timeout=15)
                last = (done.stdout or done.stderr).strip()[-500:]
                with contextlib.suppress(ValueError):
                    if want <= set(json.loads(done.stdout).get("running_nodes", ())):
                        return
                break
            time.sleep(0.3)
        raise BrokerUnavailableError(f"RabbitMQ cluster not ready after {timeout:.0f}s: {last}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        kill_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)


def kill_leftovers(names: str = f"{PREFIX}[0-9]+", prefix: str = PREFIX) -> None:
    """Kills nodes of an earlier run (node names matching the regex `names`) and wipes their
    data (directories starting with `prefix`), so each starts new."""
    run("pkill", "-KILL", "-f", f"{names}@localhost", timeout=10)
    for path in _MNESIA.glob(f"{prefix}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
