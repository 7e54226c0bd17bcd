"""The consumer thread: the only thread that calls the confluent-kafka `Consumer`.

confluent-kafka serialises calls into one Consumer (a call from another thread waits for
`poll` to return), so everything the consumer does runs here: polling, pausing, commits,
rebalance callbacks. Records go to the event loop in batches as the client returned them
(through the subscription's inbox); the loop builds deliveries from them as it hands them
out, so this thread holds the GIL for as little as it can.

- Backpressure: when `sent - finished` (records handed to the loop and not finished)
  reaches the buffer limit (or leaves room for less than half a batch), no more records
  are taken until the loop drained half of them; if that takes longer than PAUSE_AFTER,
  every assigned partition is paused (and resumed once drained). Memory stays bounded:
  our buffer by `buffer_messages` and `buffer_bytes` (the record limit shrinks to what
  fits at the recent average size), librdkafka's by `queued.max.messages.kbytes`.
- Retry topic: a copy whose due time has not come is held here with the rest of its
  partition, which is paused until then (the main topic flows on; nothing busy-loops).
- Rebalance: before partitions are given up, the finished part of their work is committed;
  their buffered records become stale and their late acks are ignored.
- Exactly-once (`transactional`): this thread commits nothing; positions are committed in
  the subscription's transactions (`transaction.py`), which may ask it to `rewind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from msgkit.errors import ConsumerLostError, MsgkitError
from msgkit.logs import get_logger
from msgkit_kafka.offsets import Key, OffsetTracker, PartitionOffsets
from msgkit_kafka.refusals import refusal
from msgkit_kafka.wire import due_at

if TYPE_CHECKING:
    from msgkit_kafka.subscription import KafkaSubscription

log = get_logger("msgkit.kafka")

POLL_SECONDS = 0.05
"""Longest wait inside the client; also how soon pause/resume/commit/stop take effect."""
AMO_POLL_SECONDS = 0.005
"""At-most-once consumers wait for a commit per batch: poll() returns sooner for them."""
COMMIT_SECONDS = 0.2
"""Commits of finished work are batched this long (forced on rebalance and close)."""
BATCH = 1000
"""Most records handed to the loop at once. Each hand-over costs both threads a GIL
switch and the client two calls: 1000 (as many as a hand-written `consume(1000)` loop
takes) consumed 11% faster than 500 on Apache Kafka; 2000 was within the noise."""
SETTLE_SECONDS = 5.0
PAUSE_AFTER = 0.5
"""A full buffer first only stops taking records (librdkafka's bounded prefetch queue
holds the rest); partitions are paused when it stays full this long, so rebalances are
served again. A pause is not free: resuming makes the broker send the data again."""
Batch = tuple[list[Any], dict[Key, PartitionOffsets], str | None]
"""Records handed to the loop, the partitions they were fetched under, and the topic of
them all (None when some may be retry copies)."""
_IGNORED = (KafkaError._PARTITION_EOF,)
_topic_of, _error_of = Message.topic, Message.error


class Poller:
    def __init__(
        self,
        sub: KafkaSubscription,
        conf: dict[str, Any],
        *,
        topic: str,
        retry_topic: str | None,
        group: str | None,
        start: str,
        limit: int,
        max_bytes: int = 0,
        timeout: float,
        tansu: AdminClient | None,
        transactional: bool = False,
        until_end: bool = False,
    ) -> None:
        self.sub = sub
        self.until_end = until_end
        self._at_end: dict[Key, bool] = {}
        """`until_end`: per assigned partition, whether its end was reached (librdkafka's
        PARTITION_EOF) with no record after it."""
        self._ended = False
        self.topic = topic
        self.retry_topic = retry_topic
        self.group = group
        self.start_from = start
        self.timeout = timeout
        self.tansu = tansu
        """Set (the backend's AdminClient) when Tansu's quirks need working around."""
        self._rebalancing = False
        self.tracker = OffsetTracker()
        self.sent = 0
        """Records handed to the loop (written here only; `sub.finished` is the loop's)."""
        self.max_records = limit
        self.max_bytes = max_bytes
        self._record_bytes = 0.0
        """Recent average payload size (rises at once, falls slowly): sets the record limit."""
        self._high = limit
        self.low = limit // 2
        self._least = _least_take(self.low)
        self.blocked = False
        """The loop holds `_high` records, or too nearly for a batch: take no more until it
        drained to `low`."""
        self.flow_paused = False
        """Blocked for longer than PAUSE_AFTER: every partition is paused."""
        self._blocked_since = 0.0
        self.wake = threading.Event()
        """Set by the loop when a blocked backlog fell to `low` or a command is queued."""
        self.transactional = transactional
        self._commands: deque[tuple[Callable[[], None], asyncio.Future[Any], Any]] = deque()
        self._exited = False
        self._group_metadata: Any = None
        """Work the loop asked this thread to do between two polls."""
        self._poll_seconds = POLL_SECONDS
        self._paused: set[Key] = set()
        self._held: dict[Key, deque[Any]] = {}
        self._stop = threading.Event()
        self._joined = False
        self._last_commit = 0.0
        self._fatal: KafkaError | None = None
        self._refused: MsgkitError | None = None
        """The broker refused this client (credentials, TLS, an ACL): it stops with this."""
        self._user_error_cb: Callable[[KafkaError], None] | None = conf.get("error_cb")
        self.conf = {**conf, "error_cb": self._on_error, "on_commit": self._on_commit}
        strategy = str(conf.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        self.consumer = Consumer(self.conf)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"msgkit-kafka-{topic}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self.consumer
        error: BaseException | None = None
        try:
            self._begin()
            while not self._stop.is_set():
                if self._fatal is not None:
                    raise ConsumerLostError(f"Kafka dropped the consumer: {self._fatal.str()}")
                if self._refused is not None:
                    raise self._refused
                self._flow()
                wait = self._release_due()
                if self._commands:
                    self._run_commands()
                if self.blocked:  # the loop's buffer is full: wake as soon as it drained
                    if self.wake.wait(wait):
                        self.wake.clear()
                    if not self.flow_paused:
                        continue  # within PAUSE_AFTER: librdkafka's own queue is the buffer
                    record = consumer.poll(0)  # paused: still serve rebalances
                else:
                    record = consumer.poll(wait)
                if record is not None:
                    records = [record]
                    # Before taking more: a large first record lowers the limit for them
                    # (only raises it: the whole batch is averaged in `_take`).
                    if self.max_bytes and len(record) > self._record_bytes:
                        self._sized(len(record))
                    room = min(BATCH, self._high - (self.sent - self.sub.finished))
                    if room > 1:
                        records.extend(consumer.consume(room - 1, 0))
                    self._take(records)
                self._commit()
            self._commit(force=True, sync=True)
            if self.tansu is not None and self.group is not None:
                self._settle()
        except BaseException as exc:  # the loop learns it from fetch()
            error = exc
        finally:
            try:
                consumer.close()  # leaves the group; unfinished work goes to other members
            except Exception:
                log.exception("closing the Kafka consumer of %r failed", self.topic)
            self._exited = True
            self._drop_commands()
            self._to_loop(self.sub._on_stopped, error)

    def commit_first(self, positions: list[tuple[PartitionOffsets, int]]) -> asyncio.Future[bool]:
        """(event loop) Commit these positions now; the future says whether it worked.

        At-most-once consumers commit a batch before its handlers run, so a crash can
        lose it but never repeat it."""
        self._poll_seconds = AMO_POLL_SECONDS  # commands wait for poll() to return
        return self.commit_now(positions)

    def commit_now(self, positions: list[tuple[PartitionOffsets, int]]) -> asyncio.Future[bool]:
        """(event loop) Commit these positions synchronously on this thread; the future
        says whether it worked."""
        future: asyncio.Future[bool] = self._loop.create_future()
        self._command(lambda: self._commit_now(positions, future), future, False)
        return future

    def rewind(self, starts: Mapping[PartitionOffsets, int], *,
               from_committed: bool = False) -> asyncio.Future[None]:
        """(event loop) Consume these partitions again from these offsets (an aborted
        transaction's batch), or from the group's committed positions; what was fetched of
        them after that becomes stale. A partition that cannot be rewound ends the consumer
        (`ConsumerLostError`): going on past its batch would lose it."""
        future: asyncio.Future[None] = self._loop.create_future()

        def run() -> None:
            parts = self.tracker.parts
            live = {part.key: offset for part, offset in starts.items()
                    if parts.get(part.key) is part}
            try:
                if from_committed and live:
                    query = [TopicPartition(t, p) for t, p in live]
                    for tp in self.consumer.committed(query, timeout=self.timeout):
                        if tp.offset >= 0:
                            live[(tp.topic, tp.partition)] = tp.offset
                for (topic, partition), offset in live.items():
                    self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                self.tracker.revoke(live)  # nothing of theirs may commit past the batch
                self._to_loop(self.sub._purge, None)
                raise ConsumerLostError(
                    f"could not rewind {self.topic!r} after an aborted transaction: {exc}"
                ) from exc
            self.tracker.assign(live)
            for key in live:
                self._held.pop(key, None)
            self._to_loop(self.sub._purge, None)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, future, None)

        self._command(run, future, None)
        return future

    async def group_metadata(self) -> Any:
        """The group generation a transaction's offsets are fenced with (taken at each
        assignment, so asking costs no wait for the consumer thread)."""
        if self._group_metadata is None:
            self._group_metadata = await asyncio.to_thread(self.consumer.consumer_group_metadata)
        return self._group_metadata

    def _command(self, run: Callable[[], None], future: asyncio.Future[Any],
                 fallback: Any) -> None:
        """Queue `run` for this thread; `future` gets `fallback` if the thread ends first."""
        self._commands.append((run, future, fallback))
        self.wake.set()
        if self._exited:
            self._drop_commands()

    def _run_commands(self) -> None:
        while self._commands:
            run, future, fallback = self._commands.popleft()
            try:
                run()
            except BaseException:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_resolve, future, fallback)
                raise

    def _drop_commands(self) -> None:
        while True:
            try:
                _, future, fallback = self._commands.popleft()
            except IndexError:
                return
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, future, fallback)

    def _commit_now(self, positions: list[tuple[PartitionOffsets, int]],
                    future: asyncio.Future[bool]) -> None:
        live = [(part, pos) for part, pos in positions if not part.revoked]
        ok = True
        if live:
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(*part.key, pos) for part, pos in live],
                    asynchronous=False)
            except KafkaException as exc:
                log.warning("commit before handling failed on %r: %s", self.topic, exc)
                ok = False
            else:
                for part, pos in live:
                    if part.committed is None or pos > part.committed:
                        part.committed = pos
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, future, ok)

    def _settle(self) -> None:
        """Tansu 0.6 blocks a group for minutes when a member leaves in the middle of a
        rebalance: leave only once this member is assigned and the group is STABLE
        (bounded; records that arrive meanwhile are dropped, uncommitted, for the next
        owner)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if not self._rebalancing and self._joined and self._group_stable():
                return
            self.consumer.poll(POLL_SECONDS)

    def _group_stable(self) -> bool:
        assert self.tansu is not None and self.group is not None
        try:
            future = self.tansu.describe_consumer_groups([self.group])[self.group]
            state = future.result(timeout=self.timeout).state
        except Exception as exc:  # cannot tell: do not wait for it
            log.debug("describing group %r failed: %s", self.group, exc)
            return True
        return bool(state == ConsumerGroupState.STABLE)

    def _begin(self) -> None:
        consumer = self.consumer
        topics = [self.topic] + ([self.retry_topic] if self.retry_topic else [])
        if self.group is not None:
            consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            return
        # A private consumer has no group to coordinate: assign every partition at once.
        md = consumer.list_topics(self.topic, timeout=self.timeout)
        meta = md.topics.get(self.topic)
        partitions = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)] if meta else []
        self.tracker.assign((tp.topic, tp.partition) for tp in partitions)
        if self.until_end:
            self._at_end.update(((tp.topic, tp.partition), False) for tp in partitions)
        if self.start_from == "latest":
            ends = self._ends(partitions)
            for tp in partitions:
                tp.offset = ends[(tp.topic, tp.partition)]
        else:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
        consumer.assign(partitions)
        self._mark_joined()

    def _take(self, records: list[Any]) -> None:
        """Hands `records` to the loop as they are: it builds deliveries as it hands them
        out (this thread's Python work costs the loop the GIL). Only a retry copy that is
        not due yet is held back here, with the rest of its partition."""
        if self.until_end:
            self._note_ends(records)
        if self.max_bytes:  # before holding any: held copies count once released
            self._sized(sum(map(len, records)) / len(records))  # len: value bytes, in C
        if any(map(_error_of, records)):  # scans in C, as the check below does
            records = self._without_errors(records)
        retry_topic = self.retry_topic
        mixed = retry_topic is not None and retry_topic in map(_topic_of, records)
        if mixed:
            records = self._hold_not_due(records)
        if records:
            self._hand(records, None if mixed else self.topic)
        if self.until_end:
            self._tell_end()

    def _note_ends(self, records: list[Any]) -> None:
        at_end = self._at_end
        for record in records:
            key = (record.topic(), record.partition())
            if key in at_end:
                error = record.error()
                at_end[key] = error is not None and error.code() == KafkaError._PARTITION_EOF

    def _tell_end(self) -> None:
        """Tells the loop once all assigned partitions are read to their ends (after the
        records handed over before)."""
        ended = bool(self._at_end) and all(self._at_end.values())
        if ended and not self._ended:
            self._post(None)
        self._ended = ended

    def _without_errors(self, records: list[Any]) -> list[Any]:
        out = []
        for record in records:
            error = record.error()
            if error is None:
                out.append(record)
            else:
                self._record_error(error)
        return out

    def _hold_not_due(self, records: list[Any]) -> list[Any]:
        now = time.time()
        held = self._held
        out = []
        for record in records:
            key = (record.topic(), record.partition())
            queue = held.get(key)
            if queue is not None:  # behind a copy that is not due yet
                queue.append(record)
            elif key[0] == self.retry_topic and due_at(record) > now:
                held[key] = deque([record])
            else:
                out.append(record)
        return out

    def _hand(self, records: list[Any], topic: str | None) -> None:
        """To the loop, with the partitions they were fetched under (a record of a
        partition given up since then is stale) and the topic of them all, if one is."""
        self.sent += len(records)
        self._post((records, dict(self.tracker.parts), topic))

    def _post(self, item: Batch | None) -> None:
        sub = self.sub
        sub.inbox.append(item)
        if sub.waiters:  # read after the append: a fetch that missed the item is woken
            self._to_loop(sub._on_posted, None)

    def _sized(self, record_bytes: float) -> None:
        """Fits the record limit to `buffer_bytes` at the recent average record size."""
        average = self._record_bytes
        average = record_bytes if record_bytes > average else average + (record_bytes - average) / 8
        self._record_bytes = average
        high = max(2, min(self.max_records, int(self.max_bytes // max(average, 1.0))))
        if high != self._high:
            self._high, self.low = high, high // 2
            self._least = _least_take(self.low)

    def _release_due(self) -> float:
        """Hands out held retry copies that are due, as many as the buffer has room for;
        returns how long poll may wait."""
        if not self._held:
            return self._poll_seconds
        now = time.time()
        soonest = now + self._poll_seconds
        room = self._high - (self.sent - self.sub.finished)
        out: list[Any] = []
        for key, queue in list(self._held.items()):
            while queue and len(out) < room:
                due = due_at(queue[0])
                if due > now:
                    soonest = min(soonest, due)
                    break
                out.append(queue.popleft())
            if not queue:
                del self._held[key]
        if out:
            self._hand(out, self.retry_topic)
        return max(0.001, soonest - now)

    def _flow(self) -> None:
        outstanding = self.sent - self.sub.finished
        if self.blocked:
            if outstanding <= self.low:
                self.blocked = self.flow_paused = False
            elif time.monotonic() - self._blocked_since >= PAUSE_AFTER:
                self.flow_paused = True
        elif self._high - outstanding < self._least:  # no room for a batch worth a hand-over
            self.blocked = True
            self._blocked_since = time.monotonic()
        assigned = self.tracker.parts.keys()
        want = set(assigned) if self.flow_paused else set(self._held) & assigned
        pause = want - self._paused
        resume = (self._paused & assigned) - want
        try:
            if pause:
                self.consumer.pause([TopicPartition(t, p) for t, p in pause])
            if resume:
                self.consumer.resume([TopicPartition(t, p) for t, p in resume])
        except KafkaException as exc:
            log.warning("pause/resume of %s failed: %s", self.topic, exc)
            return
        self._paused = want

    def _commit(self, *, force: bool = False, sync: bool = False) -> None:
        if self.group is None or self.transactional:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_SECONDS:
            return
        self._last_commit = now
        positions = self.tracker.take()
        if positions:
            self._commit_positions(positions, sync=sync)

    def _commit_positions(self, positions: list[tuple[Key, int]], *, sync: bool) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions]
        try:
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("committing offsets of %r failed (will retry): %s", self.topic, exc)
            self.tracker.commit_failed(positions)

    # -- callbacks, all on this thread (inside poll) ------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalancing = False
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.tracker.assign(keys)
        for key in keys:
            self._paused.discard(key)
            self._held.pop(key, None)
            if self.until_end:
                self._at_end[key] = False
        try:
            self._resolve_start(partitions)
        except KafkaException as exc:
            log.warning("could not resolve start positions of %r: %s", self.topic, exc)
        try:
            if self._cooperative:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
            if self.transactional:
                self._group_metadata = consumer.consumer_group_metadata()
        finally:
            self._mark_joined()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        positions = self._forget(partitions)
        if positions and self.group is not None and not self.transactional:
            self._commit_positions(positions, sync=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)  # another member owns them already: commit nothing

    def _forget(self, partitions: list[TopicPartition]) -> list[tuple[Key, int]]:
        self._rebalancing = True
        keys = [(tp.topic, tp.partition) for tp in partitions]
        positions = self.tracker.revoke(keys)
        for key in keys:
            self._paused.discard(key)
            self._held.pop(key, None)
            self._at_end.pop(key, None)
        self._to_loop(self.sub._purge, None)
        return positions

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [((tp.topic, tp.partition), tp.offset) for tp in partitions
                  if err is not None or tp.error is not None]
        if failed and (err is None or err.code() != KafkaError._NO_OFFSET):
            log.warning("commit of %r offsets failed (will retry): %s", self.topic,
                        err or [tp.error for tp in partitions if tp.error])
            self.tracker.commit_failed(failed)

    def _on_error(self, err: KafkaError) -> None:
        if self._user_error_cb is not None:
            self._user_error_cb(err)
        if err.fatal():
            self._fatal = err
        elif not self._refused_by(err):
            log.debug("Kafka consumer of %r: %s", self.topic, err.str())

    def _record_error(self, err: KafkaError) -> None:
        if err.code() in _IGNORED:
            return
        if err.fatal():
            self._fatal = err
        elif not self._refused_by(err):
            log.warning("Kafka consumer of %r: %s", self.topic, err.str())

    def _refused_by(self, err: KafkaError) -> bool:
        found = refusal(err, self.conf, f"Kafka (the consumer of {self.topic!r})")
        if found is not None and self._refused is None:
            self._refused = found
        return found is not None

    # -- start positions --------------------------------------------------------------

    def _resolve_start(self, partitions: list[TopicPartition]) -> None:
        """A new group starting at "latest" gets the current end stored as its position,
        so whatever is published from now on is kept for it (even if it moves partitions)."""
        if self.start_from != "latest":
            return
        main = [tp for tp in partitions if tp.topic == self.topic]
        if not main:
            return
        query = [TopicPartition(tp.topic, tp.partition) for tp in main]
        stored = {(tp.topic, tp.partition): tp.offset
                  for tp in self.consumer.committed(query, timeout=self.timeout)}
        fresh = [tp for tp in main if stored.get((tp.topic, tp.partition), -1) < 0]
        if not fresh:
            return
        ends = self._ends(fresh)
        for tp in fresh:
            tp.offset = ends[(tp.topic, tp.partition)]
        positions = [((tp.topic, tp.partition), tp.offset) for tp in fresh]
        self._commit_positions(positions, sync=True)
        for key, position in positions:
            self.tracker.mark_committed(key, position)

    def _ends(self, partitions: Iterable[TopicPartition]) -> dict[Key, int]:
        ends: dict[Key, int] = {}
        for tp in partitions:
            ends[(tp.topic, tp.partition)] = self._high_watermark(tp.topic, tp.partition)
        if self.tansu is not None and any(ends.values()):
            ends = probe_ends(self.conf, ends, self.timeout)
        return ends

    def _high_watermark(self, topic: str, partition: int) -> int:
        """Retries while the partition has no leader yet (a topic created a moment ago)."""
        for attempt in Retrying(stop=stop_after_delay(self.timeout), wait=wait_fixed(0.05),
                                retry=retry_if_exception(_no_leader_yet), reraise=True):
            with attempt:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout, cached=False
                )
        return int(high)

    # -- helpers -------------------------------------------------------------------------

    def _mark_joined(self) -> None:
        if not self._joined:
            self._joined = True
            self._to_loop(self.sub._on_joined, None)

    def _to_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
            self._loop.call_soon_threadsafe(fn, arg)


_NO_LEADER_YET = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                            KafkaError.UNKNOWN_TOPIC_OR_PART})


def _no_leader_yet(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and exc.args[0].code() in _NO_LEADER_YET


def _least_take(low: int) -> int:
    """The fewest records worth handing over while the loop is busy: a hand-over costs
    both threads a GIL switch, and topping up the buffer a few records at a time made a
    quarter of the hand-overs smaller than 100 records."""
    return max(1, min(BATCH, low) // 2)


def _resolve(future: asyncio.Future[Any], ok: Any) -> None:
    if not future.done():
        future.set_result(ok)


def probe_ends(conf: dict[str, Any], marks: dict[Key, int], timeout: float) -> dict[Key, int]:
    """The true end of each partition, read from its last batch.

    Some brokers (Tansu 0.6) report the base offset of the last batch + 1 as the high
    watermark; reading from just below it finds the real last offset."""
    probe_conf = {k: v for k, v in conf.items() if k not in ("error_cb", "on_commit")}
    probe_conf.update({"group.id": f"msgkit-probe-{uuid.uuid4().hex}",
                       "enable.auto.commit": False, "enable.partition.eof": True})
    probe = Consumer(probe_conf)
    ends = dict(marks)
    waiting = {key for key, high in marks.items() if high > 0}
    try:
        probe.assign([TopicPartition(t, p, marks[(t, p)] - 1) for t, p in waiting])
        deadline = time.monotonic() + min(timeout, 2.0)
        while waiting and time.monotonic() < deadline:
            for record in probe.consume(BATCH, 0.1):
                key: Any = (record.topic(), record.partition())
                err = record.error()
                if err is None:
                    ends[key] = max(ends[key], (record.offset() or 0) + 1)
                elif err.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(key)
    finally:
        probe.close()
    return ends
