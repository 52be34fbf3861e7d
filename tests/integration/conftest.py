"""Integration tests: real kernel sources, real builds, real QEMU.

They use korch's ordinary cache ($KORCH_CACHE, else $XDG_CACHE_HOME/korch, else
~/.cache/korch) so that a developer's second run, and CI with a restored cache, do
not rebuild what is already built; with a cold cache the first build takes minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import build, config
from orchestrator.fsutil import cache_root
from orchestrator.ui import PlainProgress


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def default_experiment() -> config.Experiment:
    return config.load_default()


@pytest.fixture(scope="session")
def default_builds(default_experiment: config.Experiment) -> dict[str, build.Build]:
    """Both variants of the default experiment (Linux 7.2 from Debian's linux-source-7.2)."""
    builder = build.Builder(default_experiment, cache_root(), PlainProgress())
    return builder.build_all()
