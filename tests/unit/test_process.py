"""Children korch starts do not outlive it: process groups, parent-death signals, locks.

A kernel build is a tree of processes (make, sub-makes, compilers). Stopping only the top
one left the rest compiling in the object directory after korch was gone.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.errors import CommandError
from orchestrator.fsutil import locked

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux process semantics")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_a_timeout_stops_the_whole_tree() -> None:
    seen: list[int] = []
    with pytest.raises(CommandError, match="timed out"):
        process.run(
            ["sh", "-c", "sleep 60 & echo $!; sleep 60 & echo $!; wait"],
            timeout=1.5,
            on_line=lambda line: seen.append(int(line)),
        )
    assert len(seen) == 2 and gone_within(seen, 10)


def test_an_interruption_stops_the_whole_tree() -> None:
    seen: list[int] = []

    def interrupt(line: str) -> None:
        seen.append(int(line))
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or korch's SIGTERM handler) raises

    with pytest.raises(KeyboardInterrupt):
        process.run(["sh", "-c", "sleep 60 & echo $!; sleep 60 & echo $!; wait"], on_line=interrupt)
    assert gone_within(seen, 15)


def test_a_killed_korch_takes_make_and_its_jobs_along(tmp_path: Path) -> None:
    # korch killed with SIGKILL runs no cleanup: make gets SIGTERM from the kernel (parent
    # death signal) and passes it on to the jobs it started
    (tmp_path / "Makefile").write_text(
        "all: a b\na:\n\t@sh -c 'echo $$$$ >> pids; exec sleep 60'\n"
        "b:\n\t@sh -c 'echo $$$$ >> pids; exec sleep 60'\n"
    )
    script = tmp_path / "korch_like.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from orchestrator import process
            process.run(["make", "-s", "-j2", "-C", {str(tmp_path)!r}])
            """
        )
    )
    child = subprocess.Popen([sys.executable, str(script)])
    pids_file = tmp_path / "pids"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pids_file.exists() and len(pids_file.read_text().split()) == 2:
            break
        time.sleep(0.05)
    jobs = [int(p) for p in pids_file.read_text().split()]
    assert all(alive(p) for p in jobs)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert gone_within(jobs, 15)


def test_a_spawned_child_dies_with_a_killed_korch(tmp_path: Path) -> None:
    # how QEMU is started: korch SIGKILLed runs no cleanup, the kernel kills the child
    script = tmp_path / "korch_like.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from orchestrator import process
            proc = process.spawn(["sh", "-c", "echo $$; exec sleep 60"], output=Path({str(tmp_path / "out")!r}))
            time.sleep(60)
            """
        )
    )
    child = subprocess.Popen([sys.executable, str(script)])
    out = tmp_path / "out"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
        time.sleep(0.05)
    (pid,) = [int(p) for p in out.read_text().split()]
    assert alive(pid)
    assert os.getsid(pid) == pid  # a session of its own: Ctrl-C on korch's terminal is korch's
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert gone_within([pid], 15)


def test_a_lock_given_to_a_child_is_held_until_the_child_is_gone(tmp_path: Path) -> None:
    lock = tmp_path / "tree.lock"
    with locked(lock) as fd:
        child = subprocess.Popen(["sleep", "30"], pass_fds=(fd,), start_new_session=True)
    try:
        # korch's block is over; its orphan still holds the tree
        with open(lock, "a") as fh, pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        child.kill()
        child.wait()
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_waiting_for_a_lock_is_said(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "tree" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a');"
            " fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.5)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with locked(lock):
        pass
    holder.wait()
    assert f"waiting for another korch that is using {lock.parent}" in capfd.readouterr().err
    os.remove(lock)
