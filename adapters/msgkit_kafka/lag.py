"""A group's lag on Kafka: per partition of the topic and of the group's retry topic, the
end offset minus the group's committed offset (from the partition's start when the group
committed nothing there yet).

Read with a consumer client that never joins the group (`committed()` and the watermarks),
not the admin client: librdkafka 2.x crashes the process when an admin
ListConsumerGroupOffsets answer says "not coordinator", as it does the first time a cluster
is asked about a group (librdkafka issue #5040)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from msgkit_kafka.topics import Topics, retry_topic


def group_lag(conf: Mapping[str, Any], topics: Topics, topic: str, group: str,
              timeout: float) -> dict[str, int]:
    """Blocking: call in a thread. `conf`: consumer settings (servers, security). Keys of
    the result are `<topic>[<partition>]`."""
    parts = [TopicPartition(name, p) for name in (topic, retry_topic(topic, group))
             for p in topics.partitions(name)]
    if not parts:
        return {}
    reader = Consumer({**conf, "group.id": group, "enable.auto.commit": False})
    try:
        lag = {}
        for tp in reader.committed(parts, timeout=timeout):
            low, high = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                     timeout=timeout)
            position = tp.offset if tp.offset >= 0 else low
            lag[f"{tp.topic}[{tp.partition}]"] = max(0, high - position)
        return lag
    finally:
        reader.close()
