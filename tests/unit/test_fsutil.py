"""Temporaries a korch killed outright leaves behind, and the sweep that removes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator import fsutil


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writer_leaves_a_temporary_that_the_next_korch_sweeps(tmp_path: Path) -> None:
    # a writer SIGKILLed between creating its temporary and renaming it
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from orchestrator import fsutil\n"
        "fsutil.os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"fsutil.atomic_write(Path({str(tmp_path / 'results.json')!r}), 'x' * 100)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".results.json.k")
    assert not (tmp_path / "results.json").exists()
    assert fsutil.sweep_stale(tmp_path) == left
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_keeps_what_live_korchs_and_others_own(tmp_path: Path) -> None:
    mine = fsutil.temp_dir(tmp_path, "build")
    dead = tmp_path / f".build.k{_dead_pid()}.abc123.tmp"
    dead.mkdir()
    (dead / "bzImage").write_bytes(b"half")
    index = tmp_path / f".tree.k{_dead_pid()}.abc123.tmp.index"
    index.write_text("")
    parent_owned = tmp_path / f".x.k{os.getppid()}.zz.tmp"  # a live process's
    parent_owned.write_text("")
    foreign = tmp_path / ".something-else.tmp"  # not named by korch
    foreign.write_text("")
    removed = fsutil.sweep_stale(tmp_path, tmp_path / "missing")
    assert sorted(removed) == sorted([dead, index])
    assert mine.is_dir() and parent_owned.exists() and foreign.exists()
