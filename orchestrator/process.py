"""The one place where korch starts external commands.

Commands are argv lists (never a shell string). Output can be streamed line by line
to a callback and teed to a log file; failures raise :class:`CommandError` with the
output's tail so that the user sees why without opening the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError, ToolMissing

TAIL_LINES = 40


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    argv: list[str]
    returncode: int
    output: str
    duration_s: float

    @property
    def tail(self) -> str:
        return "\n".join(self.output.splitlines()[-TAIL_LINES:])


_PR_SET_PDEATHSIG = 1
# resolved in the parent: the forked child must not load libraries before exec
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _terminate_with_parent(parent: int, sig: int = signal.SIGTERM) -> Callable[[], None]:
    def set_pdeathsig() -> None:
        _PRCTL(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would tell us
            os._exit(1)

    return set_pdeathsig


def spawn(
    argv: Sequence[str], *, output: Path, death_signal: int = signal.SIGKILL
) -> subprocess.Popen[bytes]:
    """Start a long-lived child (a QEMU guest) and return at once; its output is appended
    to ``output``.

    Like :func:`run`'s commands it gets a session of its own (Ctrl-C on the terminal is
    korch's to handle, not the child's) and dies with korch: ``death_signal`` when korch
    dies, even by SIGKILL. The caller owns the process: it waits for it and stops it.
    """
    with open(output, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminate_with_parent(os.getpid(), death_signal),
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Stop a command and everything it started: SIGTERM to its process group (make
    removes its half-written targets), SIGKILL to what is left after ``grace_s``."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    # the group outlives its leader while children finish: make sure nothing is left
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def require(tool: str, package: str) -> str:
    """Return the full path of ``tool`` or raise :class:`ToolMissing` naming the package."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(tool, package)
    return path


def display(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """A command line a person can paste into a shell to do the same thing."""
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(str(cwd))} &&")
    if env:
        parts.extend(f"{k}={shlex.quote(v)}" for k, v in env.items())
    parts.append(shlex.join(argv))
    return " ".join(parts)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    log: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    input: bytes | None = None,
    stdout_file: Path | None = None,
    what: str | None = None,
    keep: int = 2000,
    pass_fds: Sequence[int] = (),
) -> Result:
    """Run ``argv`` and return its :class:`Result`.

    ``env`` adds to (not replaces) the current environment. With ``log`` the combined
    output is written there as it arrives; ``on_line`` sees every line. ``stdout_file``
    sends standard output to a file (binary, untouched) and keeps only standard error.
    ``what`` names the step in the error message (default: the command line).
    Only the last ``keep`` lines are kept in memory. ``pass_fds`` are inherited by the
    command (a lock it should hold as long as it or its children live).

    The command runs in a process group of its own, with ``PR_SET_PDEATHSIG`` = SIGTERM:
    when korch is interrupted (Ctrl-C, SIGTERM, a timeout) the whole group is stopped,
    sub-makes and compilers included, and when korch is killed outright the command gets
    SIGTERM, which make passes on to the jobs it started.
    """
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    label = what or shlex.join(argv)
    start = time.monotonic()
    lines: deque[str] = deque(maxlen=keep)
    log_fh = open(log, "a", encoding="utf-8", errors="replace") if log else None  # noqa: SIM115
    out_fh = open(stdout_file, "wb") if stdout_file else None  # noqa: SIM115
    try:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=out_fh if out_fh else subprocess.PIPE,
                stderr=subprocess.PIPE if out_fh else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_terminate_with_parent(os.getpid()),
                pass_fds=tuple(pass_fds),
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"{label}: cannot start '{argv[0]}': {exc.strerror}",
                argv=argv,
                returncode=None,
                tail="",
                hint="install the tool (see README, 'Set up') or fix the path",
            ) from exc
        if input is not None:
            assert proc.stdin is not None

            def feed() -> None:
                assert proc.stdin is not None
                try:
                    proc.stdin.write(input)
                finally:
                    proc.stdin.close()

            threading.Thread(target=feed, daemon=True).start()

        timed_out = threading.Event()
        timer = None
        if timeout is not None:

            def kill() -> None:
                timed_out.set()
                _signal_group(proc, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
        stream = proc.stderr if out_fh else proc.stdout
        assert stream is not None
        try:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                lines.append(line)
                if log_fh:
                    log_fh.write(line + "\n")
                if on_line:
                    on_line(line)
            returncode = proc.wait()
        except BaseException:
            stop_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
    finally:
        if log_fh:
            log_fh.close()
        if out_fh:
            out_fh.close()
    result = Result(argv, returncode, "\n".join(lines), time.monotonic() - start)
    if timed_out.is_set():
        raise CommandError(
            f"{label}: timed out after {timeout:.0f} s",
            argv=argv,
            returncode=None,
            tail=result.tail,
            log=str(log) if log else None,
        )
    if check and returncode != 0:
        raise CommandError(
            f"{label}: exited with {returncode}",
            argv=argv,
            returncode=returncode,
            tail=result.tail,
            log=str(log) if log else None,
        )
    return result
