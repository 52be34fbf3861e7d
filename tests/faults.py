"""The fault suite's tally, shared by tests/unit/test_faults.py (bad input, refusing
machines) and tests/integration/test_faults_guest.py (signals at each stage, panics, full
disks, concurrent commands on real kernels). tests/conftest.py prints it at the end.

Each case records its exit code, whether the output held a traceback, whether the message
named what it must, the processes it left behind (its own only: found by a directory of the
case's on their command line or as their working directory) and the completed runs lost.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

CLASSES = {
    0: "ok", 1: "regression", 2: "infrastructure", 3: "inconclusive", 4: "guest",
    64: "usage", 70: "bug", 130: "interrupted",
}  # fmt: skip
TALLY: Counter[str] = Counter()


def record(
    returncode: int | None, said: str, clear: bool, *, regression: bool = False,
    left: int = 0, lost: int = 0,
) -> None:  # fmt: skip
    """Count one case. ``regression`` marks the one kind of case where exit 1 is right."""
    TALLY["tried"] += 1
    if returncode is not None and returncode < 0:
        TALLY["killed on purpose"] += 1  # the case's own SIGKILL: nothing to say, no code
    elif returncode is not None:
        TALLY[f"exit {returncode} ({CLASSES.get(returncode, '?')})"] += 1
        TALLY["crash as 1"] += returncode == 1 and not regression
    TALLY["traceback"] += "Traceback" in said
    TALLY["clear"] += clear and "Traceback" not in said
    TALLY["left behind"] += left
    TALLY["runs lost"] += lost


def summary() -> str:
    classes = ", ".join(
        f"{k} {v}" for k, v in sorted(TALLY.items()) if k.startswith(("exit ", "killed"))
    )
    return (
        f"fault cases: {TALLY['tried']} tried, {TALLY['clear']} clear errors,"
        f" {TALLY['traceback']} tracebacks, {TALLY['crash as 1']} crashes as exit 1,"
        f" {TALLY['left behind']} processes left behind, {TALLY['runs lost']} completed runs"
        f" lost; by class: {classes}"
    )


def processes_of(marker: str | Path) -> dict[int, str]:
    """Live processes that name ``marker`` on their command line or work in it: pid ->
    command line. Zombies are left out (they hold nothing but a table entry)."""
    marker = str(marker)
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker in cmd or cwd.startswith(marker)):
            found[int(entry.name)] = cmd.strip()
    return found
