"""The documentation pages hold no broken Python: every ```python fence that is not a
snippet include (`--8<--`, whose file runs in test_getting_started.py) compiles. Top-level
`await` is allowed: the pages show fragments of async functions."""

from __future__ import annotations

import ast
import re
import textwrap

import pytest

from tests.docs.support import ROOT

PAGES = ROOT / "docs" / "pages"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def fences() -> list[tuple[str, str]]:
    found = []
    for page in sorted(PAGES.rglob("*.md")):
        for n, match in enumerate(FENCE.finditer(page.read_text()), 1):
            body = textwrap.dedent(match["body"])
            if "--8<--" not in body:
                found.append((f"{page.relative_to(PAGES)}#{n}", body))
    return found


FENCES = fences()


def test_the_pages_have_python_to_check() -> None:
    assert len(FENCES) > 10


@pytest.mark.parametrize(("name", "source"), FENCES, ids=[name for name, _ in FENCES])
def test_python_fence_compiles(name: str, source: str) -> None:
    compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
