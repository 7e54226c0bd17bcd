"""A RabbitMQ node with TLS on, for tests: a node of the local installation beside the plain
test broker, with a TLS listener (client certificates verified when given), a virtual host
of its own, a user allowed the `t-` names there (every test's `unique_name`) and a user
allowed only `mallory.` names.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import quote, urlencode

from msgkit.testing.certs import SERVER_NAME, TestCertificates
from msgkit.testing.system import ensure_installed, free_port
from msgkit_rabbitmq.local_cluster import RabbitNode, kill_leftovers

NODE = "msgkit-secure"
VHOST = "secure"
USER = "alice"
DENIED_USER = "mallory"
_ALLOWED = r"^(t-|amq\.default$)"
"""alice's configure, write and read pattern: msgkit's names all begin with the topic's; a
delayed retry is published through the default exchange."""


class SecureRabbit:
    """One TLS node; `url()` is what a user of it writes."""

    def __init__(self, certs: TestCertificates) -> None:
        server = ensure_installed("rabbitmq-server", "rabbitmq-server",
                                  "a RabbitMQ installation for a TLS node", "MSGKIT_TEST_AMQP_URL")
        self.certs = certs
        self.passwords = {USER: secrets.token_urlsafe(12), DENIED_USER: secrets.token_urlsafe(12)}
        self.root = Path(f"/tmp/msgkit-rabbit-secure-{os.getpid()}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        shutil.chown(self.root, "rabbitmq", "rabbitmq")  # the server runs as rabbitmq
        ports: set[int] = set()
        self.tls_port = free_port(ports)
        config = self.root / "rabbitmq.conf"
        config.write_text(
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {certs.ca}\n"
            f"ssl_options.certfile = {certs.server_cert}\n"
            f"ssl_options.keyfile = {certs.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        kill_leftovers(NODE, f"{NODE}@")
        self.node = RabbitNode(NODE, self.root, server, ports, config)
        try:
            self.node.start()
            self.node.await_startup()
            self.node.ctl("add_vhost", VHOST)
            for user, password in self.passwords.items():
                self.node.ctl("add_user", user, password)
            self.allow(USER)
            self.node.ctl("set_permissions", "-p", VHOST, DENIED_USER, *[r"^mallory\."] * 3)
        except BaseException:
            self.stop()
            raise

    def url(self, user: str = USER, password: str | None = None, host: str = SERVER_NAME,
            **query: str) -> str:
        """An amqps:// URL as users write it: credentials, the vhost, the CA in the query."""
        secret = self.passwords[user] if password is None else password
        params = {"cafile": str(self.certs.ca), **query}
        return (f"amqps://{quote(user)}:{quote(secret, safe='')}@{host}:{self.tls_port}/"
                f"{VHOST}?{urlencode(params)}")

    def allow(self, user: str) -> None:
        self.node.ctl("set_permissions", "-p", VHOST, user, _ALLOWED, _ALLOWED, _ALLOWED)

    def revoke(self, user: str) -> None:
        """Takes `user`'s permissions and closes its connections: RabbitMQ checks them
        again when it reconnects."""
        self.node.ctl("clear_permissions", "-p", VHOST, user)
        self.node.ctl("close_all_user_connections", user, "permissions revoked by the test")

    def stop(self) -> None:
        self.node.kill()
        kill_leftovers(NODE, f"{NODE}@")
        shutil.rmtree(self.root, ignore_errors=True)

