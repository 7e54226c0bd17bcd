"""Finds the backend for a URL scheme: entry points in `msgkit.backends`, or `register_backend`."""

from __future__ import annotations

from importlib.metadata import entry_points

from msgkit.backend import Backend
from msgkit.errors import ConfigurationError, UnknownBackendError

ENTRY_POINT_GROUP = "msgkit.backends"

# Which extra brings the client a built-in backend needs, for the error message.
_EXTRAS = {"kafka": "kafka", "amqp": "rabbitmq", "amqps": "rabbitmq"}
_registered: dict[str, type[Backend]] = {}


def register_backend(scheme: str, backend: type[Backend]) -> None:
    """Registers `backend` for `scheme` in this process (entry points are the usual way)."""
    _registered[scheme.lower()] = backend


def schemes() -> list[str]:
    """Every scheme a URL may use here: registered ones and installed entry points."""
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | _registered.keys())


def backend_class(scheme: str) -> type[Backend]:
    if scheme in _registered:
        return _registered[scheme]
    found = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not found:
        raise UnknownBackendError(
            f"no msgkit backend for scheme {scheme!r}; installed schemes: {', '.join(schemes())}"
        )
    entry = next(iter(found))
    try:
        loaded = entry.load()
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise ConfigurationError(
            f"the {scheme}:// backend cannot load ({exc}); install it with "
            f"pip install 'msgkit[{extra}]'"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
        raise ConfigurationError(f"entry point {entry.value!r} for {scheme!r} is not a msgkit Backend")
    return loaded
