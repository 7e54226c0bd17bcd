"""A local Apache Kafka for tests and benchmarks: KRaft nodes (broker and controller in one
process) run with `java` from the jars `kafka_jars` fetched. Each `LocalKafka` formats
fresh log directories in a temporary folder, listens on free loopback ports and deletes
the folder on `stop()`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.system import free_port
from msgkit_kafka.kafka_jars import fetch_jars, java

_START_SECONDS = 60.0
_ROOT_PREFIX = "msgkit-kafka-"

# Settings that keep tests fast without changing what clients see: no delay before the
# first rebalance, short sessions allowed, fewer partitions for the internal topics.
TEST_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.num.partitions": "10",
}

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
# "Kafka version: ..." at start: says which broker ran.
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = info
"""


def random_cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` makes one: never starting with "-",
    which the tools' argument parser would take for an option (1 in 64 would)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _with_parent(command: list[str]) -> list[str]:
    """`command` run so that it is SIGKILLed when the thread starting it dies (util-linux
    `setpriv --pdeathsig`), so that a killed test run leaves no broker behind. Only from
    the main thread: a worker thread's exit would kill the broker with it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return command
    return [setpriv, "--pdeathsig", "KILL", *command]


def _sweep_stale_roots() -> None:
    """Removes the folders of local brokers whose process is gone (a killed test run)."""
    for root in Path(tempfile.gettempdir()).glob(f"{_ROOT_PREFIX}*"):
        pid = root.name.removeprefix(_ROOT_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(root, ignore_errors=True)


class KafkaNode:
    """One KRaft node: its own ports, log directory and process."""

    def __init__(self, kafka: LocalKafka, node_id: int) -> None:
        self.kafka = kafka
        self.node_id = node_id
        self.port = free_port(kafka.ports)
        self.controller_port = free_port(kafka.ports)
        self.listener_ports = {name: free_port(kafka.ports) for name in kafka.listeners}
        """The port of each extra listener (`LocalKafka(listeners=...)`)."""
        self.dir = kafka.root / f"node-{node_id}"
        self.data = self.dir / "data"
        self.config = self.dir / "server.properties"
        self.log = self.dir / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        nodes = len(self.kafka.nodes)
        replicas, min_isr = str(min(nodes, 3)), str(min(nodes - 1, 2) or 1)
        extra = {name: f"{name}://127.0.0.1:{port}" for name, port in self.listener_ports.items()}
        advertised = {name: f"{name}://localhost:{port}"  # the name TLS certificates carry
                      for name, port in self.listener_ports.items()}
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self.kafka.listeners}
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.kafka.voters,
            "listeners": ",".join([f"PLAINTEXT://{self.address}",
                                   f"CONTROLLER://127.0.0.1:{self.controller_port}",
                                   *extra.values()]),
            "advertised.listeners": ",".join([f"PLAINTEXT://{self.address}", *advertised.values()]),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(self.data),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            **TEST_SETTINGS,
            **self.kafka.overrides,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        return [self.kafka.java, f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.kafka.log4j}",
                "-cp", f"{self.kafka.libs}/*", main, *args]

    def format(self) -> subprocess.Popen[str]:
        """Starts formatting the log directory; `formatted` waits for it."""
        command = self._java("kafka.tools.StorageTool", "format", "--cluster-id",
                             self.kafka.cluster_id, "--config", str(self.config), heap="256m")
        # The formatter runs once and briefly: the JIT's top tier would only cost start-up.
        command.insert(1, "-XX:TieredStopAtLevel=1")
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)

    def formatted(self, formatting: subprocess.Popen[str]) -> None:
        try:
            out, _ = formatting.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            formatting.kill()
            raise BrokerUnavailableError(f"formatting Kafka node {self.node_id} took over 120s") from None
        if formatting.returncode != 0:
            raise BrokerUnavailableError(f"formatting Kafka node {self.node_id} failed: {out[-1500:]}")

    def start(self) -> None:
        """Starts the process on the node's log directory (formatted or used before)."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                _with_parent(self._java("kafka.Kafka", str(self.config), heap=self.kafka.heap)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies at once (the OS keeps what it had written); its log
        directory stays for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self, timeout: float = 10.0) -> None:
        """A controlled shutdown (SIGTERM), killed when it takes longer than `timeout`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


class LocalKafka:
    """Apache Kafka on loopback: `nodes` KRaft nodes, each broker and controller.

    Internal and new topics get min(nodes, 3) replicas. `overrides` are extra
    server.properties for every node; `listeners` adds listeners beside PLAINTEXT (name to
    security protocol, e.g. {"SASL_SSL": "SASL_SSL"}), each on a port of its own per node.
    PLAINTEXT stays the inter-broker listener and the one `bootstrap` names."""

    def __init__(self, nodes: int = 1, *, overrides: dict[str, str] | None = None,
                 listeners: dict[str, str] | None = None, heap: str = "1g") -> None:
        self.libs = fetch_jars()
        self.java = java()
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.listeners = dict(listeners or {})
        self.cluster_id = random_cluster_id()
        _sweep_stale_roots()
        self.root = Path(tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-"))
        self.log4j = self.root / "log4j2.properties"
        self.log4j.write_text(_LOG4J)
        self.ports: set[int] = set()
        self.nodes: list[KafkaNode] = []
        self.nodes = [KafkaNode(self, n) for n in range(1, nodes + 1)]
        try:
            for node in self.nodes:
                node.write_config()
            formatting = [node.format() for node in self.nodes]  # in parallel: a JVM each
            for node, process in zip(self.nodes, formatting, strict=True):
                node.formatted(process)
            for node in self.nodes:
                node.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def wait_ready(self, timeout: float = _START_SECONDS) -> None:
        """Blocks until every running node answers metadata as a registered broker."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        want = {n.node_id for n in self.nodes if n.process is not None}
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and not node.running:
                    raise BrokerUnavailableError(
                        f"Kafka node {node.node_id} exited ({node.process.returncode}):\n{node.tail()}")
            try:
                seen = set(admin.list_topics(timeout=1.0).brokers)
                if want <= seen:
                    return
                last = f"brokers {sorted(seen)} of {sorted(want)} registered"
            except KafkaException as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BrokerUnavailableError(
            f"Apache Kafka at {self.bootstrap} not ready after {timeout:.0f}s: {last}\n"
            f"{self.nodes[0].tail()}")

    def stop(self) -> None:
        """Stops every node and deletes the log directories."""
        for node in self.nodes:
            node.kill()  # the data goes with them: no controlled shutdown needed
        shutil.rmtree(self.root, ignore_errors=True)
