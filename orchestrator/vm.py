"""QEMU guests: command lines, the acceleration choice, console watching and lifecycle.

Command lines are built by small pure functions returning ``list[str]``, so tests compare
them with ``==`` and a run directory records exactly what was started. :class:`Guest` owns
one QEMU process: it picks a loopback port for SSH (retrying when another process takes it
first), follows the serial console for kernel splats, logs in over SSH and powers the guest
off on exit.

No QEMU outlives korch. Each one gets ``PR_SET_PDEATHSIG`` = SIGKILL (covers korch being
killed outright), sits in a registry that an ``atexit`` hook empties (covers exits that skip
context managers), runs in its own session (so a terminal's Ctrl-C reaches korch, which then
shuts the guest down in order, instead of killing QEMU under it), and SIGTERM is turned into
:class:`SystemExit` while guests run, so ``with Guest(...)`` blocks unwind normally.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from . import process
from .errors import (
    BootTimeout,
    GuestError,
    KorchError,
    RemoteCommandError,
    RemoteError,
    UserError,
    VMError,
)
from .fsutil import atomic_write, sha256_file
from .hostwatch import Hold, VcpuWatch
from .image import GuestImage, build_image
from .remote import Remote, RunResult

ACCELS = ("auto", "kvm", "tcg")
GUEST_SSH_PORT = 22
TAIL_LINES = 40
PORT_ATTEMPTS = 5
# QEMU creates the forwarding socket while starting up, well before the guest runs
FORWARD_SETUP_TIMEOUT_S = 15.0
POWEROFF_WAIT_S = 15.0
TERM_WAIT_S = 5.0
# after a splat, how long to keep reading so the error shows the trace, not just its first line
SPLAT_QUIET_S = 0.5
SPLAT_SETTLE_MAX_S = 3.0
HOSTFWD_FAILURE = "could not set up host forwarding rule"  # compared in lower case


@dataclass(frozen=True)
class VMConfig:
    """How to run a guest. ``accel`` is ``auto`` (probe KVM, else TCG), ``kvm`` or ``tcg``."""

    cpus: int = 4
    memory: str = "1G"
    accel: str = "auto"
    qemu: str = "qemu-system-x86_64"
    boot_timeout_s: float = 120.0
    probe_timeout_s: float = 20.0
    cmdline: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.accel not in ACCELS:
            problems.append(f"vm.accel must be one of {', '.join(ACCELS)}, not {self.accel!r}")
        if self.cpus < 1:
            problems.append(f"vm.cpus must be at least 1, not {self.cpus}")
        if not re.fullmatch(r"[1-9][0-9]*[MG]?", self.memory):
            problems.append(f"vm.memory must look like 512M or 1G, not {self.memory!r}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class AccelDecision:
    """The accelerator a guest uses and why (recorded in the run's env.json)."""

    accel: str  # "kvm" or "tcg"
    reason: str


# --- command lines ---------------------------------------------------------------------------


def _opt(value: Path | str) -> str:
    # QEMU option values use ',' as a separator; a literal comma is written twice
    return str(value).replace(",", ",,")


def kernel_args(kernel: Path) -> list[str]:
    """Boot this bzImage directly (no bootloader, no disk)."""
    return ["-kernel", str(kernel)]


def initrd_args(initrd: Path) -> list[str]:
    return ["-initrd", str(initrd)]


def kernel_cmdline(extra: Sequence[str] = ()) -> str:
    """The kernel command line: serial console, reboot at once on panic, no timer check.

    ``panic=-1`` plus QEMU's ``-no-reboot`` turns a panic into a prompt QEMU exit instead of
    a guest that sits dead until the boot deadline. ``no_timer_check`` skips the boot-time
    test of the IO-APIC timer, which counts timer interrupts over a few busy-waited
    milliseconds: under TCG on a loaded host the emulated timer misses that window and the
    kernel panics ("IO-APIC + timer doesn't work!", seen here with both cores busy),
    although the timer works. Virtual machines commonly boot with it.
    """
    return " ".join(["console=ttyS0", "panic=-1", "no_timer_check", *extra])


def append_args(cmdline: str) -> list[str]:
    return ["-append", cmdline]


def smp_args(cpus: int) -> list[str]:
    return ["-smp", str(cpus)]


def memory_args(memory: str) -> list[str]:
    return ["-m", memory]


def accel_args(accel: str) -> list[str]:
    """Accelerator and CPU model: the host's CPU under KVM, the richest emulated one under TCG."""
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        # one host thread per vCPU; without it TCG runs every vCPU on a single thread
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError(f"accel must be kvm or tcg here, not {accel!r}")


def netdev_args(host_port: int, guest_port: int = GUEST_SSH_PORT) -> list[str]:
    """User-mode network with the guest's SSH port forwarded from the host's loopback only."""
    return [
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]


def serial_args(console_log: Path) -> list[str]:
    """The serial console (the kernel's console=ttyS0) goes to a file."""
    return ["-serial", f"file:{_opt(console_log)}"]


def display_args() -> list[str]:
    """No window, no monitor, none of QEMU's default devices or config files."""
    return ["-display", "none", "-nodefaults", "-no-user-config"]


def reboot_args() -> list[str]:
    """A guest reboot (which panic=-1 requests) ends QEMU instead of booting again."""
    return ["-no-reboot"]


def qemu_argv(
    *,
    qemu: str,
    kernel: Path,
    initrd: Path,
    accel: str,
    cpus: int,
    memory: str,
    host_port: int,
    console_log: Path,
    cmdline: Sequence[str] = (),
) -> list[str]:
    """The whole QEMU command line for one guest."""
    return [
        qemu,
        # vCPU threads named "CPU <n>/TCG", so the host side can tell them apart (hostwatch)
        "-name",
        "korch,debug-threads=on",
        *display_args(),
        *accel_args(accel),
        *smp_args(cpus),
        *memory_args(memory),
        *kernel_args(kernel),
        *initrd_args(initrd),
        *append_args(kernel_cmdline(cmdline)),
        *netdev_args(host_port),
        *serial_args(console_log),
        *reboot_args(),
    ]


# --- console ---------------------------------------------------------------------------------

SEVERITY = {"panic": 5, "oops": 4, "bug": 3, "rcu-stall": 2, "warning": 1, "hung-task": 0}
KIND_TEXT = {
    "panic": "kernel panic",
    "oops": "kernel Oops",
    "bug": "kernel BUG",
    "rcu-stall": "RCU stall",
    "warning": "kernel WARNING",
    "hung-task": "hung task",
}
# printk prefixes: optional <level>, [ timestamp], and [ T123]/[ C1] with CONFIG_PRINTK_CALLER
_PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[TC]\d+\])?\s*")
_SPLATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"^Kernel panic - not syncing")),
    ("oops", re.compile(r"^(?:Oops\b|Internal error: Oops|general protection fault\b)")),
    ("bug", re.compile(r"^(?:(?:watchdog: )?BUG: |kernel BUG at )")),
    ("rcu-stall", re.compile(r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stall")),
    ("warning", re.compile(r"^WARNING: ")),
    ("hung-task", re.compile(r"^INFO: task \S+ blocked for more than \d+ seconds")),
)


# Lines of an RCU stall report that say RCU's own grace-period kthread did not get to run
# (Documentation/RCU/stallwarn.rst): every CPU had passed its quiescent state yet the grace
# period did not end, or the kthread's timer fired long after it was due. A guest's clock
# follows the host's, so a host that leaves the vCPUs unscheduled for longer than the stall
# timeout (21 s) produces exactly these: time jumps forward and the kthread looks starved.
_KTHREAD_KEPT_FROM_RUNNING = re.compile(
    r"All QSes seen|kthread timer wakeup didn't happen for \d+ jiffies"
)
# how far after a stall's first line its report may run (CPU lists, kthread lines, stacks)
STALL_REPORT_LINES = 80
# a vCPU the host held this long (about half the 21 s stall timeout), in the last
# HOST_HOLD_LOOKBACK_S before a stall was raised, puts the stall on the host
HOST_HOLD_S = 10.0
HOST_HOLD_LOOKBACK_S = 90.0


@dataclass(frozen=True)
class Splat:
    """A console line that shows the kernel in trouble."""

    kind: str  # a key of SEVERITY
    line: str
    lineno: int  # 1-based, in the console log


def kthread_kept_from_running(report: Iterable[str]) -> str | None:
    """The line of an RCU stall report (its first line, then what follows it) that shows the
    grace-period kthread kept from running, or None.

    Such a stall is what a guest shows when the host does not run its vCPUs for longer than
    the stall timeout (a busy host under TCG); a CPU looping in the kernel under test shows
    the CPU instead, with the kthread running. The kernel under test can also keep the
    kthread from running (a timer or scheduler bug), so this is a reason to boot once more,
    never to ignore the stall: a kernel that stalls by itself stalls again.
    """
    for line in report:
        text = _PREFIX.sub("", line.rstrip("\r\n"), count=1).strip()
        if detect_splat(line) not in (None, "rcu-stall"):
            break  # another kind of trouble: not a stall report any more
        if _KTHREAD_KEPT_FROM_RUNNING.search(text):
            return text
    return None


def detect_splat(line: str) -> str | None:
    """The splat kind a console line starts (panic, oops, bug, rcu-stall, warning, hung-task)."""
    text = _PREFIX.sub("", line.rstrip("\r\n"), count=1)
    for kind, pattern in _SPLATS:
        if pattern.match(text):
            return kind
    return None


def find_splats(lines: Iterable[str]) -> list[Splat]:
    """Every splat in a console log, in order."""
    found = []
    for lineno, line in enumerate(lines, start=1):
        kind = detect_splat(line)
        if kind is not None:
            found.append(Splat(kind, line.rstrip("\r\n"), lineno))
    return found


def splat_error(
    splats: Sequence[Splat],
    console_tail: str,
    console_log: Path | str | None = None,
    *,
    lines_after: Callable[[int], list[str]] | None = None,
    host_hold: Hold | None = None,
) -> GuestError:
    """The :class:`GuestError` for what the console showed; the most severe splat names it.

    A batch of RCU stalls alone is marked ``host_starved`` (worth one more boot, see
    ``run.host_trouble``) on either evidence: ``host_hold``, the host seen not running a vCPU
    for :data:`HOST_HOLD_S` or more just before (see :mod:`orchestrator.hostwatch`), or the
    report's own lines after the first, read with ``lines_after(lineno)``, showing the
    grace-period kthread kept from running (see :func:`kthread_kept_from_running`).
    """
    primary = max(splats, key=lambda s: SEVERITY[s.kind])
    others = sorted(
        {KIND_TEXT[s.kind] for s in splats if s is not primary} - {KIND_TEXT[primary.kind]}
    )
    message = (
        f"guest {KIND_TEXT[primary.kind]} (console line {primary.lineno}): {primary.line.strip()}"
    )
    if others:
        message += f"\n  also seen: {', '.join(others)}"
    hint = "the kernel under test crashed or complained; the trace is in the console"
    starved = None
    if all(s.kind == "rcu-stall" for s in splats):
        if host_hold is not None and host_hold.seconds >= HOST_HOLD_S:
            starved = f"{host_hold.describe()} just before"
            message += f"\n  {starved}"
        elif lines_after is not None:
            first = min(s.lineno for s in splats)
            last = max(s.lineno for s in splats)
            report = lines_after(first)[: last - first + STALL_REPORT_LINES]
            starved = kthread_kept_from_running(report)
            if starved:
                message += f"\n  the report says RCU's grace-period kthread did not run: {starved}"
        if starved:
            hint = (
                "a guest whose vCPUs the host leaves unscheduled for longer than the stall"
                " timeout reports this (time jumps forward); a busy host under TCG does that."
                " Lighten the host's load, or read the console if it happens on a quiet host"
            )
    return GuestError(
        message,
        kind=primary.kind,
        line=primary.line,
        console_tail=console_tail,
        console_log=str(console_log) if console_log else None,
        hint=hint,
        host_starved=starved,
    )


class Console:
    """Follows a guest's serial log file from a thread: keeps a tail, spots splats and the
    image's ready marker. ``on_line`` (optional) sees every line, e.g. to echo it."""

    def __init__(
        self,
        path: Path,
        ready_marker: str,
        *,
        keep: int = 400,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.ready_marker = ready_marker
        self._on_line = on_line
        self._tail: deque[str] = deque(maxlen=keep)
        self._splats: list[Splat] = []
        self._ready = False
        self._lineno = 0
        self._last_line_at = time.monotonic()
        self._partial = b""
        self._changed = threading.Condition()
        self._read_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._follow, name=f"console:{self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop following, after a last read of whatever QEMU wrote."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.read_now()

    def _follow(self) -> None:
        while not self._stop.is_set():
            if not self.read_now():
                self._stop.wait(0.05)

    def read_now(self) -> bool:
        """Read what is new in the log; returns whether anything was."""
        with self._read_lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    chunk = fh.read()
            except FileNotFoundError:
                return False
            if not chunk:
                return False
            self._offset += len(chunk)
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            with self._changed:
                for raw in complete:
                    self._line(raw.decode("utf-8", errors="replace").rstrip("\r"))
                self._changed.notify_all()
            return True

    def _line(self, line: str) -> None:
        self._lineno += 1
        self._last_line_at = time.monotonic()
        self._tail.append(line)
        kind = detect_splat(line)
        if kind is not None:
            self._splats.append(Splat(kind, line, self._lineno))
        if not self._ready and self.ready_marker in line:
            self._ready = True
        if self._on_line is not None:
            self._on_line(line)

    def wait(self, timeout: float) -> None:
        """Block until a new line arrives or ``timeout`` passes."""
        with self._changed:
            self._changed.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def splats(self) -> list[Splat]:
        return list(self._splats)

    @property
    def quiet_for(self) -> float:
        """Seconds since the last line arrived."""
        return time.monotonic() - self._last_line_at

    def lines_from(self, lineno: int) -> list[str]:
        """The lines kept in the tail from console line ``lineno`` (1-based) on."""
        with self._changed:
            kept = list(self._tail)
            first = self._lineno - len(kept) + 1
        return kept[max(0, lineno - first) :]

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the console (what error messages show)."""
        return "\n".join(list(self._tail)[-lines:])


# --- QEMU processes: ports, spawning, cleanup ------------------------------------------------

_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()
_previous_sigterm: object = None


def _on_sigterm(signum: int, frame: object) -> None:
    # unwind like Ctrl-C does, so every Guest.__exit__ runs; 143 is what a shell reports
    raise SystemExit(128 + signum)


def _register(proc: subprocess.Popen[bytes]) -> None:
    global _previous_sigterm
    with _live_lock:
        _live[proc.pid] = proc
        if (
            threading.current_thread() is threading.main_thread()
            and _previous_sigterm is None
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(proc: subprocess.Popen[bytes]) -> None:
    global _previous_sigterm
    with _live_lock:
        _live.pop(proc.pid, None)
        if (
            not _live
            and _previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _previous_sigterm = None


def live_pids() -> list[int]:
    """PIDs of the QEMU processes this process started and has not yet stopped."""
    with _live_lock:
        return sorted(pid for pid, proc in _live.items() if proc.poll() is None)


@atexit.register
def kill_all() -> None:
    """Kill every QEMU still running (atexit: exceptions that skipped a ``with`` block)."""
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        _terminate(proc, term_wait=0.0)


def _terminate(proc: subprocess.Popen[bytes], term_wait: float = TERM_WAIT_S) -> None:
    if proc.poll() is None and term_wait > 0:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(term_wait)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now. Another process may take it before QEMU
    binds it; :func:`spawn_qemu` notices and tries another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    with open("/proc/net/tcp") as fh:
        next(fh)
        for row in fh:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def holds_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` owns a socket listening on TCP ``port`` (IPv4)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def spawn_qemu(
    make_argv: Callable[[int], list[str]],
    *,
    log: Path,
    pick_port: Callable[[], int] = pick_free_port,
    attempts: int = PORT_ATTEMPTS,
    setup_timeout: float = FORWARD_SETUP_TIMEOUT_S,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start QEMU with ``make_argv(port)`` and return it once it listens on ``port``.

    When QEMU exits saying it could not set up the host forwarding (someone took the port
    between :func:`pick_free_port` and QEMU's bind), try again with a new port. QEMU's own
    output is appended to ``log``. Raises :class:`VMError` for any other early exit.
    """
    process.require(make_argv(0)[0], "qemu-system-x86")
    tried = []
    for _ in range(attempts):
        port = pick_port()
        tried.append(port)
        argv = make_argv(port)
        offset = log.stat().st_size if log.exists() else 0
        # QEMU holds nothing worth a clean exit: SIGKILL when korch dies
        proc = process.spawn(argv, output=log, death_signal=signal.SIGKILL)
        _register(proc)
        deadline = time.monotonic() + setup_timeout
        try:
            while proc.poll() is None and not holds_listener(proc.pid, port):
                if time.monotonic() > deadline:
                    raise VMError(
                        f"QEMU did not open the SSH forward on port {port} within "
                        f"{setup_timeout:.0f} s",
                        hint=f"QEMU's output: {log}",
                    )
                time.sleep(0.02)
        except BaseException:
            _terminate(proc, term_wait=0.0)
            _unregister(proc)
            raise
        if proc.returncode is None:
            return proc, port
        _unregister(proc)
        said = _read_from(log, offset)
        if HOSTFWD_FAILURE in said.lower():
            continue
        raise VMError(
            f"QEMU exited with status {proc.returncode} while starting: {_last_lines(said, 2)}",
            hint="run the command in qemu-argv.txt by hand to see more; "
            "`korch doctor` checks the QEMU installation",
        )
    raise VMError(
        f"QEMU could not set up the SSH forward on {attempts} ports ({', '.join(map(str, tried))})",
        hint="something keeps taking loopback ports; retry, or free ports in the ephemeral range",
    )


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", errors="replace")


def _last_lines(text: str, n: int) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-n:])


