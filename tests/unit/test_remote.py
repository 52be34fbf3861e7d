"""remote.py against an in-process SSH server (paramiko), and against nothing at all."""

from __future__ import annotations

import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator import remote
from orchestrator.errors import (
    EXIT_INFRA,
    RemoteCommandError,
    RemoteError,
    SSHAuthError,
    SSHRefused,
    SSHTimeout,
)

CONSOLE = "Run /init as init process\nkorch-guest: ready"


def _keypair(path: Path) -> tuple[paramiko.PKey, str]:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    pkey = paramiko.Ed25519Key.from_private_key_file(str(path))
    return pkey, f"{pkey.get_name()} {pkey.get_base64()}"


# seconds the server takes over its next key checks, one entry a check (a slow guest)
AUTH_DELAYS: list[float] = []


class _Server(paramiko.ServerInterface):
    """Accepts one client key; runs a toy shell: echo, exit N, sleep N."""

    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if AUTH_DELAYS:
            time.sleep(AUTH_DELAYS.pop(0))
        if username == "root" and key == self.allowed:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    def _exec(self, channel: paramiko.Channel, command: str) -> None:
        # paramiko answers the exec request only after this method's caller returns; a
        # channel closed before that answer makes the client see "Channel closed"
        time.sleep(0.05)
        words = shlex.split(command)
        status = 0
        if words[0] == "echo":
            channel.sendall((" ".join(words[1:]) + "\n").encode())
        elif words[0] == "exit":
            channel.sendall_stderr(b"failing on purpose\n")
            status = int(words[1])
        elif words[0] == "sleep":
            time.sleep(float(words[1]))
        elif words[0] == "poweroff":  # the server goes away mid-command: no exit status
            channel.sendall(b"going down\n")
            channel.close()
            return
        channel.send_exit_status(status)
        channel.close()


@dataclass
class FakeGuest:
    port: int
    host_public_key: str
    client_key: Path
    wrong_client_key: Path


@pytest.fixture
def fake_guest(tmp_path: Path) -> Iterator[FakeGuest]:
    host_key, host_pub = _keypair(tmp_path / "host")
    client_key, _ = _keypair(tmp_path / "client")
    _keypair(tmp_path / "intruder")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            t = paramiko.Transport(sock)
            t.add_server_key(host_key)
            t.start_server(server=_Server(client_key))
            transports.append(t)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield FakeGuest(listener.getsockname()[1], host_pub, tmp_path / "client", tmp_path / "intruder")
    stop.set()
    thread.join()
    listener.close()
    for t in transports:
        t.close()


def _remote(guest: FakeGuest, **kw: object) -> remote.Remote:
    args: dict[str, object] = {
        "key_filename": guest.client_key,
        "host_public_key": guest.host_public_key,
        "console_tail": lambda: CONSOLE,
    }
    args.update(kw)
    return remote.Remote(guest.port, **args)  # type: ignore[arg-type]


def test_run_and_exit_status(fake_guest: FakeGuest) -> None:
    r = _remote(fake_guest)
    assert r.connect(time.monotonic() + 10) < 10
    try:
        result = r.run("echo hello guest")
        assert result == remote.RunResult(
            "echo hello guest", 0, "hello guest\n", "", result.duration_s
        )
        failed = r.run("exit 3", check=False)
        assert (failed.status, failed.ok, failed.stderr) == (3, False, "failing on purpose\n")
        with pytest.raises(RemoteCommandError) as info:
            r.run("exit 5")
        assert info.value.status == 5
        assert info.value.exit_code == EXIT_INFRA
        assert "failing on purpose" in str(info.value)
        assert "korch-guest: ready" in str(info.value)  # the console tail
    finally:
        r.close()


def test_a_session_that_ends_without_a_status_is_an_error(fake_guest: FakeGuest) -> None:
    # the guest powered off, or ran out of memory and lost its SSH server: 'korch boot --
    # CMD' exited 255 with no word of why
    r = _remote(fake_guest)
    r.connect(time.monotonic() + 10)
    try:
        with pytest.raises(RemoteError, match="ended without an exit status") as info:
            r.run("poweroff", check=False)
        assert "korch-guest: ready" in str(info.value)  # the console tail says why
        assert info.value.exit_code == EXIT_INFRA
    finally:
        r.close()


def test_command_timeout(fake_guest: FakeGuest) -> None:
    r = _remote(fake_guest)
    r.connect(time.monotonic() + 10)
    try:
        start = time.monotonic()
        with pytest.raises(SSHTimeout, match="timed out after 1 s"):
            r.run("sleep 5", timeout=1)
        assert time.monotonic() - start < 4
    finally:
        r.close()


def test_wrong_client_key_is_an_auth_error(fake_guest: FakeGuest) -> None:
    r = _remote(fake_guest, key_filename=fake_guest.wrong_client_key)
    start = time.monotonic()
    with pytest.raises(SSHAuthError, match="rejected the image's key") as info:
        r.connect(time.monotonic() + 30)
    assert time.monotonic() - start < 10  # no retrying until the deadline
    assert info.value.console_tail == CONSOLE


