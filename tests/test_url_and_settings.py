from pathlib import Path

import pytest

import msgkit
from msgkit.url import URL, redact


def test_url_parses_hosts_credentials_vhost_and_options() -> None:
    url = URL.parse("amqp://guest:s3cr@t@rabbit:5672/%2F?heartbeat=5")
    assert url.scheme == "amqp" and url.hosts == (("rabbit", 5672),)
    assert url.username == "guest" and url.password == "s3cr@t"
    assert url.path == "/" and url.query == {"heartbeat": "5"}
    assert URL.parse("kafka://a:9092,b:9093").hosts == (("a", 9092), ("b", 9093))


def test_passwords_never_appear_in_redacted_forms() -> None:
    url = URL.parse("amqp://guest:hunter2@rabbit:5672/")
    for text in (str(url), repr(url), url.redacted, redact(f"failed: {url.raw}")):
        assert "hunter2" not in text
    assert "hunter2" not in repr(msgkit.Settings(url="amqp://u:hunter2@h/"))


@pytest.mark.parametrize("url", [
    "kafka://k:9092?sasl.password=hunter2&acks=all",
    "kafka://k:9092?acks=all&ssl.key.password=hunter2",
    "kafka://k:9092?sasl.oauthbearer.client.secret=hunter2",
    "amqp://h/?token=hunter2",
    "postgresql://u@h/db?password=hunter2&sslmode=require",
    "redis://h:6379/0?Password=hunter2",
])
def test_secret_query_parameters_are_redacted_and_the_rest_kept(url: str) -> None:
    for text in (redact(url), URL.parse(url).redacted, repr(URL.parse(url)),
                 redact(f"connecting to {url!r} failed")):
        assert "hunter2" not in text and "***" in text
    assert "acks=all" in redact("kafka://k:9092?acks=all&sasl.password=x")


async def test_a_broker_shows_no_secret_of_its_url_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with msgkit.connect("memory://secrets?token=hunter2") as broker:
        shown = [repr(broker), str(broker.url), str(broker.backend.url)]
    assert not [text for text in shown if "hunter2" in text]
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("bad", ["localhost:9092", "", "://x", "kafka://h:notaport"])
def test_malformed_urls_raise_invalid_url_error(bad: str) -> None:
    with pytest.raises(msgkit.InvalidURLError):
        msgkit.connect(bad)


def test_unknown_scheme_lists_installed_schemes() -> None:
    with pytest.raises(msgkit.UnknownBackendError) as info:
        msgkit.connect("nats://localhost:4222")
    for scheme in ("memory", "kafka", "amqp"):
        assert scheme in str(info.value)


def test_url_comes_from_environment_then_dotenv_then_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MSGKIT_URL", raising=False)
    assert msgkit.connect().url == "memory://"
    (tmp_path / ".env").write_text("MSGKIT_URL=memory://from-dotenv\n")
    assert msgkit.connect().url == "memory://from-dotenv"
    monkeypatch.setenv("MSGKIT_URL", "memory://from-env")
    assert msgkit.connect().url == "memory://from-env"
    assert msgkit.connect("memory://explicit").url == "memory://explicit"


def test_guarantee_default_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGKIT_GUARANTEE", "at-most-once")
    broker = msgkit.connect("memory://")
    assert broker.producer().guarantee is msgkit.Guarantee.AT_MOST_ONCE
    assert broker.consumer("t", group="g").describe()["ack"] == "before handler"


def test_exactly_once_needs_what_it_stands_on() -> None:
    broker = msgkit.connect("memory://")
    with pytest.raises(msgkit.ConfigurationError, match="AT_LEAST_ONCE"):
        broker.producer(guarantee=msgkit.Guarantee.EXACTLY_ONCE)
    with pytest.raises(msgkit.ConfigurationError, match="dedup="):
        broker.consumer("t", group="g", guarantee=msgkit.Guarantee.EXACTLY_ONCE)
    from msgkit.dedup import Dedup

    consumer = broker.consumer("t", group="g", guarantee=msgkit.Guarantee.EXACTLY_ONCE,
                               dedup=Dedup("memory://"))
    assert consumer.describe()["ack"] == "after handler"
    with pytest.raises(msgkit.ConfigurationError, match="unknown guarantee"):
        broker.consumer("t", guarantee="twice")  # type: ignore[arg-type]


def test_forked_processes_draw_fresh_message_ids() -> None:
    import os

    from msgkit.encoded import new_message_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and leave at once
        os.write(write, new_message_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    parent_id = new_message_id()
    assert child_id[:16] != parent_id[:16], "the child kept its parent's id prefix"
