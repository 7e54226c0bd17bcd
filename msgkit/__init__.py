"""msgkit: one async Producer/Consumer API over Kafka, RabbitMQ and an in-memory broker."""

from importlib.metadata import version as _version

from msgkit import headers
from msgkit.backend import Capabilities
from msgkit.broker import Broker, connect
from msgkit.consumer import Consumer
from msgkit.context import Context
from msgkit.errors import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    ConsumerLostError,
    DecodeError,
    HandlerError,
    InvalidTopicError,
    InvalidURLError,
    MsgkitError,
    NotFoundError,
    PublishError,
    SerializationError,
    TLSError,
    UnknownBackendError,
)
from msgkit.failure import FailurePolicy, dead_letter_topic
from msgkit.guarantee import Guarantee
from msgkit.message import Headers, HeaderValue, Key, Message
from msgkit.producer import Producer
from msgkit.settings import Settings

__version__ = _version("msgkit")

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "Broker",
    "BrokerUnavailableError",
    "Capabilities",
    "ClosedError",
    "ConfigurationError",
    "Consumer",
    "ConsumerLostError",
    "Context",
    "DecodeError",
    "FailurePolicy",
    "Guarantee",
    "HandlerError",
    "HeaderValue",
    "Headers",
    "InvalidTopicError",
    "InvalidURLError",
    "Key",
    "Message",
    "MsgkitError",
    "NotFoundError",
    "Producer",
    "PublishError",
    "SerializationError",
    "Settings",
    "TLSError",
    "UnknownBackendError",
    "connect",
    "dead_letter_topic",
    "headers",
]