# --- acceleration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KvmFacts:
    """What the host says about KVM, to explain a failed probe (the probe is what decides)."""

    device: bool
    accessible: bool
    cpu_flag: str | None  # "vmx" or "svm" when the CPU advertises hardware virtualization
    pvm: bool  # /sys/module/kvm_pvm: KVM without hardware support, for PVM guest kernels only

    def causes(self) -> list[str]:
        """Reasons KVM cannot run a stock kernel here, most basic first (empty: none known)."""
        found = []
        if not self.device:
            found.append("/dev/kvm does not exist (no KVM module loaded, or not exposed here)")
        elif not self.accessible:
            found.append("/dev/kvm is not readable and writable by this user (join group kvm)")
        if self.cpu_flag is None:
            found.append("the CPU shows no svm/vmx flag in /proc/cpuinfo")
        if self.pvm:
            found.append(
                "/sys/module/kvm_pvm is present: /dev/kvm is PVM, which runs only guest kernels "
                "built for PVM"
            )
        return found

    def explain(self) -> str:
        return "; ".join(self.causes()) or "no known obstacle"


def kvm_facts(root: Path = Path("/")) -> KvmFacts:
    """Read /dev/kvm, /proc/cpuinfo and /sys/module (under ``root``, for tests)."""
    dev = root / "dev/kvm"
    flag = None
    with contextlib.suppress(OSError):
        for line in (root / "proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                flag = next((f for f in ("vmx", "svm") if f in flags), None)
                break
    return KvmFacts(
        device=dev.exists(),
        accessible=os.access(dev, os.R_OK | os.W_OK),
        cpu_flag=flag,
        pvm=(root / "sys/module/kvm_pvm").exists(),
    )


_probes: dict[tuple[str, str], AccelDecision] = {}
_probes_lock = threading.Lock()


def _qemu_id(qemu: str) -> str:
    path = shutil.which(qemu) or qemu
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def choose_accel(
    requested: str,
    kernel: Path,
    image: GuestImage,
    config: VMConfig,
    *,
    workdir: Path | None = None,
) -> AccelDecision:
    """Decide between KVM and TCG for ``kernel``.

    ``tcg`` and ``kvm`` are taken as given. ``auto`` boots the kernel under KVM until the
    image's ready marker (``config.probe_timeout_s``) and falls back to TCG if that fails;
    a device that exists is not proof (PVM hosts hang mainline guests). The probe result is
    remembered per kernel and QEMU binary for the rest of the process.
    """
    if requested == "tcg":
        return AccelDecision("tcg", "accel: tcg was requested")
    facts = kvm_facts()
    if requested == "kvm":
        if not facts.accessible:
            raise VMError(
                f"accel: kvm was requested but KVM is not usable: {facts.explain()}",
                hint="use accel: auto or tcg; `korch doctor` explains",
            )
        return AccelDecision("kvm", "accel: kvm was requested")
    if not facts.accessible:
        return AccelDecision("tcg", f"KVM not usable: {facts.explain()}")
    key = (sha256_file(kernel), _qemu_id(config.qemu))
    with _probes_lock:
        if key in _probes:
            return _probes[key]
        decision = probe_kvm(kernel, image, config, workdir=workdir, facts=facts)
        _probes[key] = decision
        return decision


def probe_kvm(
    kernel: Path,
    image: GuestImage,
    config: VMConfig,
    *,
    workdir: Path | None = None,
    facts: KvmFacts | None = None,
) -> AccelDecision:
    """Boot ``kernel`` under KVM until the ready marker; TCG (with the reason) if it fails."""
    facts = facts or kvm_facts()
    probe_config = replace(config, accel="kvm", boot_timeout_s=config.probe_timeout_s)
    guest = Guest(
        kernel,
        image,
        probe_config,
        workdir=workdir,
        accel=AccelDecision("kvm", "probe"),
    )
    start = time.monotonic()
    try:
        guest.boot(ssh=False)
    except KorchError as exc:
        why = exc.message.splitlines()[0]
        causes = facts.causes()
        cause = f"; likely cause: {'; '.join(causes)}" if causes else ""
        return AccelDecision("tcg", f"KVM probe failed ({why}){cause}")
    finally:
        guest.stop(graceful=False)
    return AccelDecision(
        "kvm", f"KVM probe reached the ready marker in {time.monotonic() - start:.1f} s"
    )


# --- guests ----------------------------------------------------------------------------------


class Guest:
    """One QEMU guest booted from ``kernel`` and ``image``, used as a context manager::

        with Guest(bzimage, build_image(), VMConfig(cpus=4)) as guest:
            print(guest.run("uname -r").stdout)

    Entering boots the guest and logs in over SSH. Leaving powers it off over SSH, then
    sends SIGTERM, then SIGKILL, each after a grace period. Console files (``console.log``,
    ``qemu.log``, ``qemu-argv.txt``) go to ``workdir`` (a temporary directory by default,
    deleted after a clean stop). A kernel splat at any time raises :class:`GuestError` at
    the next call.

    QEMU is bound to the thread that starts it (PR_SET_PDEATHSIG): start guests from a
    thread that lives as long as they do.
    """

    def __init__(
        self,
        kernel: Path,
        image: GuestImage,
        config: VMConfig | None = None,
        *,
        workdir: Path | None = None,
        accel: AccelDecision | None = None,
        on_console_line: Callable[[str], None] | None = None,
    ) -> None:
        self.kernel = Path(kernel)
        self.image = image
        self.config = config or VMConfig()
        self.accel = accel
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="korch-guest-"))
        self._on_console_line = on_console_line
        self.argv: list[str] = []
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: Console | None = None
        self.watch: VcpuWatch | None = None
        self.remote: Remote | None = None
        self.boot_s: float | None = None  # QEMU start to SSH login (or ready marker)
        self._reported = 0  # splats already raised, so each one is raised once
        self._failed = False

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Guest:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        if exc_type is not None:
            self._failed = True
        self.stop(graceful=not interrupted)
        if exc_type is None:
            # a splat printed after the last command (or while powering off) still counts
            self.check()

    def start(self) -> None:
        """Choose the accelerator (unless given), boot, and log in over SSH."""
        if not self.kernel.is_file():
            raise UserError(f"kernel image {self.kernel} does not exist")
        if self.accel is None:
            self.accel = choose_accel(
                self.config.accel,
                self.kernel,
                self.image,
                self.config,
                workdir=self.workdir / "kvm-probe",
            )
        self.boot(ssh=True)

    def boot(self, *, ssh: bool = True) -> None:
        """Start QEMU and wait for the ready marker, then (with ``ssh``) for an SSH login.

        Raises :class:`GuestError` on a splat, :class:`BootTimeout` at the deadline and
        :class:`VMError` when QEMU exits first. The guest is stopped before raising.
        """
        if self.accel is None:
            raise RuntimeError("Guest.boot() needs an accelerator; call start()")
        accel = self.accel.accel
        if not self.kernel.is_file():
            raise UserError(f"kernel image {self.kernel} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        deadline = start + self.config.boot_timeout_s
        self.console_log.unlink(missing_ok=True)
        self.qemu_log.unlink(missing_ok=True)

        def make_argv(port: int) -> list[str]:
            argv = qemu_argv(
                qemu=self.config.qemu,
                kernel=self.kernel,
                initrd=self.image.initrd,
                accel=accel,
                cpus=self.config.cpus,
                memory=self.config.memory,
                host_port=port,
                console_log=self.console_log,
                cmdline=self.config.cmdline,
            )
            # port 0 is spawn_qemu asking for the binary only; for real ports the command
            # is on disk before QEMU starts, so a failed start can be reproduced by hand
            if port:
                atomic_write(self.workdir / "qemu-argv.txt", shlex.join(argv) + "\n")
            return argv

        try:
            self.proc, self.port = spawn_qemu(make_argv, log=self.qemu_log)
            self.argv = make_argv(self.port)
            self.watch = VcpuWatch(self.proc.pid)
            self.watch.start()
            self.console = Console(
                self.console_log, self.image.ready_marker, on_line=self._on_console_line
            )
            self._reported = 0
            self.console.start()
            while not self.console.ready:
                self._poll("before the guest was ready")
                if time.monotonic() >= deadline:
                    raise BootTimeout(
                        f"the guest did not reach its ready marker within "
                        f"{self.config.boot_timeout_s:.0f} s ({accel})",
                        console_tail=self.console.tail(),
                        console_log=str(self.console_log),
                        hint=self._timeout_hint(accel),
                    )
                self.console.wait(0.1)
            self._poll("before the guest was ready")
            if ssh:
                self.remote = Remote(
                    self.port,
                    key_filename=self.image.client_key,
                    host_public_key=self.image.host_public_key,
                    user=self.image.user,
                    console_tail=self.console.tail,
                    console_log=self.console_log,
                )
                self.remote.connect(deadline, poll=lambda: self._poll("before SSH was up"))
            self.boot_s = time.monotonic() - start
        except BaseException:
            self._failed = True
            self.stop(graceful=False)
            raise

    def _timeout_hint(self, accel: str) -> str:
        if accel == "kvm":
            causes = kvm_facts().causes()
            if causes:
                return f"KVM here cannot run this kernel: {'; '.join(causes)}; use accel: tcg"
            return "the kernel hangs under KVM; try accel: tcg to compare"
        return "TCG is slow on a busy host: raise vm.boot_timeout_s, or check the console"

    def stop(self, *, graceful: bool = True) -> None:
        """Power off over SSH (if ``graceful`` and logged in), then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc is None:
            return
        try:
            if (
                graceful
                and proc.poll() is None
                and self.remote is not None
                and self.remote.connected
            ):
                self.remote.poweroff()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(POWEROFF_WAIT_S)
        finally:
            if self.remote is not None:
                self.remote.close()
            _terminate(proc)
            _unregister(proc)
            if self.console is not None:
                self.console.stop()
            if self.watch is not None:
                self.watch.stop()
            self.proc = None
            if self._own_workdir and not self._failed and not self._unreported():
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- health ---------------------------------------------------------------------------

    def _unreported(self) -> list[Splat]:
        return self.console.splats[self._reported :] if self.console else []

    def check(self) -> None:
        """Raise :class:`GuestError` if the console showed a splat not yet reported."""
        new = self._unreported()
        if not new:
            return
        assert self.console is not None
        self._settle()
        new = self._unreported()
        self._reported += len(new)
        self._failed = True
        hold = None
        if self.watch is not None:
            self.watch.step()  # the host's view up to this moment
            hold = self.watch.longest(since=time.monotonic() - HOST_HOLD_LOOKBACK_S)
        raise splat_error(
            new,
            self.console.tail(),
            self.console_log,
            lines_after=self.console.lines_from,
            host_hold=hold,
        )

    def _settle(self) -> None:
        # keep reading until the trace ends (quiet console or QEMU gone) so it is in the error
        assert self.console is not None
        limit = time.monotonic() + SPLAT_SETTLE_MAX_S
        while time.monotonic() < limit:
            if self.proc is None or self.proc.poll() is not None:
                break
            if self.console.quiet_for >= SPLAT_QUIET_S:
                break
            self.console.wait(0.1)
        self.console.read_now()

    def _poll(self, when: str = "") -> None:
        """Raise if the kernel splatted or QEMU exited."""
        self.check()
        if self.proc is not None and self.proc.poll() is not None:
            assert self.console is not None
            self.console.read_now()
            self.check()
            said = _read_from(self.qemu_log, 0) if self.qemu_log.exists() else ""
            raise VMError(
                f"QEMU exited with status {self.proc.returncode} {when}".rstrip()
                + (f"; QEMU said: {_last_lines(said, 3)}" if said.strip() else ""),
                console_tail=self.console.tail(),
                console_log=str(self.console_log),
                hint="the console shows how far the guest got",
            )

    # -- using ----------------------------------------------------------------------------

    def _remote(self) -> Remote:
        if self.remote is None or self.proc is None:
            raise RuntimeError("the guest is not running (use it inside `with Guest(...)`)")
        return self.remote

    def _after_remote_failure(self) -> None:
        # a dying kernel drops the connection first; its own report is the better error
        limit = time.monotonic() + SPLAT_SETTLE_MAX_S
        while time.monotonic() < limit and self.console is not None:
            if self.console.splats[self._reported :]:
                break
            if self.proc is None or self.proc.poll() is not None:
                break
            self.console.wait(0.1)
        self._poll("while a command ran")

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        check: bool = True,
        echo: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``command`` in the guest (see :meth:`Remote.run`), then check the console."""
        remote = self._remote()
        self._poll()
        try:
            result = remote.run(command, timeout=timeout, check=check, echo=echo, env=env)
        except RemoteCommandError:
            self._poll()
            raise
        except RemoteError:
            self._failed = True  # keep the console log the error points at
            self._after_remote_failure()
            raise
        self._poll()
        return result

    def put(self, local: Path | str, remote_path: str) -> None:
        """Copy a host file into the guest."""
        remote = self._remote()
        try:
            remote.put(local, remote_path)
        except RemoteError:
            self._after_remote_failure()
            raise
        self._poll()

    def get(self, remote_path: str, local: Path | str) -> None:
        """Copy a guest file to the host."""
        remote = self._remote()
        try:
            remote.get(remote_path, local)
        except RemoteError:
            self._after_remote_failure()
            raise
        self._poll()

    def shell(self) -> int:
        """An interactive shell in the guest on this terminal; returns its exit status."""
        status = self._remote().shell()
        self._poll()
        return status


def require_terminal() -> None:
    """Raise :class:`UserError` unless standard input is a terminal (for interactive shells)."""
    if not sys.stdin.isatty():
        raise UserError(
            "no command given and standard input is not a terminal",
            hint="pass a command after `--`, e.g. korch boot EXP --variant V -- uname -a",
        )


def boot_and_run(
    kernel: Path,
    command: str | None = None,
    *,
    config: VMConfig | None = None,
    image: GuestImage | None = None,
    extra_files: Mapping[str, Path | str] | None = None,
    workdir: Path | None = None,
    timeout: float | None = None,
    echo_console: bool = False,
) -> int:
    """Boot ``kernel``, run ``command`` (or an interactive shell on a terminal), power off.

    The command's output streams to this process's stdout/stderr; the return value is its
    exit status (the shell's, interactively). ``image`` defaults to :func:`build_image` with
    ``extra_files``. Splats raise :class:`GuestError` even when the command succeeded.
    """
    if command is None:
        require_terminal()
    image = image or build_image(extra_files)

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with Guest(
        kernel,
        image,
        config or VMConfig(),
        workdir=workdir,
        on_console_line=echo if echo_console else None,
    ) as guest:
        if command is None:
            return guest.shell()
        return guest.run(command, timeout=timeout, check=False, echo=True).status
