import msgkit
from msgkit.testing import Collector


async def test_memory_roundtrip(memory_broker: msgkit.Broker, unique_name: str) -> None:
    collector = Collector()
    consumer = memory_broker.consumer(unique_name, group="g")
    await consumer.start(collector)
    await memory_broker.producer().send(unique_name, {"a": 1}, key="k", headers={"h": "v"})
    [msg] = await collector.wait_for(1)
    assert msg.json() == {"a": 1} and msg.key == "k" and msg.headers["h"] == "v"
    await consumer.stop()
