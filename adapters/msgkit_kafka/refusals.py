"""A secure Kafka's refusals as msgkit errors: wrong credentials, a failed TLS handshake, a
missing ACL. They are final: waiting out a timeout or retrying cannot change them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from msgkit.errors import AuthenticationError, AuthorizationError, MsgkitError, TLSError

AUTHORIZATION_CODES = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
})
# librdkafka reports the broker rejecting the client's certificate as a transport error
# carrying the TLS alert.
_CLIENT_CERT_ALERTS = ("alert bad certificate", "alert unknown ca", "certificate required",
                       "alert certificate unknown")


def principal(conf: Mapping[str, Any]) -> str:
    """Who the client is, as error messages name it (never the secret)."""
    if conf.get("sasl.username"):
        return f"user {conf['sasl.username']!r} ({conf.get('sasl.mechanism', 'GSSAPI')})"
    if conf.get("ssl.certificate.location") or conf.get("ssl.certificate.pem"):
        return "the client certificate's principal"
    return "this client"


def refusal(err: KafkaError, conf: Mapping[str, Any], where: str,
            login_hint: str = "") -> MsgkitError | None:
    """The msgkit error for `err` if it is a refusal, else None. `where` names the broker
    (e.g. "Kafka at <redacted URL>"); `login_hint` ends the message of refused credentials."""
    code, reason = err.code(), err.str()
    if code == KafkaError._AUTHENTICATION:
        return AuthenticationError(
            f"{where} refused {principal(conf)}: {reason}; check sasl.username, "
            "sasl.password and sasl.mechanism (and security.protocol)" + login_hint)
    if code == KafkaError._SSL:
        if "verify failed" in reason:
            return TLSError(
                f"{where}: the broker's certificate was not verified: {reason}; set "
                "ssl.ca.location to the CA that signed it, and connect with a host name the "
                "certificate names (ssl.endpoint.identification.algorithm=none turns that "
                "check off)")
        return TLSError(f"{where}: the TLS handshake failed: {reason}; check the ssl.* "
                        "settings and security.protocol")
    if code == KafkaError._TRANSPORT and any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        return TLSError(
            f"{where} refused the client certificate: {reason}; set "
            "ssl.certificate.location and ssl.key.location to a certificate signed by a CA "
            "the broker trusts")
    if code in AUTHORIZATION_CODES:
        return AuthorizationError(
            f"{where} refused {principal(conf)}: {reason}; grant it an ACL for this "
            "topic, group or transactional id")
    return None
