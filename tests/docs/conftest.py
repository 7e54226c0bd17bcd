from __future__ import annotations

import pytest

from tests.docs.support import BACKENDS


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """A broker URL for a program in another process: memory:// (its own, in that process),
    else the session's Kafka or RabbitMQ from the msgkit pytest plugin."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_url"))