def test_a_login_that_times_out_is_tried_again(
    fake_guest: FakeGuest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a guest on a loaded host can take longer than one attempt to check the key (seen: a
    # 1-vCPU TCG guest beside two other guests and two busy loops); paramiko then says
    # "Authentication timeout.", which is no rejection: try again until the deadline
    monkeypatch.setattr(remote, "ATTEMPT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sys.modules[__name__], "AUTH_DELAYS", [2.5])
    r = _remote(fake_guest)
    r.connect(time.monotonic() + 30)
    try:
        assert r.run("echo hello", timeout=10).stdout == "hello\n"
    finally:
        r.close()


def test_a_client_key_that_cannot_be_read_fails_at_once(
    fake_guest: FakeGuest, tmp_path: Path
) -> None:
    garbage = tmp_path / "client_key"
    garbage.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    r = _remote(fake_guest, key_filename=garbage)
    start = time.monotonic()
    with pytest.raises(SSHAuthError, match=f"cannot use the client key {garbage}"):
        r.connect(time.monotonic() + 30)
    assert time.monotonic() - start < 5  # not retried until the deadline


def test_unexpected_host_key_is_rejected(fake_guest: FakeGuest, tmp_path: Path) -> None:
    _, other_pub = _keypair(tmp_path / "other-host")
    r = _remote(fake_guest, host_public_key=other_pub)
    with pytest.raises(SSHAuthError, match="not the image's"):
        r.connect(time.monotonic() + 30)


def test_pinned_host_keys_use_the_bracketed_name() -> None:
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBcPU8hg9eZ1nQ7IkzNfzqRQthUG2UWrTcGFuEdbWBM"
    keys = remote.pinned_host_keys("127.0.0.1", 40022, pub)
    assert list(keys) == ["[127.0.0.1]:40022"]
    assert keys["[127.0.0.1]:40022"]["ssh-ed25519"].get_base64() == pub.split()[1]
    assert list(remote.pinned_host_keys("127.0.0.1", 22, pub)) == ["127.0.0.1"]


def test_refused_until_the_deadline(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, pub = _keypair(tmp_path / "host")
    r = remote.Remote(
        port, key_filename=tmp_path / "host", host_public_key=pub, console_tail=lambda: CONSOLE
    )
    start = time.monotonic()
    with pytest.raises(SSHRefused, match="refused") as info:
        r.connect(time.monotonic() + 1.0)
    assert 0.9 < time.monotonic() - start < 5
    assert "korch-guest: ready" in str(info.value)


def test_silent_server_times_out(tmp_path: Path) -> None:
    # QEMU's user network accepts the TCP connection before the guest's server exists
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        _, pub = _keypair(tmp_path / "host")
        r = remote.Remote(
            silent.getsockname()[1], key_filename=tmp_path / "host", host_public_key=pub
        )
        with pytest.raises(SSHTimeout, match="no SSH login"):
            r.connect(time.monotonic() + 1.5)


def test_poll_can_stop_the_wait(tmp_path: Path) -> None:
    _, pub = _keypair(tmp_path / "host")
    r = remote.Remote(1, key_filename=tmp_path / "host", host_public_key=pub)
    calls = []

    def poll() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RemoteError("QEMU exited")

    with pytest.raises(RemoteError, match="QEMU exited"):
        r.connect(time.monotonic() + 30, poll=poll)


def test_error_classes_are_distinct() -> None:
    classes = {SSHAuthError, SSHTimeout, SSHRefused}
    assert len(classes) == 3
    for cls in classes:
        assert issubclass(cls, RemoteError)
        assert not any(issubclass(cls, other) for other in classes - {cls})


def test_using_before_connecting_is_a_programming_error(tmp_path: Path) -> None:
    r = remote.Remote(1, key_filename=tmp_path / "k", host_public_key="ssh-ed25519 AAAA")
    with pytest.raises(RuntimeError):
        r.run("true")
    r.poweroff()  # harmless when not connected
    r.close()


def test_paramiko_tracebacks_stay_off_stderr() -> None:
    # paramiko's transport thread logs a failed banner read with its traceback; korch
    # reports the failure itself, so nothing of paramiko's may reach the user's terminal.
    # (A fresh interpreter: pytest's own log capture would hide the difference.)
    import subprocess
    import sys

    script = (
        "import logging{imp}\n"
        "try:\n    raise TimeoutError\n"
        "except TimeoutError:\n"
        "    logging.getLogger('paramiko.transport').exception('Error reading SSH protocol banner')\n"
    )

    def stderr(imp: str) -> str:
        res = subprocess.run(
            [sys.executable, "-c", script.format(imp=imp)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return res.stderr

    assert "Traceback" in stderr("")  # without korch, Python prints it
    assert stderr("\nimport orchestrator.remote") == ""
