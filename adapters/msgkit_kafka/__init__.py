"""Kafka backend for msgkit (`kafka://host:9092[,host2:9092][?option=value&...]`), on
confluent-kafka (librdkafka).

Options come from the URL query and from `msgkit.connect(url, **options)`:

- librdkafka settings, written with dots, pass through untouched. Unprefixed ones reach
  every client (connection, TLS, SASL: `security.protocol`, `ssl.ca.location`, ...);
  `producer.<setting>`, `consumer.<setting>` and `admin.<setting>` reach only that kind
  of client (`consumer.session.timeout.ms=6000`, `producer.linger.ms=20`). Keyword options
  of `broker.producer(...)` / `broker.consumer(...)` reach only that client
  (`broker.consumer("t", group="g", **{"fetch.min.bytes": 1024})`).
  `kafka://user:pass@host:9093` sets `sasl.username`/`sasl.password` (with SASL_SSL/PLAIN
  unless `security.protocol`/`sasl.mechanism` say otherwise). Passwords never reach logs
  or `describe()`.
- msgkit's own settings have dotless names (see `msgkit_kafka.config.Settings`):
  `partitions` (3), `replication_factor` (-1: broker default), `create_topics` (true),
  `connect_timeout` (10 s), `join_timeout` (60 s), `close_timeout` (30 s),
  `buffer_messages` (max(4 x prefetch, 2048)) and `buffer_bytes` (64 MiB; 0: no byte
  bound): records and payload bytes a consumer holds before pausing its partitions,
  `tansu_workarounds` (auto: on when the broker is Tansu), `transactional_id` (exactly-once:
  a stable id per instance; default a fresh one).

Guarantees: at-least-once publishing uses `acks=all` and `enable.idempotence=true` and
returns when every message is acknowledged; at-most-once uses `acks=1` and does not wait.
Exactly-once uses transactions (`transaction.py`): a consumer's batch, what its handlers
sent and its offsets commit together; a producer commits each `send`/`send_many` call.
Consumers commit only finished messages, contiguously per partition. `redeliver` writes a
copy to `<topic>.<group>.retry` (which the group's consumers also read) before the
original is released; a copy with a delay waits in its paused partition until due.

Native objects: `broker.native` is the `AdminClient`, `producer.native` the `Producer`,
`consumer.native` the `Consumer` (its methods wait while the consumer thread polls, so
call them sparingly), `message.native` the record.
"""

from msgkit_kafka.backend import KafkaBackend

__all__ = ["KafkaBackend"]
