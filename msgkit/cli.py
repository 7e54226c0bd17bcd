"""`msgkit` command line. `msgkit dlq --help` lists the dead-letter commands, `msgkit outbox
--help` the transactional outbox's.

The broker comes from `--url` or `MSGKIT_URL` (as for `msgkit.connect()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

import msgkit
from msgkit import headers as h
from msgkit.dlq import IDLE, DeadLetterQueue, Filter
from msgkit.errors import ConfigurationError, MsgkitError
from msgkit.outbox import Counts, Relay
from msgkit.outbox.relay import DEFAULT_BATCH, open_source
from msgkit.outbox.schema import DEFAULT_TABLE
from msgkit.outbox.schema import Table as OutboxTable
from msgkit.outbox.source import Source
from msgkit.url import redact

T = TypeVar("T")

app = typer.Typer(help="msgkit: messaging tools.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect, replay and purge dead-lettered messages.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
outbox_app = typer.Typer(help="Relay and inspect a transactional outbox (msgkit.outbox).",
                         no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
console = Console()

Topic = Annotated[str, typer.Argument(help="The original topic the group consumed.")]
Group = Annotated[str, typer.Option("--group", "-g", help="The consumer group whose dead letters to use.")]
Url = Annotated[str | None, typer.Option("--url", envvar="MSGKIT_URL", help="Broker URL.")]
Exc = Annotated[str | None, typer.Option("--exception", help="Only this exception type (substring).")]
Key = Annotated[str | None, typer.Option("--key", help="Only messages with this key.")]
Since = Annotated[dt.datetime | None, typer.Option("--since", help="Only failures at or after (UTC).")]
Until = Annotated[dt.datetime | None, typer.Option("--until", help="Only failures at or before (UTC).")]
Idle = Annotated[float, typer.Option(
    "--idle", min=0.05, help="Seconds without a new dead letter after which a read ends "
             "(Kafka and memory:// reads end at the end of the queue).")]
Db = Annotated[str, typer.Option(
    "--db", envvar="MSGKIT_OUTBOX_DB",
    help="The outbox's database: postgresql://user:pw@host:5432/db or sqlite:///path.db.")]
TableName = Annotated[str, typer.Option("--table", help="The outbox table.")]
Schema = Annotated[str | None, typer.Option(
    "--schema", help="The table's PostgreSQL schema (default: the search path's).")]


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
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


def _database_failed(db: str, exc: BaseException) -> NoReturn:
    """The database's own errors (unreachable, refused, no such schema) are not msgkit's:
    redacted here, in case one quotes the URL."""
    _fail(f"outbox database {redact(db)}: {redact(str(exc))}")


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
          limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
          idle: Idle = IDLE) -> None:
    """List dead letters with their failure (they stay where they are)."""
    where = _filter(exception, key, since, until)
    found = _run(url, lambda b: DeadLetterQueue(b, topic, group, idle=idle).messages(
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
         url: Url = None, idle: Idle = IDLE) -> None:
    """Show one dead letter: headers, traceback and payload."""
    found = _run(url, lambda b: DeadLetterQueue(b, topic, group, idle=idle).messages(missing_ok=False))
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
           since: Since = None, until: Until = None, idle: Idle = IDLE) -> None:
    """Send dead letters back to the topic for the group only, attempts reset."""
    where = _filter(exception, key, since, until)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("replaying", total=None)
        moved = _run(url, lambda b: DeadLetterQueue(b, topic, group, idle=idle).replay(
            where=where, missing_ok=False,
            progress=lambda m: bar.update(task, advance=1, description=f"replayed {m.id}")))
    console.print(f"replayed {moved} message(s) to {topic} for group {group}")


@dlq_app.command()
def purge(topic: Topic, group: Group, url: Url = None, exception: Exc = None, key: Key = None,
          since: Since = None, until: Until = None,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
          idle: Idle = IDLE) -> None:
    """Delete dead letters for good."""
    if not yes:
        typer.confirm(f"Delete the matching dead letters of {topic} / {group}?", abort=True)
    where = _filter(exception, key, since, until)
    purged = _run(url, lambda b: DeadLetterQueue(b, topic, group, idle=idle).purge(
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
    drain_timeout: Annotated[float | None, typer.Option(
        "--drain-timeout", min=0, help="Seconds in-flight messages may take to finish on SIGTERM; "
        "then their handlers are cancelled. Default: MSGKIT_STOP_TIMEOUT, else 30.")] = None,
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


@app.command("asyncapi")
def asyncapi_(
    target: Annotated[str, typer.Argument(
        help="module:attribute of a Broker (or a function returning one) with "
             "@broker.subscriber handlers and broker.publishes declarations.")],
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the document here instead of to stdout.")] = None,
    title: Annotated[str | None, typer.Option(
        "--title", help="info.title (default: the module's name).")] = None,
    version: Annotated[str, typer.Option(
        "--version", help="info.version: the version of this contract.")] = "1.0.0",
) -> None:
    """Write a service's AsyncAPI 3.0 document: channels, operations, message schemas and
    broker bindings, from its declarations (nothing connects to a broker)."""
    from msgkit.asyncapi import document, render
    from msgkit.worker import load

    module = target.partition(":")[0]
    try:
        broker = load(target)
        description = inspect.getdoc(sys.modules.get(module))
        text = render(document(broker, title=title or module, version=version,
                               description=description), fmt)
    except ConfigurationError as exc:
        _fail(str(exc))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote the AsyncAPI document of {escape(target)} to {escape(str(output))}")


def _outbox(db: str, table: str, schema: str | None, work: Callable[[Source], Awaitable[T]],
            *, create: bool = False) -> T:
    """`work` done on the outbox in `db`; a missing table is an error unless `create`."""
    async def main() -> T:
        source = open_source(db, OutboxTable(table, schema), retention=0.0, lease=10.0)
        try:
            await source.open(create=create)
            return await work(source)
        except source.errors as exc:
            _database_failed(db, exc)
        finally:
            await source.close()

    try:
        return asyncio.run(main())
    except MsgkitError as exc:
        _fail(str(exc))


def _where(db: str, table: str, schema: str | None) -> str:
    return escape(f"{OutboxTable(table, schema).sql} in {redact(db)}")


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"


@outbox_app.command("relay")
def relay_(
    db: Db,
    url: Url = None,
    table: TableName = DEFAULT_TABLE,
    schema: Schema = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per publish.")
                          ] = DEFAULT_BATCH,
    retention: Annotated[float, typer.Option(
        "--retention", min=0, help="Seconds published rows are kept (0: deleted once published).")
    ] = 0.0,
    required_groups: Annotated[list[str] | None, typer.Option(
        "--required-group", help="RabbitMQ: a group whose queue must exist before a message "
        "is published (repeat for more).")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json.")] = "text",
) -> None:
    """Publish the outbox's committed rows until SIGTERM or SIGINT, then finish the round in
    progress and exit (0: stopped as asked, 1: failed)."""
    from msgkit import jsonlog, worker

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format is text or json")
    jsonlog.configure(log_format)

    async def relay_until_stopped(broker: msgkit.Broker) -> int:
        relay = Relay(db, broker, table=table, schema=schema, batch_size=batch_size,
                      retention=retention, required_groups=required_groups or ())
        told = asyncio.Event()
        with worker._on_signals(told.set):
            try:
                try:
                    await relay.start()
                except relay.source.errors as exc:
                    _database_failed(db, exc)
                console.print(f"relaying {_where(db, table, schema)} to {escape(broker.url)}",
                              soft_wrap=True)  # a log line: whole, for grep
                # A relay that died must not leave this process up, publishing nothing.
                stopped, ended = asyncio.ensure_future(told.wait()), asyncio.ensure_future(relay.wait())
                # Its failure, if any, is raised by `stop()` below: not also reported here.
                ended.add_done_callback(lambda task: task.cancelled() or task.exception())
                await asyncio.wait([ended, stopped], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                ended.cancel()
            finally:
                await relay.stop()  # raises what ended the relay, if it failed
        return relay.published

    published = _run(url, relay_until_stopped, what="messages", instead="msgkit.outbox.Relay")
    console.print(f"relay stopped: published {published} message(s)", soft_wrap=True)


@outbox_app.command()
def status(db: Db, table: TableName = DEFAULT_TABLE, schema: Schema = None) -> None:
    """Rows waiting to be published, set aside after a permanent failure, and kept after
    publishing (--retention)."""
    counts: Counts = _outbox(db, table, schema, lambda source: source.counts())
    oldest = f" (the oldest waiting for {_age(counts.oldest_pending_age)})" if counts.pending else ""
    console.print(f"outbox {_where(db, table, schema)}")
    console.print(f"pending: {counts.pending}{oldest}")
    console.print(f"failed: {counts.failed}"
                  + (" (set aside: fix the cause, then `msgkit outbox retry`)" if counts.failed else ""))
    console.print(f"published, kept: {counts.published}")


@outbox_app.command()
def retry(db: Db, table: TableName = DEFAULT_TABLE, schema: Schema = None) -> None:
    """Put the rows set aside after a permanent failure back to pending, for the relay."""
    count = _outbox(db, table, schema, lambda source: source.retry_failed())
    console.print(f"{count} failed row(s) back to pending in {_where(db, table, schema)}")


@outbox_app.command()
def create(db: Db, table: TableName = DEFAULT_TABLE, schema: Schema = None) -> None:
    """Create the outbox table and its indexes (else the first `Outbox.send` does, inside
    the service's transaction); an existing one is left as it is."""

    async def nothing(source: Source) -> None:
        """Opening the source created the table."""

    _outbox(db, table, schema, nothing, create=True)
    lease_table = " and its relay lease table" if db.startswith("sqlite:") else ""
    console.print(f"outbox table {_where(db, table, schema)} ready: created with its indexes"
                  f"{lease_table} if it was missing")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
