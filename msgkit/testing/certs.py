"""Certificates made for one test session (with `trustme`), never committed: a CA, a server
certificate for the loopback names, a client certificate, and a second CA nobody trusts.

Keys are written as unencrypted PKCS#8 PEM, the one form RabbitMQ (Erlang), Apache Kafka
(`ssl.keystore.type=PEM`) and librdkafka all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "localhost"
"""The only name in the server certificate: connecting to 127.0.0.1 is a host-name mismatch."""


@dataclass(frozen=True)
class TestCertificates:
    """Paths of the PEM files in `directory`."""

    __test__ = False  # not a pytest test class
    directory: Path

    @property
    def ca(self) -> Path:
        """The CA that signed the server's and the client's certificates."""
        return self.directory / "ca.pem"

    @property
    def other_ca(self) -> Path:
        """A CA that signed nothing here: trusting only it fails every handshake."""
        return self.directory / "other-ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def server_keystore(self) -> Path:
        """The server's key followed by its certificate chain (Kafka's PEM keystore)."""
        return self.directory / "server.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client-cert.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    @property
    def stranger_cert(self) -> Path:
        """A client certificate signed by `other_ca`: brokers must refuse it."""
        return self.directory / "stranger-cert.pem"

    @property
    def stranger_key(self) -> Path:
        return self.directory / "stranger-key.pem"


def make_certificates(directory: Path, client_name: str = "alice") -> TestCertificates:
    """Writes a fresh set into `directory`; the client certificate's common name is
    `client_name` (brokers map it to the user of that name)."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    def pkcs8(pem: bytes) -> bytes:
        key = serialization.load_pem_private_key(pem, password=None)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def write(path: Path, data: bytes) -> None:
        path.write_bytes(data)
        path.chmod(0o644)  # read by the brokers, which run as their own users

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    certs = TestCertificates(directory)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert(SERVER_NAME)
    client = ca.issue_cert(f"{client_name}@clients.test", common_name=client_name)
    stranger = other.issue_cert(f"{client_name}@clients.test", common_name=client_name)
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    write(certs.ca, ca.cert_pem.bytes())
    write(certs.other_ca, other.cert_pem.bytes())
    write(certs.server_cert, chain)
    write(certs.server_key, pkcs8(server.private_key_pem.bytes()))
    write(certs.server_keystore, pkcs8(server.private_key_pem.bytes()) + chain)
    write(certs.client_cert, b"".join(blob.bytes() for blob in client.cert_chain_pems))
    write(certs.client_key, pkcs8(client.private_key_pem.bytes()))
    write(certs.stranger_cert, b"".join(blob.bytes() for blob in stranger.cert_chain_pems))
    write(certs.stranger_key, pkcs8(stranger.private_key_pem.bytes()))
    return certs
