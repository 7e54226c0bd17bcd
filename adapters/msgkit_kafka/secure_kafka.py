"""A local Apache Kafka with security on, for tests: a SASL_SSL listener (SCRAM-SHA-512 users)
and a mutual-TLS listener beside the PLAINTEXT one the fixture administers it through, the
KRaft standard authorizer, and ACLs that allow one user the `t-` topics (every test's
`unique_name`) and deny them to another.

The PLAINTEXT and controller listeners authenticate nobody: their principal (ANONYMOUS) is
the super user, so only the fixture and the broker itself should use them.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlencode

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, no __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from msgkit.testing.certs import TestCertificates
from msgkit_kafka.local_kafka import KafkaNode, LocalKafka

MECHANISM = "SCRAM-SHA-512"
ALLOWED_PREFIX = "t-"
USER = "alice"
"""May use every `t-` topic (DESCRIBE, READ, WRITE, CREATE), every group (READ) and every
transactional id (DESCRIBE, WRITE); also the client
certificate's common name, so the mutual-TLS listener maps to this user too."""
DENIED_USER = "mallory"
"""Authenticates, but every `t-` topic is denied to this user."""
_TIMEOUT = 30.0


def _settings(certs: TestCertificates) -> dict[str, str]:
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca),
        "listener.name.mtls.ssl.client.auth": "required",
        # A certificate's subject "CN=alice,OU=...,O=..." is the user "alice".
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
    }


class SecureKafka:
    """One KRaft node with SASL_SSL and mutual TLS on; users, passwords and ACLs made here."""

    def __init__(self, certs: TestCertificates) -> None:
        self.certs = certs
        self.passwords = {USER: secrets.token_urlsafe(12), DENIED_USER: secrets.token_urlsafe(12)}
        self.kafka = LocalKafka(1, listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"},
                                overrides=_settings(certs))
        try:
            self.admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap, "log_level": 0})
            self._add_users()
            self._bind(self._allow(USER) + self._deny_all(DENIED_USER))
        except BaseException:
            self.kafka.stop()
            raise

    @property
    def node(self) -> KafkaNode:
        return self.kafka.nodes[0]

    def url(self, user: str = USER, password: str | None = None, **query: str) -> str:
        """A SASL_SSL URL as users write it: credentials in the URL, the CA in the query."""
        secret = self.passwords[user] if password is None else password
        params = {"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
                  "ssl.ca.location": str(self.certs.ca), **query}
        return (f"kafka://{quote(user)}:{quote(secret, safe='')}@localhost:"
                f"{self.node.listener_ports['SASL_SSL']}?{urlencode(params)}")

    def mtls_url(self, **query: str) -> str:
        """A mutual-TLS URL: the client's certificate and key, and the CA."""
        params = {"security.protocol": "SSL", "ssl.ca.location": str(self.certs.ca),
                  "ssl.certificate.location": str(self.certs.client_cert),
                  "ssl.key.location": str(self.certs.client_key), **query}
        return f"kafka://localhost:{self.node.listener_ports['MTLS']}?{urlencode(params)}"

    def deny(self, user: str, topic: str) -> None:
        """Revokes `user`'s access to `topic` while it runs (a DENY beats every ALLOW)."""
        self._bind([self._binding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, user,
                                  AclPermissionType.DENY)])

    def allow_again(self, user: str, topic: str) -> None:
        """Undoes `deny`."""
        found = self.admin.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{user}", "*",
            AclOperation.ALL, AclPermissionType.DENY)], request_timeout=_TIMEOUT)
        for future in found.values():
            future.result()

    def stop(self) -> None:
        self.kafka.stop()

    def _add_users(self) -> None:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        futures = self.admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, info, password.encode())
             for user, password in self.passwords.items()], request_timeout=_TIMEOUT)
        for future in futures.values():
            future.result()

    def _bind(self, bindings: list[AclBinding]) -> None:
        for future in self.admin.create_acls(bindings, request_timeout=_TIMEOUT).values():
            future.result()

    @staticmethod
    def _binding(kind: ResourceType, name: str, pattern: ResourcePatternType, user: str,
                 permission: AclPermissionType,
                 operation: AclOperation = AclOperation.ALL) -> AclBinding:
        return AclBinding(kind, name, pattern, f"User:{user}", "*", operation, permission)

    def _allow(self, user: str) -> list[AclBinding]:
        """Only what the README says msgkit needs: the conformance suite proves it enough."""
        allow, prefixed, literal = (AclPermissionType.ALLOW, ResourcePatternType.PREFIXED,
                                    ResourcePatternType.LITERAL)
        grants = [(ResourceType.TOPIC, ALLOWED_PREFIX, prefixed, op) for op in (
            AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE)]
        grants += [(ResourceType.GROUP, "*", literal, AclOperation.READ)]
        grants += [(ResourceType.TRANSACTIONAL_ID, "*", literal, op)
                   for op in (AclOperation.DESCRIBE, AclOperation.WRITE)]
        return [self._binding(kind, name, pattern, user, allow, op)
                for kind, name, pattern, op in grants]

    def _deny_all(self, user: str) -> list[AclBinding]:
        """`user` may join groups, but every `t-` topic is denied."""
        return [
            self._binding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, user,
                          AclPermissionType.ALLOW),
            self._binding(ResourceType.TOPIC, ALLOWED_PREFIX, ResourcePatternType.PREFIXED, user,
                          AclPermissionType.DENY),
        ]
