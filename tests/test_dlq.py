"""Dead-letter tooling on every backend: list leaves messages, replay reaches one group, purge."""

import asyncio

import msgkit
from msgkit import headers as h
from msgkit.dlq import DeadLetterQueue, Filter
from msgkit.testing import Collector, eventually

WAIT = 30.0


async def _dead_letter_two(
    broker: msgkit.Broker, topic: str
) -> tuple[list[msgkit.Message], list[str]]:
    """Two messages fail for good in group `g` (keys a and b), which then heals; returns
    what the group handles from then on, and the two ids."""
    broken = {"a", "b"}
    handled: list[msgkit.Message] = []

    async def handler(msg: msgkit.Message) -> None:
        if msg.key in broken:
            raise TimeoutError(f"downstream timed out for {msg.key}")
        handled.append(msg)

    consumer = broker.consumer(topic, group="g", failure=msgkit.FailurePolicy(delays=()))
    await consumer.start(handler)
    producer = broker.producer()
    ids = [await producer.send(topic, f"payload-{k}", key=k, headers={"trace": k}) for k in "ab"]
    dlq = DeadLetterQueue(broker, topic, "g", idle=1.0)

    async def two_dead() -> None:
        while len(await dlq.messages()) < 2:
            pass

    await asyncio.wait_for(two_dead(), WAIT)
    broken.clear()
    return handled, ids


async def test_listing_leaves_dead_letters_in_place_and_filters(
    msgkit_broker: msgkit.Broker, unique_name: str
) -> None:
    _, ids = await _dead_letter_two(msgkit_broker, unique_name)
    dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)
    first = await dlq.messages()
    again = await dlq.messages()
    assert {m.id for m in first} == {m.id for m in again} == set(ids)
    only_b = await dlq.messages(where=Filter(key="b"))
    assert [m.key for m in only_b] == ["b"]
    assert only_b[0].headers["trace"] == "b"
    assert only_b[0].headers[h.DLQ_EXCEPTION_TYPE] == "builtins.TimeoutError"
    assert await dlq.messages(where=Filter(exception_type="KeyError")) == []


async def test_replay_reaches_only_the_original_group_with_attempts_reset(
    msgkit_broker: msgkit.Broker, unique_name: str
) -> None:
    other = Collector()
    await msgkit_broker.consumer(unique_name, group="other").start(other)
    handled, ids = await _dead_letter_two(msgkit_broker, unique_name)
    await other.wait_for(2, timeout=WAIT)
    dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)
    replayed: list[str] = []
    assert await dlq.replay(where=Filter(key="a"), progress=lambda m: replayed.append(m.id)) == 1
    await eventually(lambda: len(handled) == 1, timeout=WAIT, message="the replay handled")
    assert handled[0].id == ids[0] == replayed[0] and handled[0].attempt == 1
    assert not any(k.startswith(h.DLQ_PREFIX) for k in handled[0].headers)
    assert [m.key for m in await dlq.messages()] == ["b"]
    assert len(other.messages) == 2, "the replay went to another group too"


async def test_purge_deletes_matching_dead_letters(
    msgkit_broker: msgkit.Broker, unique_name: str
) -> None:
    await _dead_letter_two(msgkit_broker, unique_name)
    dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)
    assert await dlq.purge(where=Filter(key="a")) == 1
    assert [m.key for m in await dlq.messages()] == ["b"]
    assert await dlq.purge() == 1
    assert await dlq.messages() == []


ORIGIN = {"memory": set(), "amqp": {"exchange", "routing-key", "queue"},
          "kafka": {"partition", "offset"}}


async def test_dead_letters_say_where_the_broker_kept_the_message(
    msgkit_broker: msgkit.Broker, msgkit_url: str, unique_name: str
) -> None:
    await _dead_letter_two(msgkit_broker, unique_name)
    [dead, _] = await DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0).messages()
    scheme = msgkit_url.split(":", 1)[0]
    origin = {k.removeprefix(h.DLQ_PREFIX) for k in dead.headers if k.startswith(h.DLQ_PREFIX)}
    failure = {"original-topic", "group", "exception-type", "exception-message", "traceback",
               "attempts", "last-failure-at"}
    assert origin - failure == ORIGIN[scheme]
    if scheme == "amqp":
        assert dead.headers[f"{h.DLQ_PREFIX}exchange"] == unique_name
        assert dead.headers[f"{h.DLQ_PREFIX}routing-key"] == "a"


async def test_reads_take_every_dead_letter_not_a_prefetch_worth(
    msgkit_broker: msgkit.Broker, unique_name: str
) -> None:
    letters = 1200  # more than one fetch, and than the 500 a read used to stop at

    async def fail(msg: msgkit.Message) -> None:
        raise KeyError(msg.value) if int(msg.value) % 100 == 0 else ValueError(msg.value)

    await msgkit_broker.consumer(unique_name, group="g", prefetch=500,
                                 failure=msgkit.FailurePolicy(delays=())).start(fail)
    await msgkit_broker.producer().send_many(unique_name, [f"{n}" for n in range(letters)])
    dlq = DeadLetterQueue(msgkit_broker, unique_name, "g", idle=1.0)
    listed = 0

    async def all_listed() -> None:  # dead-lettering takes a while: list until all are in
        nonlocal listed
        while listed < letters:
            listed = len(await dlq.messages())

    await asyncio.wait_for(all_listed(), 90)
    assert listed == letters
    # A filtered purge holds what it leaves: past 500 of those it must go on.
    assert await dlq.purge(where=Filter(exception_type="KeyError")) == letters // 100
