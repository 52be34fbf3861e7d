"""Hermetic tests: every test gets its own HOME and cache, never the developer's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if request.node.get_closest_marker("integration"):
        return  # integration tests choose their cache themselves (see tests/integration/conftest.py)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("KORCH_CACHE", raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def make_fake_kernel(root: Path, files: dict[str, str] | None = None) -> Path:
    """A directory that passes korch's 'looks like a kernel tree' checks, for fast tests."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text(
        "VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 0\nEXTRAVERSION = -test\n"
    )
    (root / "Kconfig").write_text('mainmenu "fake"\n')
    (root / "arch" / "x86").mkdir(parents=True, exist_ok=True)
    (root / "arch" / "x86" / "Kconfig").write_text("config X86\n\tdef_bool y\n")
    for name, text in (files or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    os.utime(root)
    return root


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's tally (tests/faults.py), when any of its cases ran."""
    faults = sys.modules.get("tests.faults")
    if faults is not None and faults.TALLY["tried"]:
        terminalreporter.write_line(faults.summary())
