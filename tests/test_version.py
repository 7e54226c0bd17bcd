from __future__ import annotations

from importlib.metadata import version

import msgkit


def test_version_is_the_installed_distributions() -> None:
    assert msgkit.__version__ == version("msgkit")
    assert msgkit.__version__.count(".") >= 2
