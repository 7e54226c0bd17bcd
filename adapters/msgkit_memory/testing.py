"""The memory backend's test broker: a fresh hub per test, so tests never share topics."""

from __future__ import annotations

import hashlib

from msgkit.testing.brokers import TestBroker


class MemoryTestBroker(TestBroker):
    name = "memory"

    def start(self) -> str:
        return "memory://"

    def url_for_test(self, url: str, test_id: str) -> str:
        return f"memory://test-{hashlib.sha1(test_id.encode()).hexdigest()[:12]}"
