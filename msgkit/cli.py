"""`msgkit` command line. `msgkit dlq --help` lists the dead-letter commands.

The broker comes from `--url` or `MSGKIT_URL` (as for `msgkit.connect()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

import msgkit
from msgkit import headers as h
from msgkit.dlq import DeadLetterQueue, Filter
from msgkit.errors import ConfigurationError, MsgkitError

T = TypeVar("T")

app = typer.Typer(help="msgkit: messaging tools.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect, replay and purge dead-lettered messages.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console()

Topic = Annotated[str, typer.Argument(help="The original topic the group consumed.")]
Group = Annotated[str, typer.Option("--group", "-g", help="The consumer group whose dead letters to use.")]
Url = Annotated[str | None, typer.Option("--url", envvar="MSGKIT_URL", help="Broker URL.")]
Exc = Annotated[str | None, typer.Option("--exception", help="Only this exception type (substring).")]
Key = Annotated[str | None, typer.Option("--key", help="Only messages with this key.")]
Since = Annotated[dt.datetime | None, typer.Option("--since", help="Only failures at or after (UTC).")]
Until = Annotated[dt.datetime | None, typer.Option("--until", help="Only failures at or before (UTC).")]


def _filter(exception: str | None, key: str | None, since: dt.datetime | None,
            until: dt.datetime | None) -> Filter:
    def seconds(moment: dt.datetime | None) -> float | None:
        if moment is None:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()

    return Filter(exception_type=exception, key=key, failed_after=seconds(since),
                  failed_before=seconds(until))


def _run(url: str | None, work: Callable[[msgkit.Broker], Awaitable[T]],
         what: str = "dead letters", instead: str = "msgkit.dlq.DeadLetterQueue") -> T:
    async def main() -> T:
        async with msgkit.connect(url) as broker:
            if broker.backend.url.scheme == "memory":
                raise ConfigurationError(
                    f"{broker.url} keeps its {what} inside the process that runs it; this "
                    f"command runs in another process and cannot see them. Use {instead} in "
                    "that process, or give --url / MSGKIT_URL of a Kafka or RabbitMQ broker"
                )
            return await work(broker)

    try:
        return asyncio.run(main())
    except MsgkitError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc


def _when(value: str | None) -> str:
    try:
        return dt.datetime.fromtimestamp(float(value or ""), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value or "-"


def _shown(value: object) -> str:
    """A key or header value for the terminal: text as it is, anything else as its repr
    (bytes stay visibly bytes, never decoded with replacement)."""
    return value if isinstance(value, str) else repr(value)


_TIMES = (h.FIRST_FAILURE_AT, h.DLQ_LAST_FAILURE_AT)


@dlq_app.command("list")
def list_(topic: Topic, group: Group, url: Url = None, exception: Exc = None, key: Key = None,
          since: Since = None, until: Until = None,
          limit: Annotated[int, typer.Option(help="At most this many.")] = 100) -> None:
    """List dead letters with their failure (they stay where they are)."""
    where = _filter(exception, key, since, until)
    found = _run(url, lambda b: DeadLetterQueue(b, topic, group).messages(
        where=where, limit=limit, missing_ok=False))
    table = Table(title=f"dead letters of {topic} / {group}: {len(found)}")
    table.add_column("id", overflow="fold", no_wrap=False)  # whole: `show` takes it
    for column in ("key", "attempts", "last failure (UTC)", "exception"):
        table.add_column(column)
    for msg in found:
        table.add_row(msg.id, "-" if msg.key is None else _shown(msg.key),
                      msg.header(h.DLQ_ATTEMPTS) or "?",
                      _when(msg.header(h.DLQ_LAST_FAILURE_AT)),
                      f"{msg.header(h.DLQ_EXCEPTION_TYPE) or '?'}: "
                      f"{(msg.header(h.DLQ_EXCEPTION_MESSAGE) or '')[:80]}")
    console.print(table)


@dlq_app.command()
def show(topic: Topic, group: Group,
         message_id: Annotated[str, typer.Argument(help="The id, or its first characters.")],
         url: Url = None) -> None:
    """Show one dead letter: headers, traceback and payload."""
    found = _run(url, lambda b: DeadLetterQueue(b, topic, group).messages(missing_ok=False))
    match = [m for m in found if m.id == message_id] or \
        [m for m in found if m.id.startswith(message_id)]
    if len(match) != 1:
        what = "no dead letter" if not match else f"{len(match)} dead letters match"
        console.print(f"[red]{what} {message_id!r} in {topic} / {group}[/red]")
        raise typer.Exit(1)
    msg = match[0]
    console.print(f"[bold]id[/bold]: {msg.id}")
    console.print(f"[bold]key[/bold]: {'-' if msg.key is None else _shown(msg.key)}")
    for name, value in msg.headers.items():
        if name != h.DLQ_TRACEBACK:
            shown = _when(value) + " UTC" if name in _TIMES and isinstance(value, str) else _shown(value)
            console.print(f"[bold]{name}[/bold]: {shown}", markup=True, highlight=False)
    for name, value in msg.properties.items():
        console.print(f"[bold]({name})[/bold]: {_shown(value)}", highlight=False)
    console.print("[bold]traceback[/bold]:\n" + (msg.header(h.DLQ_TRACEBACK) or "-"))
    try:
        payload = msg.value[:2000].decode()
    except UnicodeDecodeError:
        payload = repr(msg.value[:2000])
    console.print("[bold]payload[/bold]: " + payload, highlight=False, markup=False)


@dlq_app.command()
def replay(topic: Topic, group: Group, url: Url = None, exception: Exc = None, key: Key = None,
           since: Since = None, until: Until = None) -> None:
    """Send dead letters back to the topic for the group only, attempts reset."""
    where = _filter(exception, key, since, until)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("replaying", total=None)
        moved = _run(url, lambda b: DeadLetterQueue(b, topic, group).replay(
            where=where, missing_ok=False,
            progress=lambda m: bar.update(task, advance=1, description=f"replayed {m.id}")))
    console.print(f"replayed {moved} message(s) to {topic} for group {group}")


@dlq_app.command()
def purge(topic: Topic, group: Group, url: Url = None, exception: Exc = None, key: Key = None,
          since: Since = None, until: Until = None,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
          ) -> None:
    """Delete dead letters for good."""
    if not yes:
        typer.confirm(f"Delete the matching dead letters of {topic} / {group}?", abort=True)
    where = _filter(exception, key, since, until)
    purged = _run(url, lambda b: DeadLetterQueue(b, topic, group).purge(
        where=where, missing_ok=False))
    console.print(f"purged {purged} message(s)")


@app.command()
def lag(
    topic: Annotated[str, typer.Argument(help="The topic the groups consume.")],
    groups: Annotated[list[str], typer.Option("--group", "-g", help="A consumer group (repeat for more).")],
    url: Url = None,
    watch: Annotated[float | None, typer.Option(
        "--watch", help="Refresh every this many seconds until Ctrl-C.")] = None,
) -> None:
    """Messages waiting for each group: per partition on Kafka (end offset minus the
    group's committed offset), the group queue's ready messages on RabbitMQ."""

    async def table(broker: msgkit.Broker) -> Table:
        out = Table("group", "partition / queue", "lag", title=f"{topic} on {broker.url}")
        for group in groups:
            parts = await broker.backend.lag(topic, group)
            if not parts:
                out.add_row(escape(group), "[dim]no such topic or group[/dim]", "-")
            for part, count in parts.items():
                out.add_row(escape(group), escape(part), str(count))
            if len(parts) > 1:
                out.add_row(escape(group), "[bold]total[/bold]", f"[bold]{sum(parts.values())}[/bold]")
        return out

    async def show(broker: msgkit.Broker) -> None:
        if watch is None:
            console.print(await table(broker))
            return
        with Live(await table(broker), console=console) as live:
            while True:
                await asyncio.sleep(watch)
                live.update(await table(broker))

    with contextlib.suppress(KeyboardInterrupt):
        _run(url, show, what="queues", instead="Consumer.lag()")


@app.command("run")
def run_worker(
    target: Annotated[str, typer.Argument(
        help="module:attribute of a Broker with @broker.subscriber handlers.")],
    port: Annotated[int | None, typer.Option(
        "--port", help="Serve /healthz, /readyz and /metrics on this port (0: any free one).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", help="Seconds in-flight messages may take to finish on SIGTERM.")] = 30.0,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json.")] = "text",
) -> None:
    """Run a service's consumers until SIGTERM or SIGINT, then drain and exit (0: stopped
    as asked, 1: failed, 2: the target cannot be loaded)."""
    from msgkit import jsonlog, worker

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format is text or json")
    jsonlog.configure(log_format)
    if workers > 1:
        code = worker.supervise(target, workers=workers, port=port, drain_timeout=drain_timeout,
                                log_format=log_format)
    else:
        code = worker.run(target, port=port, drain_timeout=drain_timeout)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
