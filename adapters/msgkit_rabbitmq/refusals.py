"""A secure RabbitMQ's refusals, told apart from an unreachable broker: a refused login or
virtual host, a failed TLS handshake, a missing permission. They are final: retrying or
waiting out `connect_timeout` cannot change them."""

from __future__ import annotations

import ssl

import aiormq.exceptions as amqp_errors

from msgkit.errors import AuthenticationError, MsgkitError, TLSError
from msgkit.url import redact

ACCESS_REFUSED, NOT_ALLOWED = 403, 530  # AMQP reply codes: permissions, virtual host
PERMISSIONS_HINT = ("grant the user configure, write and read permissions on these names in "
                    "the virtual host (rabbitmqctl set_permissions)")
_CLIENT_CERT_ALERTS = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED",
                       "ALERT_CERTIFICATE_UNKNOWN", "ALERT_HANDSHAKE_FAILURE")


def refusal(exc: BaseException, shown: str, client_cert: bool = False) -> MsgkitError | None:
    """The msgkit error for a connection attempt that failed with `exc`, if the broker
    refused it (TLS or login) rather than being unreachable. `shown`: the redacted URL;
    `client_cert`: the client presented a certificate."""
    tls = tls_failure(exc, client_cert)
    if tls is not None:
        return TLSError(f"RabbitMQ at {shown}: {tls}")
    login = login_refusal(exc)
    if login is not None:
        return AuthenticationError(
            f"RabbitMQ at {shown} refused the connection: {login}; check the user, password "
            "and virtual host (and the user's permissions on it)")
    return None


def login_refusal(exc: BaseException) -> str | None:
    """The broker's words when it refused the login or the virtual host, else None."""
    if isinstance(exc, amqp_errors.ProbableAuthenticationError):
        return redact(str(exc.args[0] if exc.args else exc))
    for arg in getattr(exc, "args", ()):
        code = getattr(arg, "reply_code", None)
        if code in (ACCESS_REFUSED, NOT_ALLOWED):
            return redact(str(getattr(arg, "reply_text", "") or code))
    return None


def tls_failure(exc: BaseException, client_cert: bool = False) -> str | None:
    """What to change when `exc` (or what it wraps) is a failed TLS handshake, else None."""
    text = " ".join(_texts(exc))
    if client_cert and "onnection reset" in text:
        # TLS 1.3: the client's side of the handshake ends before the broker checks the
        # certificate; its alert then races the reset of the connection.
        return ("the broker reset the connection right after the TLS handshake, as it does "
                "when it refuses the client certificate: set certfile and keyfile in the URL "
                "query to a certificate signed by a CA the broker trusts")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"the broker's certificate was not verified ({_ssl_reason(text)}): set cafile "
                "in the URL query (or ssl_context) to the CA that signed it, and connect with "
                "a host name the certificate names")
    if any(alert in text for alert in _CLIENT_CERT_ALERTS):
        return (f"the broker refused the client certificate ({_ssl_reason(text)}): set "
                "certfile and keyfile in the URL query to a certificate signed by a CA the "
                "broker trusts")
    if any(isinstance(e, ssl.SSLError) for e in _chain(exc)):
        return f"the TLS handshake failed ({_ssl_reason(text)}): check the TLS settings"
    return None


def access_refused(exc: BaseException) -> bool:
    """A channel closed because the user lacks a permission (403 ACCESS_REFUSED)."""
    if not isinstance(exc, amqp_errors.ChannelClosed):
        return False
    code = exc.args[0] if exc.args else None
    return code == ACCESS_REFUSED or "ACCESS_REFUSED" in str(exc)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__,
                 *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]
    return seen


def _texts(exc: BaseException) -> list[str]:
    return [str(e) for e in _chain(exc)]


def _ssl_reason(text: str) -> str:
    start = text.find("[SSL")
    end = text.find("(_ssl.c", start)
    return redact(text[start:end].strip() if start >= 0 and end > start else text[:200])
