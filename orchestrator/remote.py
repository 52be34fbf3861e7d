"""SSH into a guest with fabric: wait for the server, run commands with timeouts, copy files.

The client trusts exactly one host key, the one baked into the guest image, and logs in with
the image's client key; nothing from the user's ``~/.ssh`` (config, agent, keys, known_hosts)
takes part, so a run does not depend on the machine it happens on.

Every error carries the guest console's tail, because "connection closed" alone rarely says
why: the kernel's last lines usually do.
"""

from __future__ import annotations

import base64
import errno
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import fabric
import invoke.exceptions
import paramiko

from .errors import RemoteCommandError, RemoteError, SSHAuthError, SSHRefused, SSHTimeout

# paramiko's transport thread logs what it caught, with its traceback, at ERROR ("Exception
# (client): Error reading SSH protocol banner" when a guest is slow to answer). korch reports
# every SSH failure itself, as an error naming the guest; without a handler of its own,
# Python's last-resort handler would print paramiko's traceback on korch's stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Each connection attempt is bounded so a guest that accepts TCP but never sends a banner
# (QEMU's user network accepts before the guest listens) cannot eat the whole boot deadline.
ATTEMPT_TIMEOUT_S = 10.0
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 1.0
TAIL_LINES = 40


def _no_console() -> str:
    return ""


@dataclass(frozen=True)
class RunResult:
    """A command that ran in the guest."""

    command: str
    status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status == 0


def pinned_host_keys(host: str, port: int, host_public_key: str) -> paramiko.HostKeys:
    """A known-hosts table holding only ``host_public_key`` for ``host:port``."""
    parts = host_public_key.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {host_public_key!r}")
    key = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    keys = paramiko.HostKeys()
    # paramiko looks non-default ports up as "[host]:port", as OpenSSH's known_hosts does
    keys.add(f"[{host}]:{port}" if port != 22 else host, parts[0], key)
    return keys


def _auth_unanswered(exc: paramiko.AuthenticationException) -> bool:
    """Whether paramiko's authentication error means no answer, not a rejection: the
    server did not answer within the attempt ("Authentication timeout.", a guest on a loaded
    host checks a key slowly) or closed the connection first ("transport shut down or saw
    EOF"). Either is worth another attempt until the deadline."""
    text = str(exc)
    return text.startswith("Authentication timeout") or "transport shut down or saw EOF" in text


