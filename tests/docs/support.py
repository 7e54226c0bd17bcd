"""Runs the documentation's programs as a newcomer would: `python <file>` with MSGKIT_URL."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GETTING_STARTED = EXAMPLES / "getting_started"
SECTION = re.compile(r"^[ \t]*# --8<-- \[start:(?P<name>\w+)\]\n(?P<body>.*?)"
                     r"^[ \t]*# --8<-- \[end:(?P=name)\]", re.S | re.M)
BACKENDS = ["memory", "kafka", "amqp"]


def sections() -> dict[str, str]:
    """Every marked section (`# --8<-- [start:name]` ... `[end:name]`) of the examples, the
    way pages include them, dedented: `{"outbox/flask_orders.py:app": "..."}`."""
    found = {}
    for path in EXAMPLES.rglob("*.py"):
        for match in SECTION.finditer(path.read_text()):
            found[f"{path.relative_to(EXAMPLES)}:{match['name']}"] = textwrap.dedent(match["body"])
    return found


async def start(program: str | Path, url: str, topic: str | None = None, *args: str,
                merged: bool = False) -> asyncio.subprocess.Process:
    """`program` is a file, or source text run with `python -c`. Its errors go to their own
    pipe (librdkafka logs there), or into its output when `merged`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MSGKIT_URL", "ORDERS_TOPIC")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MSGKIT_URL"] = url
    if topic is not None:
        env["ORDERS_TOPIC"] = topic
    command = [str(program)] if isinstance(program, Path) else ["-c", program]
    return await asyncio.create_subprocess_exec(
        sys.executable, *command, *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE)


async def finish(process: asyncio.subprocess.Process, timeout: float = 60) -> list[str]:
    """Waits for the program to exit 0 and returns the lines it printed."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, (out + (err or b"")).decode()
    return out.decode().splitlines()


async def read_until(process: asyncio.subprocess.Process, text: str, timeout: float = 60) -> None:
    """Reads lines until one contains `text`; fails if the program exits first."""
    stdout = process.stdout
    assert stdout is not None
    seen: list[str] = []

    async def lines() -> None:
        while text not in (line := (await stdout.readline()).decode()):
            assert line, f"the program exited before printing {text!r}:\n{''.join(seen)}"
            seen.append(line)

    try:
        await asyncio.wait_for(lines(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(seen)}") from None
