"""One exception hierarchy for korch, mapped to the exit codes that CI relies on.

Exit codes (see the README): 0 no gated regression, 1 regression gate tripped,
2 infrastructure failure (build, boot, ssh; safe to retry), 3 inconclusive,
4 guest panic or kernel splat, 64 usage or configuration error, 70 internal error (a bug in
korch: never 1, which CI reads as a regression), 130 interrupted.

Every error carries a message that says what failed, where, and what to do.
The CLI catches :class:`KorchError` in one place and prints ``str(error)``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_INFRA = 2
EXIT_INCONCLUSIVE = 3
EXIT_GUEST = 4
EXIT_USAGE = 64
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: korch itself failed
EXIT_INTERRUPTED = 130


class KorchError(Exception):
    """Base of every error korch raises on purpose."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UserError(KorchError):
    """Bad input: an experiment file, a patch, a fragment, a command line. Not worth a retry."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """An experiment file that does not match the schema; lists every problem found."""

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        self.problems = problems
        head = (
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} problems:\n  " + ("\n  ".join(problems))
        )
        super().__init__(head, hint=hint)


class ApplyError(UserError):
    """A patch of a series does not apply to the kernel source."""

    def __init__(
        self,
        message: str,
        *,
        patch: str,
        subject: str,
        file: str | None = None,
        hunk: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.patch = patch
        self.subject = subject
        self.file = file
        self.hunk = hunk


class KconfigError(UserError):
    """A fragment asked for symbols that the final .config does not hold, or variants differ."""

    def __init__(self, message: str, *, symbols: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.symbols = symbols


class InfraError(KorchError):
    """Something outside the user's input failed (a download, a tool, a build). Safe to retry."""

    exit_code = EXIT_INFRA


class CommandError(InfraError):
    """An external command failed or timed out; carries the argv and the output's tail."""

    def __init__(
        self,
        message: str,
        *,
        argv: list[str],
        returncode: int | None,
        tail: str,
        log: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        self.log = log

    def __str__(self) -> str:
        text = self.message
        if self.tail.strip():
            text += "\n" + "\n".join("  | " + line for line in self.tail.rstrip().splitlines())
        if self.log:
            text += f"\n  full output: {self.log}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class BuildError(CommandError):
    """The kernel build failed: the message names the variant, the compiler errors and the log."""


class ToolMissing(InfraError):
    """A host tool korch needs is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        super().__init__(
            f"'{tool}' is not installed or not on PATH",
            hint=f"install it: apt-get install {package} (the README lists every package)",
        )
        self.tool = tool
        self.package = package


class GuestError(KorchError):
    """The guest kernel panicked or printed a splat (Oops, BUG, WARNING, RCU stall).

    ``kind`` names the first splat found, ``line`` is the console line that showed it and
    ``console_tail`` the last lines of the serial console, so the trace is in the message.
    """

    exit_code = EXIT_GUEST

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        line: str,
        console_tail: str,
        console_log: str | None = None,
        hint: str | None = None,
        host_starved: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.line = line
        # an RCU stall whose report shows the kernel kept from running (the line saying so)
        self.host_starved = host_starved
        self.console_tail = console_tail
        self.console_log = console_log

    def __str__(self) -> str:
        return _with_console(self.message, self.console_tail, self.console_log, self.hint)


class VMError(InfraError):
    """QEMU could not start a guest, or the guest stopped before it was usable.

    Carries the serial console's tail (the kernel's last words) and QEMU's own output.
    """

    def __init__(
        self,
        message: str,
        *,
        console_tail: str = "",
        console_log: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.console_tail = console_tail
        self.console_log = console_log

    def __str__(self) -> str:
        return _with_console(self.message, self.console_tail, self.console_log, self.hint)


class BootTimeout(VMError):
    """The guest did not reach its SSH server before the boot deadline."""


class RemoteError(VMError):
    """Talking to the guest over SSH failed; the console's tail tells what the guest saw."""


class SSHAuthError(RemoteError):
    """The guest's SSH server refused the image's client key, or showed another host key."""


class SSHTimeout(RemoteError):
    """The SSH server did not answer in time (no banner, no handshake, a command ran too long)."""


class SSHRefused(RemoteError):
    """Nothing accepted the TCP connection on the forwarded port (QEMU gone or port wrong)."""


class RemoteCommandError(RemoteError):
    """A command run in the guest exited with a non-zero status."""

    def __init__(
        self,
        message: str,
        *,
        command: str,
        status: int,
        output_tail: str,
        console_tail: str = "",
        console_log: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, console_tail=console_tail, console_log=console_log, hint=hint)
        self.command = command
        # not ``exit_code``: that name is korch's own exit code for this error
        self.status = status
        self.output_tail = output_tail

    def __str__(self) -> str:
        text = self.message
        if self.output_tail.strip():
            text += "\n  output:\n" + _indent(self.output_tail)
        return _with_console(text, self.console_tail, self.console_log, self.hint)


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.rstrip().splitlines())


def _with_console(message: str, tail: str, log: str | None, hint: str | None) -> str:
    text = message
    if tail.strip():
        text += "\n  console (last lines):\n" + _indent(tail)
    if log:
        text += f"\n  full console: {log}"
    if hint:
        text += f"\n  hint: {hint}"
    return text


class WorkloadError(InfraError):
    """A benchmark program in the guest misbehaved: bad output, an error exit, a broken set-up."""


class Interrupted(KorchError):
    """SIGTERM or Ctrl-C: korch stopped what it was doing and kept what was complete."""

    exit_code = EXIT_INTERRUPTED
