"""What a workload driver needs from a guest: run a shell command, copy a file in.

The SSH connection (fabric) and the host-side fake both satisfy :class:`Remote`, so a
driver is tested for real on the host and used unchanged against a guest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Remote(Protocol):
    """A machine that runs workload commands.

    ``run`` executes ``cmd`` with the machine's ``sh`` (busybox ash in the guest) and returns
    ``(exit_code, stdout, stderr)`` whatever the exit code; it raises
    :class:`~orchestrator.errors.SSHTimeout` when the command outlives ``timeout`` seconds
    and another :class:`~orchestrator.errors.InfraError` when the machine cannot be reached.
    ``put`` copies the host file ``local`` to the path ``remote`` on the machine (the
    directory must exist).
    """

    def run(self, cmd: str, timeout: float) -> tuple[int, str, str]: ...

    def put(self, local: Path, remote: str) -> None: ...


class _RunResult(Protocol):
    status: int
    stdout: str
    stderr: str


class _SSHRemote(Protocol):
    def run(self, command: str, *, timeout: float | None = ..., check: bool = ...) -> Any: ...

    def put(self, local: Path | str, remote: str) -> None: ...


class RemoteAdapter:
    """Presents :class:`orchestrator.remote.Remote` (keyword ``timeout``, a ``RunResult``,
    raising on a non-zero status unless told not to) as a workload :class:`Remote`."""

    def __init__(self, remote: _SSHRemote) -> None:
        self.remote = remote

    def run(self, cmd: str, timeout: float) -> tuple[int, str, str]:
        """Run ``cmd`` in the guest; the exit status is returned, not raised."""
        result: _RunResult = self.remote.run(cmd, timeout=timeout, check=False)
        return result.status, result.stdout, result.stderr

    def put(self, local: Path, remote: str) -> None:
        """Copy the host file ``local`` to ``remote`` in the guest."""
        self.remote.put(local, remote)
