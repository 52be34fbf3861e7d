"""The adapter that lets orchestrator.remote.Remote drive workloads."""

from __future__ import annotations

from pathlib import Path

from orchestrator.remote import RunResult
from orchestrator.workloads import Remote, RemoteAdapter


class SSHLike:
    """Has the call shape of orchestrator.remote.Remote, without a guest."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def run(self, command: str, *, timeout: float | None = None, check: bool = True) -> RunResult:
        self.calls.append(("run", command, timeout, check))
        return RunResult(command, 3, "out", "err", 0.1)

    def put(self, local: Path | str, remote: str) -> None:
        self.calls.append(("put", local, remote))


def test_adapter_returns_status_instead_of_raising() -> None:
    ssh = SSHLike()
    remote: Remote = RemoteAdapter(ssh)
    assert remote.run("false", timeout=5) == (3, "out", "err")
    remote.put(Path("/a"), "/b")
    assert ssh.calls == [("run", "false", 5, False), ("put", Path("/a"), "/b")]
