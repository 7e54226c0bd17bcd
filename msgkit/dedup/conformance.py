"""The conformance suite every idempotency store passes, third-party ones included.

    # tests/test_my_store.py
    import pytest
    from msgkit.dedup.conformance import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_url(self) -> str:
            return "mystore://localhost:1234/?prefix=test-run-1:"

`store_url` must give a fresh, isolated namespace per test (a key prefix, a table). The
suite opens the store with `msgkit.dedup.open_store` (also in child processes, for the
cross-process test) and closes it after each test. `unreachable_store_url` (override it
when the default guess does not fit) names the same kind of store at an address where
nothing answers; return None for stores that cannot be unreachable (memory).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from msgkit.dedup.deduplicator import Dedup
from msgkit.dedup.factory import open_store
from msgkit.dedup.store import ClaimStatus, IdempotencyStore, Scope, StoreUnavailableError
from msgkit.message import Message

ACQUIRED, DONE, IN_PROGRESS = ClaimStatus.ACQUIRED, ClaimStatus.DONE, ClaimStatus.IN_PROGRESS
SCOPE = Scope("orders", "billing")
LONG = 60.0
"""A lease or TTL that does not run out during a test."""
SHORT = 0.3
"""A lease or TTL the tests wait out (with deadlines, polling)."""
WAIT = 10.0
PROCESSES = 4
SECRET = "s3cr3t-pw"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unreachable_url_like(url: str) -> str | None:
    """A URL of the same kind of store where nothing answers (with a password, to check
    that it never shows); None for the memory store."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return None
    if scheme == "sqlite":
        return "sqlite:////nonexistent-msgkit-dir/sub/dedup.db"
    if scheme in ("redis", "rediss"):
        return f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql://postgres:{SECRET}@127.0.0.1:{closed_port()}/test?connect_timeout=2"
    raise NotImplementedError(f"override unreachable_store_url for {scheme}:// stores")


def _claim_in_child(url: str, key: str, barrier: Any, results: Any) -> None:
    """Runs in a child process: connect, wait for the others, claim `key` once."""

    async def run() -> None:
        store = open_store(url)
        try:
            await store.claim(SCOPE, f"warm-up-{os.getpid()}", LONG)  # connect before the race
            barrier.wait(WAIT)
            result = await store.claim(SCOPE, key, LONG)
            results.put(result.status.value)
        except BaseException as exc:
            results.put(f"error: {exc!r}")
            raise
        finally:
            await store.close()

    asyncio.run(run())


