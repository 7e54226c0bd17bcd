"""Every exception msgkit raises derives from `MsgkitError`; each message says what to change."""

from __future__ import annotations


class MsgkitError(Exception):
    """Base class of all msgkit errors."""


class ConfigurationError(MsgkitError, ValueError):
    """A setting, option or argument is invalid."""


class UnknownBackendError(ConfigurationError):
    """No backend is registered for the URL's scheme."""


class InvalidURLError(ConfigurationError):
    """The broker or store URL cannot be parsed."""


class InvalidTopicError(ConfigurationError):
    """The topic (or group) name would be rejected by the backend."""


class HandlerError(ConfigurationError, TypeError):
    """The handler given to a consumer has the wrong shape."""


class HandlerAbortedError(MsgkitError):
    """The handler raised a `BaseException` that is not an `Exception`: its own
    `asyncio.CancelledError` (an inner task it awaited was cancelled), `GeneratorExit`, or
    another. It fails that message like any other exception (retried, then dead-lettered)
    instead of stopping the consumer; the original is the `__cause__`."""


class SerializationError(MsgkitError, TypeError):
    """A value or its headers cannot be turned into a message."""


class DecodeError(MsgkitError, ValueError):
    """A received payload cannot be decoded into the requested type.

    Retrying cannot help, so failure policies treat it as non-retryable.
    """


class ClosedError(MsgkitError, RuntimeError):
    """The broker, producer or consumer was used after it was closed."""


class BrokerUnavailableError(MsgkitError, ConnectionError):
    """The broker cannot be reached (at start, or for longer than the allowed wait)."""


class NotFoundError(MsgkitError, LookupError):
    """What was asked for (a dead-letter queue, a topic a consumer may only join) does not
    exist on the broker; msgkit created nothing."""


class AuthenticationError(MsgkitError, PermissionError):
    """The broker refused the credentials (or their access to the virtual host): final, not
    retried; fix the user, password, mechanism or permissions."""


class AuthorizationError(MsgkitError, PermissionError):
    """The broker authenticated the user but refused it this topic, group or queue (Kafka
    ACLs, RabbitMQ permissions): final, not retried; grant the permission the message names.
    Publishing raises `PublishError` instead, with the broker's reason."""


class TLSError(MsgkitError, ConnectionError):
    """The TLS handshake failed: the broker's certificate is not signed by a CA the client
    trusts or does not name the host in the URL, or the broker refused the client's
    certificate. Final, not retried; the message names the setting to change."""


class PublishError(MsgkitError):
    """The broker did not accept a message; `reason` carries the broker's words.
    `permanent`: sending the same message again cannot succeed (it is too large)."""

    def __init__(self, message: str, *, reason: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


class ConsumerLostError(MsgkitError):
    """The broker dropped this consumer; its unacknowledged messages go to other members."""
