"""The README can't drift: its first program is examples/getting_started/first_program.py byte
for byte and runs on every backend, its other blocks are marked sections of examples that
run in tests (test_outbox_examples.py), and its relative links lead to files that exist."""

from __future__ import annotations

import re

from tests.docs.support import GETTING_STARTED, ROOT, finish, sections, start

README = ROOT / "README.md"
TEXT = README.read_text()
PROGRAMS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_the_readme_program_is_the_getting_started_file() -> None:
    assert PROGRAMS[0] == (GETTING_STARTED / "first_program.py").read_text()


def test_every_other_readme_block_is_a_section_of_an_example() -> None:
    shown = set(sections().values())
    assert len(PROGRAMS) == 3, "the outbox with psycopg, the Flask view with SQLAlchemy"
    for block in PROGRAMS[1:]:
        assert block in shown, f"not a marked section of an example:\n{block}"


async def test_the_readme_program_prints_what_it_handled(url: str, unique_name: str) -> None:
    process = await start(PROGRAMS[0], url, unique_name)
    assert await finish(process) == ["charging o-1"]


def test_relative_links_in_the_readme_lead_to_files() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    relative = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert relative, "the README links into the docs"
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