class StoreContract:
    """All store contracts; subclass it as `Test...` with a `store_url` fixture."""

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[IdempotencyStore]:
        store = open_store(store_url)
        yield store
        await store.close()

    @pytest.fixture
    def unreachable_store_url(self, store_url: str) -> str | None:
        return unreachable_url_like(store_url)

    # Claim, complete, release.

    async def test_first_claim_acquires_and_a_second_sees_it_in_progress(
        self, store: IdempotencyStore
    ) -> None:
        first = await store.claim(SCOPE, "k", LONG)
        second = await store.claim(SCOPE, "k", LONG)
        assert first.status is ACQUIRED and first.token
        assert second.status is IN_PROGRESS and second.token is None
        assert 0 < second.retry_after <= LONG

    async def test_completed_key_is_done_in_its_scope_only(self, store: IdempotencyStore) -> None:
        claim = await store.claim(SCOPE, "k", LONG)
        assert claim.token is not None
        assert await store.complete(SCOPE, "k", claim.token, LONG)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE
        assert (await store.claim(Scope("orders", "shipping"), "k", LONG)).status is ACQUIRED
        assert (await store.claim(Scope("refunds", "billing"), "k", LONG)).status is ACQUIRED
        assert (await store.claim(SCOPE, "other", LONG)).status is ACQUIRED

    async def test_released_key_can_be_claimed_at_once(self, store: IdempotencyStore) -> None:
        """The retry-after-failure case: a failed attempt neither blocks nor swallows the next."""
        failed = await store.claim(SCOPE, "k", LONG)
        assert failed.token is not None
        await store.release(SCOPE, "k", failed.token)
        retry = await store.claim(SCOPE, "k", LONG)
        assert retry.status is ACQUIRED and retry.token != failed.token
        assert retry.token is not None
        assert await store.complete(SCOPE, "k", retry.token, LONG)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE

    async def test_only_the_owner_token_settles_a_claim(self, store: IdempotencyStore) -> None:
        claim = await store.claim(SCOPE, "k", LONG)
        await store.release(SCOPE, "k", "not-the-token")
        assert (await store.claim(SCOPE, "k", LONG)).status is IN_PROGRESS
        assert not await store.complete(SCOPE, "k", "not-the-token", LONG)
        assert (await store.claim(SCOPE, "k", LONG)).status is IN_PROGRESS
        assert claim.token is not None
        assert await store.complete(SCOPE, "k", claim.token, LONG)

    async def test_release_after_complete_keeps_the_key_done(self, store: IdempotencyStore) -> None:
        claim = await store.claim(SCOPE, "k", LONG)
        assert claim.token is not None
        assert await store.complete(SCOPE, "k", claim.token, LONG)
        await store.release(SCOPE, "k", claim.token)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE

    async def test_keys_and_scopes_with_separators_do_not_collide(
        self, store: IdempotencyStore
    ) -> None:
        odd = ["a/b", "a%2Fb", "a:b", "ключ-🔑", "x" * 2000, " ", "a\nb"]
        for key in odd:
            assert (await store.claim(SCOPE, key, LONG)).status is ACQUIRED, key
        assert (await store.claim(Scope("a/b", "c"), "k", LONG)).status is ACQUIRED
        assert (await store.claim(Scope("a", "b/c"), "k", LONG)).status is ACQUIRED
        assert (await store.claim(Scope("a:b", "c"), "k", LONG)).status is ACQUIRED
        assert (await store.claim(Scope("a", "b:c"), "k", LONG)).status is ACQUIRED

    # Leases and TTLs.

    async def test_expired_lease_lets_another_delivery_take_over(
        self, store: IdempotencyStore
    ) -> None:
        dead = await store.claim(SCOPE, "k", SHORT)
        assert dead.token is not None
        took_over: list[str] = []

        async def try_claim() -> bool:
            result = await store.claim(SCOPE, "k", LONG)
            if result.status is ACQUIRED:
                assert result.token is not None
                took_over.append(result.token)
            else:
                assert result.status is IN_PROGRESS
            return bool(took_over)

        await _until(try_claim, message="claim after the lease expired")
        # The dead holder woke up late: it can neither finish nor free the new claim.
        assert not await store.complete(SCOPE, "k", dead.token, LONG)
        await store.release(SCOPE, "k", dead.token)
        assert (await store.claim(SCOPE, "k", LONG)).status is IN_PROGRESS
        assert await store.complete(SCOPE, "k", took_over[0], LONG)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE

    async def test_late_complete_still_counts_when_nobody_took_over(
        self, store: IdempotencyStore
    ) -> None:
        slow = await store.claim(SCOPE, "k", 0.05)
        assert slow.token is not None
        await asyncio.sleep(0.1)  # time passing is the point: the 50 ms lease runs out
        assert await store.complete(SCOPE, "k", slow.token, LONG)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE

    async def test_done_key_is_forgotten_after_its_ttl(self, store: IdempotencyStore) -> None:
        claim = await store.claim(SCOPE, "k", LONG)
        assert claim.token is not None
        assert await store.complete(SCOPE, "k", claim.token, SHORT)
        assert (await store.claim(SCOPE, "k", LONG)).status is DONE

        async def claimable() -> bool:
            status = (await store.claim(SCOPE, "k", LONG)).status
            assert status in (DONE, ACQUIRED)
            return status is ACQUIRED

        await _until(claimable, message="done key forgotten after its TTL")

    # Concurrency.

    async def test_exactly_one_of_many_concurrent_tasks_wins(
        self, store: IdempotencyStore
    ) -> None:
        results = await asyncio.gather(*(store.claim(SCOPE, "hot", LONG) for _ in range(50)))
        statuses = [r.status for r in results]
        assert statuses.count(ACQUIRED) == 1
        assert statuses.count(IN_PROGRESS) == 49

    def test_exactly_one_of_several_processes_wins(self, store_url: str) -> None:
        if store_url.startswith("memory:"):
            pytest.skip("the memory store lives in one process by design")
        # A fork server forks children from a clean process with msgkit already imported:
        # fast, and safe while this one has threads.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "msgkit.dedup.redis_store", "msgkit.dedup.postgres_store"])
        barrier = ctx.Barrier(PROCESSES)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_claim_in_child, args=(store_url, "contended", barrier, results))
            for _ in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        try:
            statuses = [results.get(timeout=60) for _ in procs]
        finally:
            for proc in procs:
                proc.join(timeout=WAIT)
                if proc.is_alive():
                    proc.kill()
        assert sorted(statuses) == sorted(["acquired"] + ["in-progress"] * (PROCESSES - 1))

    async def test_random_operations_match_a_model(self, store: IdempotencyStore) -> None:
        """Random claims, completes and releases (fresh and stale tokens) on a few keys,
        checked against a dictionary model. Leases and TTLs never run out here."""
        seed = int(os.environ.get("MSGKIT_TEST_SEED") or random.randrange(2**32))
        print(f"random seed {seed} (rerun with MSGKIT_TEST_SEED={seed})")
        rng = random.Random(seed)
        model: dict[str, tuple[str, str]] = {}  # key -> (state, token)
        tokens: dict[str, list[str]] = {}
        for step in range(150):
            key = rng.choice("abcd")
            known = tokens.get(key, [])
            op = rng.choice(["claim", "claim", "complete", "release"])
            token = rng.choice([*known, "stranger"]) if known else "stranger"
            where = f"step {step} (seed {seed}): {op} {key}"
            if op == "claim":
                got = await store.claim(SCOPE, key, LONG)
                state = model.get(key, ("free", ""))[0]
                expect = {"free": ACQUIRED, "claimed": IN_PROGRESS, "done": DONE}[state]
                assert got.status is expect, where
                if got.token is not None:
                    model[key] = ("claimed", got.token)
                    tokens.setdefault(key, []).append(got.token)
            elif op == "complete":
                state, owner = model.get(key, ("free", ""))
                ok = await store.complete(SCOPE, key, token, LONG)
                expect_ok = state == "free" or owner == token
                assert ok is expect_ok, where
                if ok:
                    model[key] = ("done", token)
            else:
                await store.release(SCOPE, key, token)
                state, owner = model.get(key, ("free", ""))
                if state == "claimed" and owner == token:
                    del model[key]

    # Outage.

    async def test_unreachable_store_raises_and_never_answers_done(
        self, unreachable_store_url: str | None
    ) -> None:
        if unreachable_store_url is None:
            pytest.skip("this store cannot be unreachable")
        store = open_store(unreachable_store_url)
        try:
            started = time.monotonic()
            for call in (
                store.claim(SCOPE, "k", LONG),
                store.complete(SCOPE, "k", "token", LONG),
                store.release(SCOPE, "k", "token"),
            ):
                with pytest.raises(StoreUnavailableError) as caught:
                    await call
                assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
                assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)
            assert SECRET not in repr(store)
            assert time.monotonic() - started < WAIT
            dedup = Dedup(store)
            with pytest.raises(StoreUnavailableError):
                await dedup.claim(Message("orders", b"x", id="m-1"), "billing")
        finally:
            await store.close()

    # The deduplicator on this store.

    async def test_failed_first_attempt_does_not_block_or_swallow_the_retry(
        self, store: IdempotencyStore
    ) -> None:
        dedup = Dedup(store, lease=LONG)
        msg = Message("orders", b"pay", id="m-1", idempotency_key="order-1")
        first = await dedup.claim(msg, "billing")
        assert first is not None
        await first.release()  # the handler raised
        retry = await asyncio.wait_for(dedup.claim(msg, "billing"), WAIT)
        assert retry is not None, "the retry after a failure was swallowed as a duplicate"
        await retry.complete()
        assert await dedup.claim(msg, "billing") is None
        assert await dedup.claim(msg, "shipping") is not None

    async def test_duplicate_waits_for_the_first_and_then_skips(
        self, store: IdempotencyStore
    ) -> None:
        dedup = Dedup(store, lease=LONG, max_poll=0.05)
        msg = Message("orders", b"pay", id="m-1", idempotency_key="order-1")
        first = await dedup.claim(msg, "billing")
        assert first is not None
        duplicate = asyncio.create_task(dedup.claim(msg, "billing"))
        await asyncio.sleep(0.1)  # a window to prove a negative: it must still be waiting
        assert not duplicate.done(), "a duplicate was settled while the first was in progress"
        await first.complete()
        assert await asyncio.wait_for(duplicate, WAIT) is None

    async def test_duplicate_waiting_on_a_dead_holder_takes_over_after_the_lease(
        self, store: IdempotencyStore
    ) -> None:
        dedup = Dedup(store, lease=SHORT, max_poll=0.05)
        msg = Message("orders", b"pay", id="m-1")
        dead = await dedup.claim(msg, "billing")  # its consumer dies: never settled
        assert dead is not None
        started = time.monotonic()
        heir = await asyncio.wait_for(dedup.claim(msg, "billing"), WAIT)
        assert heir is not None and heir.token != dead.token
        assert time.monotonic() - started >= SHORT * 0.5
        await heir.complete()
        assert await dedup.claim(msg, "billing") is None


async def _until(check: Callable[[], Awaitable[bool]], *, message: str) -> None:
    """Poll an async condition every 20 ms; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {WAIT}s")
        await asyncio.sleep(0.02)