class Remote:
    """An SSH session with one guest, reached through QEMU's forwarded port.

    ``console_tail`` returns the last lines of the guest's serial console; it is called only
    when an error is raised, to put the guest's side of the story into the message.
    """

    def __init__(
        self,
        port: int,
        *,
        key_filename: Path,
        host_public_key: str,
        user: str = "root",
        host: str = "127.0.0.1",
        console_tail: Callable[[], str] = _no_console,
        console_log: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key_filename = key_filename
        self.host_public_key = host_public_key
        self._console_tail = console_tail
        self._console_log = str(console_log) if console_log else None
        self._conn: fabric.Connection | None = None
        self._pkey: paramiko.PKey | None = None

    # -- connecting -----------------------------------------------------------------------

    def _client_key(self) -> paramiko.PKey:
        """The login key, read once: a key file that cannot be read is an error at once,
        not a minute of failed logins (paramiko reports it like a network failure)."""
        if self._pkey is None:
            try:
                self._pkey = paramiko.PKey.from_path(self.key_filename)
            except (OSError, ValueError, paramiko.SSHException) as exc:
                raise self._error(
                    SSHAuthError,
                    f"cannot use the client key {self.key_filename}: {exc}",
                    hint="rebuild the image (delete its cache directory); the key must be an"
                    " unencrypted OpenSSH or PEM private key",
                ) from exc
        return self._pkey

    def _new_connection(self, timeout: float) -> fabric.Connection:
        # An explicit empty SSHConfig and lazy=True keep ~/.ssh/config and fabric's own
        # config files out of it.
        config = fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig())
        conn = fabric.Connection(
            self.host,
            user=self.user,
            port=self.port,
            config=config,
            connect_kwargs={
                "pkey": self._client_key(),
                "look_for_keys": False,
                "allow_agent": False,
                "timeout": timeout,
                "banner_timeout": timeout,
                "auth_timeout": timeout,
            },
        )
        # fabric installs AutoAddPolicy; a key we do not know must fail the login instead
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = pinned_host_keys(self.host, self.port, self.host_public_key)
        for name in pinned:
            for ktype, key in pinned[name].items():
                conn.client.get_host_keys().add(name, ktype, key)
        return conn

    def connect(self, deadline: float, *, poll: Callable[[], None] | None = None) -> float:
        """Log in, retrying with backoff until ``deadline`` (a ``time.monotonic()`` value).

        ``poll`` is called between attempts and may raise to stop waiting (the guest died).
        Returns the seconds spent. A rejected key or an unknown host key fails at once
        (:class:`SSHAuthError`); at the deadline the last failure decides between
        :class:`SSHRefused` (nothing listening) and :class:`SSHTimeout` (no usable answer).
        """
        start = time.monotonic()
        delay = BACKOFF_START_S
        last: BaseException | None = None
        refused = False
        attempts = 0
        while True:
            if poll is not None:
                poll()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempts += 1
            conn = self._new_connection(min(ATTEMPT_TIMEOUT_S, max(remaining, 0.5)))
            try:
                conn.open()
            except paramiko.BadHostKeyException as exc:
                conn.close()
                raise self._error(
                    SSHAuthError,
                    f"the guest on port {self.port} showed host key "
                    f"{exc.key.get_name()} {exc.key.get_base64()[:16]}..., not the image's",
                    hint="another guest or program holds the port; retry the boot",
                ) from exc
            except paramiko.AuthenticationException as exc:
                conn.close()
                if not _auth_unanswered(exc):
                    raise self._error(
                        SSHAuthError,
                        f"the guest's SSH server rejected the image's key {self.key_filename} "
                        f"for user {self.user}: {exc}",
                        hint="rebuild the image (delete its cache directory); check the"
                        " recipe's authorized_keys path and its modes",
                    ) from exc
                last, refused = exc, False
            except paramiko.SSHException as exc:
                conn.close()
                if "known_hosts" in str(exc):
                    raise self._error(
                        SSHAuthError,
                        f"the guest on port {self.port} offered a host key type the image "
                        f"did not pin: {exc}",
                    ) from exc
                last, refused = exc, False
            except (OSError, EOFError) as exc:
                conn.close()
                last, refused = exc, _is_refused(exc)
            else:
                self._conn = conn
                return time.monotonic() - start
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, BACKOFF_MAX_S)
        waited = time.monotonic() - start
        if refused:
            raise self._error(
                SSHRefused,
                f"connection to {self.host}:{self.port} refused for {waited:.1f} s "
                f"({attempts} attempts)",
                hint="QEMU is not listening on the forwarded port: did it exit?",
            ) from last
        raise self._error(
            SSHTimeout,
            f"no SSH login to {self.host}:{self.port} within {waited:.1f} s "
            f"({attempts} attempts; last: {last!r})",
            hint="the guest did not start its SSH server; the console shows how far it got",
        ) from last

    @property
    def connection(self) -> fabric.Connection:
        """The open fabric connection (after :meth:`connect`)."""
        if self._conn is None:
            raise RuntimeError("Remote.connect() has not succeeded yet")
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def close(self) -> None:
        """Close the SSH connection, if any."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- using ----------------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        echo: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``command`` through the guest's shell and return its :class:`RunResult`.

        ``timeout`` bounds the command (:class:`SSHTimeout` past it). With ``check`` a non-zero
        status raises :class:`RemoteCommandError`. ``echo`` streams output to this process's
        stdout and stderr as it arrives.
        """
        start = time.monotonic()
        try:
            result = self.connection.run(
                command,
                hide=not echo,
                warn=True,
                # never read korch's stdin: under pytest or CI it is not a terminal
                in_stream=False,
                timeout=math.ceil(timeout) if timeout else None,
                env=dict(env or {}),
            )
        except invoke.exceptions.CommandTimedOut as exc:
            raise self._timed_out(command, timeout) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._error(
                RemoteError, f"SSH connection lost while running: {command}: {exc!r}"
            ) from exc
        run = RunResult(
            command, result.exited, result.stdout, result.stderr, time.monotonic() - start
        )
        # invoke calls it a timeout only once its timer thread has finished killing the
        # command; under load the killed command (no exit status: -1) can return first
        if timeout and run.status == -1 and run.duration_s >= math.ceil(timeout):
            raise self._timed_out(command, timeout)
        if run.status == -1:
            # the session closed without an exit status: the SSH server went away (the guest
            # powered off or ran out of memory); no status of the command to pass on
            raise self._error(
                RemoteError,
                f"the guest's SSH session ended without an exit status while running: {command}"
                " (the guest powered off, or its SSH server died, e.g. out of memory)",
                hint="the console below shows what the guest said last",
            )
        if check and not run.ok:
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-TAIL_LINES:])
            raise RemoteCommandError(
                f"guest command exited with {run.status}: {command}",
                command=command,
                status=run.status,
                output_tail=tail,
                console_tail=self._console_tail(),
                console_log=self._console_log,
            )
        return run

    def put(self, local: Path | str, remote: str) -> None:
        """Copy the host file ``local`` to ``remote`` in the guest (SFTP)."""
        try:
            self.connection.put(str(local), remote)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._error(
                RemoteError, f"copying {local} to the guest's {remote} failed: {exc!r}"
            ) from exc

    def get(self, remote: str, local: Path | str) -> None:
        """Copy the guest file ``remote`` to ``local`` on the host (SFTP)."""
        try:
            self.connection.get(remote, str(local))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._error(
                RemoteError, f"copying the guest's {remote} to {local} failed: {exc!r}"
            ) from exc

    def shell(self) -> int:
        """An interactive shell on this terminal; returns the session's exit status."""
        try:
            result = self.connection.shell(in_stream=sys.stdin)
        except invoke.exceptions.UnexpectedExit as exc:
            # fabric raises for a non-zero status despite documenting warn=True for shell()
            return int(exc.result.exited)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._error(RemoteError, f"interactive session failed: {exc!r}") from exc
        return int(result.exited)

    def poweroff(self) -> None:
        """Ask the guest to power off now, without waiting for an answer.

        ``poweroff -f`` never returns (the kernel stops), so the command is sent on a bare
        channel and not awaited; the caller waits for QEMU to exit.
        """
        if not self.connected:
            return
        transport = self.connection.transport
        if transport is None:
            return
        try:
            channel = transport.open_session(timeout=5)
            channel.exec_command("poweroff -f")
        except (paramiko.SSHException, OSError, EOFError):
            pass  # the guest may already be going down; QEMU's exit is what counts

    # -- errors ---------------------------------------------------------------------------

    def _timed_out(self, command: str, timeout: float | None) -> RemoteError:
        return self._error(
            SSHTimeout,
            f"guest command timed out after {math.ceil(timeout or 0)} s: {command}",
            hint="the command hung or the guest is too slow (TCG); raise the timeout",
        )

    def _error(
        self, cls: type[RemoteError], message: str, *, hint: str | None = None
    ) -> RemoteError:
        return cls(
            message, console_tail=self._console_tail(), console_log=self._console_log, hint=hint
        )


def _is_refused(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionRefusedError):
        return True
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in exc.errors.values())
    return isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
