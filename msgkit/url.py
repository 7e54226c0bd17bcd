"""Broker and store URLs: parsing with clear errors, and redaction for anything printed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from msgkit.errors import InvalidURLError

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "key.pem", "apikey",
                "api_key", "oauthbearer.config", "jaas")
"""A setting or query parameter whose name contains one of these holds a secret."""
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^\s/]*)(?=@)", re.I)
_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;][^=&;\s'\"]*(?:" + "|".join(re.escape(w) for w in SECRET_WORDS)
    + r")[^=&;\s'\"]*=)(?P<secret>[^&;\s'\"#]*)", re.I)


def redact(text: str) -> str:
    """Replaces every password inside URLs in `text` by `***`: the one in `user:pw@` and
    the value of every query parameter whose name says it is a secret."""
    return _SECRET_PARAM.sub(r"\g<head>***", _PASSWORD.sub(r"\g<head>***", text))


@dataclass(frozen=True, slots=True)
class URL:
    """A parsed `scheme://[user[:password]@]host[:port][,host:port...][/path][?k=v&...]` URL."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...]
    username: str | None
    password: str | None = field(repr=False)
    path: str
    query: dict[str, str]
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> URL:
        if not isinstance(url, str) or "://" not in url:
            raise InvalidURLError(
                f"{redact(str(url))!r} is not a URL; write it like 'kafka://host:9092', "
                "'amqp://user:pass@host:5672/vhost' or 'memory://'"
            )
        scheme, _, rest = url.partition("://")
        scheme = scheme.lower()
        if not _SCHEME.match(scheme):
            raise InvalidURLError(f"{redact(url)!r} has an invalid scheme {scheme!r}")
        rest, _, query_str = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, _, hostlist = netloc.rpartition("@")
        username = password = None
        if userinfo:
            user, _, pw = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(pw) if pw else None
        hosts: list[tuple[str, int | None]] = []
        for part in filter(None, hostlist.split(",")):
            try:
                split = urlsplit(f"//{part}")
                hosts.append((split.hostname or "", split.port))
            except ValueError as exc:
                raise InvalidURLError(
                    f"{redact(url)!r} has an invalid host or port {part!r}: {exc}"
                ) from exc
        return cls(
            scheme=scheme,
            hosts=tuple(hosts),
            username=username,
            password=password,
            path=unquote(path),  # without the leading '/'
            query=dict(parse_qsl(query_str, keep_blank_values=True)),
            raw=url,
        )

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:  # the query may hold secrets: show it redacted only
        return f"URL({self.redacted!r})"
