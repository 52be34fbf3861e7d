"""The one place where korch starts external commands.

Commands are argv lists (never a shell string). Output can be streamed line by line
to a callback and teed to a log file; failures raise :class:`CommandError` with the
output's tail so that the user sees why without opening the log.
"""

from __future__ import annotations

import os
import shlex
import shutil
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
) -> Result:
    """Run ``argv`` and return its :class:`Result`.

    ``env`` adds to (not replaces) the current environment. With ``log`` the combined
    output is written there as it arrives; ``on_line`` sees every line. ``stdout_file``
    sends standard output to a file (binary, untouched) and keeps only standard error.
    ``what`` names the step in the error message (default: the command line).
    Only the last ``keep`` lines are kept in memory.
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
                start_new_session=False,
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
                proc.kill()

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
            proc.kill()
            proc.wait()
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
