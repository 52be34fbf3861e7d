"""A :class:`~orchestrator.workloads.protocol.Remote` that is the host itself.

It runs commands with a local shell, so workload drivers are tested for real (the host has
``/proc`` too) without a guest. ``shell`` picks the interpreter: ``("busybox", "sh", "-c")``
runs scripts with the same ash the guest has.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import process
from ..errors import CommandError, SSHTimeout


class FakeRemote:
    """Runs ``cmd`` as ``[*shell, cmd]`` on the host; ``put`` copies within the host."""

    def __init__(self, shell: Sequence[str] = ("sh", "-c")) -> None:
        self.shell = tuple(shell)
        self.commands: list[str] = []

    def run(self, cmd: str, timeout: float) -> tuple[int, str, str]:
        """Run ``cmd`` and return ``(exit_code, stdout, stderr)``; SSHTimeout past ``timeout``."""
        self.commands.append(cmd)
        with tempfile.TemporaryDirectory(prefix="korch-fake-remote.") as tmp:
            out = Path(tmp) / "stdout"
            try:
                result = process.run(
                    [*self.shell, cmd],
                    timeout=timeout,
                    check=False,
                    stdout_file=out,
                    what="fake remote command",
                )
            except CommandError as exc:
                # process.run reports a timeout as a CommandError without an exit code.
                if exc.returncode is None:
                    raise SSHTimeout(
                        f"command did not finish within {timeout:g} s: {cmd[:80]!r}"
                    ) from exc
                raise
            stdout = out.read_text(encoding="utf-8", errors="replace")
        return result.returncode, stdout, result.output

    def put(self, local: Path, remote: str) -> None:
        """Copy ``local`` to the host path ``remote``, keeping its mode."""
        shutil.copy(local, remote)
