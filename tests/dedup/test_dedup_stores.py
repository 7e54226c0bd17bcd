"""The store conformance suite on all four stores (memory, SQLite, Redis, PostgreSQL)."""

from msgkit.dedup.conformance import StoreContract


class TestStoreConformance(StoreContract):
    pass
