"""vm.py without a kernel: command lines, console splat detection, ports, KVM facts."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator import vm
from orchestrator.errors import EXIT_GUEST, GuestError, UserError, VMError
from orchestrator.hostwatch import Hold
from orchestrator.image import GuestImage

CONSOLE_LOGS = Path(__file__).parent / "data" / "console"
HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None


# --- command lines ---------------------------------------------------------------------------


def test_qemu_argv_tcg_four_cpus() -> None:
    argv = vm.qemu_argv(
        qemu="qemu-system-x86_64",
        kernel=Path("/k/bzImage"),
        initrd=Path("/i/initramfs.cpio.gz"),
        accel="tcg",
        cpus=4,
        memory="1G",
        host_port=40022,
        console_log=Path("/run/boot/console.log"),
    )
    assert argv == [
        "qemu-system-x86_64",
        "-name", "korch,debug-threads=on",
        "-display", "none", "-nodefaults", "-no-user-config",
        "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", "4",
        "-m", "1G",
        "-kernel", "/k/bzImage",
        "-initrd", "/i/initramfs.cpio.gz",
        "-append", "console=ttyS0 panic=-1 no_timer_check",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", "file:/run/boot/console.log",
        "-no-reboot",
    ]  # fmt: skip


def test_qemu_argv_kvm_with_extra_cmdline() -> None:
    argv = vm.qemu_argv(
        qemu="/opt/qemu/bin/qemu-system-x86_64",
        kernel=Path("bzImage"),
        initrd=Path("initrd"),
        accel="kvm",
        cpus=2,
        memory="512M",
        host_port=2222,
        console_log=Path("c.log"),
        cmdline=("rdinit=/nonexistent", "loglevel=7"),
    )
    assert argv[0] == "/opt/qemu/bin/qemu-system-x86_64"
    assert argv[argv.index("-accel") : argv.index("-accel") + 4] == [
        "-accel",
        "kvm",
        "-cpu",
        "host",
    ]
    assert (
        argv[argv.index("-append") + 1]
        == "console=ttyS0 panic=-1 no_timer_check rdinit=/nonexistent loglevel=7"
    )
    assert argv[argv.index("-smp") + 1] == "2"


def test_pieces() -> None:
    assert vm.kernel_args(Path("/b")) == ["-kernel", "/b"]
    assert vm.initrd_args(Path("/i")) == ["-initrd", "/i"]
    assert vm.smp_args(4) == ["-smp", "4"]
    assert vm.memory_args("2G") == ["-m", "2G"]
    assert vm.reboot_args() == ["-no-reboot"]
    assert "-display" in vm.display_args()
    assert vm.append_args(vm.kernel_cmdline()) == [
        "-append",
        "console=ttyS0 panic=-1 no_timer_check",
    ]


def test_forward_is_bound_to_loopback_only() -> None:
    netdev = vm.netdev_args(5555)[1]
    assert "hostfwd=tcp:127.0.0.1:5555-:22" in netdev
    assert "0.0.0.0" not in netdev


def test_serial_path_commas_are_escaped() -> None:
    assert vm.serial_args(Path("/tmp/a,b/console.log")) == ["-serial", "file:/tmp/a,,b/console.log"]


def test_accel_args_wants_a_decision() -> None:
    with pytest.raises(ValueError):
        vm.accel_args("auto")


def test_vm_config_validation() -> None:
    with pytest.raises(UserError) as info:
        vm.VMConfig(accel="hvf", cpus=0, memory="lots")
    text = str(info.value)
    assert "vm.accel" in text and "vm.cpus" in text and "vm.memory" in text


# --- console ---------------------------------------------------------------------------------


def _lines(name: str) -> list[str]:
    return (CONSOLE_LOGS / name).read_text().splitlines()


@pytest.mark.parametrize(
    ("log", "primary", "kinds"),
    [
        ("panic_no_init.log", "panic", {"panic"}),
        ("oops_null_deref.log", "oops", {"bug", "oops"}),
        ("gpf.log", "oops", {"oops"}),
        ("warning.log", "warning", {"warning"}),
        ("bug_at.log", "panic", {"bug", "oops", "panic"}),
        ("soft_lockup.log", "bug", {"bug"}),
        ("rcu_stall.log", "rcu-stall", {"rcu-stall"}),
        ("rcu_self_stall_caller.log", "rcu-stall", {"rcu-stall"}),
    ],
)
def test_golden_console_logs(log: str, primary: str, kinds: set[str]) -> None:
    lines = _lines(log)
    splats = vm.find_splats(lines)
    assert {s.kind for s in splats} == kinds
    error = vm.splat_error(splats, "\n".join(lines[-40:]), CONSOLE_LOGS / log)
    assert isinstance(error, GuestError)
    assert error.exit_code == EXIT_GUEST == 4
    assert error.kind == primary
    assert error.line in lines
    assert "console (last lines)" in str(error)


def test_clean_boot_has_no_splats() -> None:
    # the real boot prints "panic=-1", "rcu:" lines and a clocksource watchdog complaint
    lines = _lines("clean_boot.log")
    assert any("panic=-1" in line for line in lines)
    assert vm.find_splats(lines) == []
    assert any("korch-guest: ready" in line for line in lines)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[   12.000001] Kernel panic - not syncing: Fatal exception", "panic"),
        ("<0>[ 1.5][  T160] Kernel panic - not syncing: hung", "panic"),
        ("[    3.1][    C0] WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2", "warning"),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "bug"),
        ("INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu-stall"),
        ("INFO: task mapper:160 blocked for more than 122 seconds.", "hung-task"),
        ("Kernel command line: console=ttyS0 panic=-1", None),
        ("korch-guest: FAILED: ip addr add 10.0.2.15/24 dev eth0", None),
        ("rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.", None),
        ("mapper: BUG: not at line start is still kernel-looking but not a splat", None),
    ],
)
def test_detect_splat(line: str, kind: str | None) -> None:
    assert vm.detect_splat(line) == kind


def test_console_follows_a_growing_file(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    seen: list[str] = []
    console = vm.Console(log, "korch-guest: ready", on_line=seen.append)
    console.start()
    try:
        with open(log, "w") as fh:
            fh.write("Linux version 7.2.0\r\nRun /init as init process\n")
            fh.flush()
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                console.wait(0.1)
            assert not console.ready
            fh.write("korch-guest: ready\n------------[ cut here ]------------\n")
            fh.write("WARNING: CPU: 1 PID: 9 at mm/x.c:1 f+0x0/0x1\npartial line without newline")
            fh.flush()
            deadline = time.monotonic() + 5
            while not console.splats and time.monotonic() < deadline:
                console.wait(0.1)
    finally:
        console.stop()
    assert console.ready
    assert [s.kind for s in console.splats] == ["warning"]
    assert console.splats[0].lineno == 5
    assert seen[0] == "Linux version 7.2.0"  # the serial line's \r is gone
    assert "partial line" not in console.tail()
    assert console.tail(2).splitlines() == ["------------[ cut here ]------------", seen[-1]]


# --- ports and processes ---------------------------------------------------------------------

FAKE_QEMU = """\
#!{python}
# Behaves like QEMU's user network at start-up: bind the forwarded port or exit saying so.
import re, socket, sys, time
spec = next(a for a in sys.argv if "hostfwd=" in a)
port = int(re.search(r"127\\.0\\.0\\.1:(\\d+)-", spec).group(1))
s = socket.socket()
try:
    s.bind(("127.0.0.1", port))
except OSError:
    sys.stderr.write(
        f"qemu-system-x86_64: -netdev {{spec}}: Could not set up host forwarding rule "
        f"'tcp:127.0.0.1:{{port}}-:22'\\n"
    )
    sys.exit(1)
s.listen()
time.sleep(60)
"""


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    path = tmp_path / "fake-qemu"
    path.write_text(FAKE_QEMU.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def busy_port() -> object:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _picker(first: list[int]) -> object:
    ports = iter(first)
    return lambda: next(ports, None) or vm.pick_free_port()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    vm._terminate(proc, term_wait=1.0)
    vm._unregister(proc)


def _argv_for(qemu: Path | str) -> object:
    return lambda port: [str(qemu), "-display", "none", "-nodefaults", "-S",
                         "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"]  # fmt: skip


def test_port_retry_when_the_port_is_taken(fake_qemu: Path, busy_port: int, tmp_path: Path) -> None:
    proc, port = vm.spawn_qemu(
        _argv_for(fake_qemu), log=tmp_path / "qemu.log", pick_port=_picker([busy_port])
    )
    try:
        assert port != busy_port
        assert vm.holds_listener(proc.pid, port)
        assert "Could not set up host forwarding rule" in (tmp_path / "qemu.log").read_text()
        assert proc.pid in vm.live_pids()
    finally:
        _stop(proc)
    assert proc.pid not in vm.live_pids()


def test_port_retry_gives_up(fake_qemu: Path, busy_port: int, tmp_path: Path) -> None:
    with pytest.raises(VMError, match="could not set up the SSH forward on 2 ports"):
        vm.spawn_qemu(
            _argv_for(fake_qemu),
            log=tmp_path / "qemu.log",
            pick_port=lambda: busy_port,
            attempts=2,
        )
    assert vm.live_pids() == []


@pytest.mark.skipif(not HAVE_QEMU, reason="qemu-system-x86_64 is not installed")
def test_port_retry_with_real_qemu(busy_port: int, tmp_path: Path) -> None:
    proc, port = vm.spawn_qemu(
        _argv_for("qemu-system-x86_64"), log=tmp_path / "qemu.log", pick_port=_picker([busy_port])
    )
    try:
        assert port != busy_port
        assert vm.holds_listener(proc.pid, port)
    finally:
        _stop(proc)


@pytest.mark.skipif(not HAVE_QEMU, reason="qemu-system-x86_64 is not installed")
def test_other_early_exit_is_a_vm_error(tmp_path: Path) -> None:
    with pytest.raises(VMError, match="exited with status 1 while starting") as info:
        vm.spawn_qemu(
            lambda port: ["qemu-system-x86_64", "-no-such-option"], log=tmp_path / "qemu.log"
        )
    assert "no-such-option" in str(info.value)


def test_missing_qemu_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="qemu-system-x86"):
        vm.spawn_qemu(lambda port: ["/nonexistent/qemu"], log=tmp_path / "qemu.log")


def test_holds_listener_sees_only_the_owner() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not vm.holds_listener(os.getpid(), port)  # bound, not listening
        sock.listen()
        assert vm.holds_listener(os.getpid(), port)
        assert not vm.holds_listener(os.getppid(), port)


def test_pick_free_port_is_bindable() -> None:
    port = vm.pick_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_child_dies_with_its_parent(tmp_path: Path, fake_qemu: Path) -> None:
    # a korch that is SIGKILLed cannot clean up; PR_SET_PDEATHSIG must take QEMU with it
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from orchestrator import vm\n"
        f"proc, port = vm.spawn_qemu(lambda p: [{str(fake_qemu)!r}, f'hostfwd=tcp:127.0.0.1:{{p}}-:22'],"
        f" log=Path({str(tmp_path / 'q.log')!r}))\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


# --- acceleration ----------------------------------------------------------------------------


def _fake_root(tmp_path: Path, *, kvm: bool, flags: str, pvm: bool) -> Path:
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys/module").mkdir(parents=True)
    if kvm:
        (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    if pvm:
        (tmp_path / "sys/module/kvm_pvm").mkdir()
    return tmp_path


def test_kvm_facts_name_the_pvm_cause(tmp_path: Path) -> None:
    facts = vm.kvm_facts(_fake_root(tmp_path, kvm=True, flags="hypervisor", pvm=True))
    assert facts.device and facts.cpu_flag is None and facts.pvm
    causes = " ".join(facts.causes())
    assert "svm/vmx" in causes and "kvm_pvm" in causes


def test_kvm_facts_hardware_virtualization(tmp_path: Path) -> None:
    facts = vm.kvm_facts(_fake_root(tmp_path, kvm=True, flags="vmx ept", pvm=False))
    assert facts.cpu_flag == "vmx"
    assert facts.causes() == []


def test_kvm_facts_no_device(tmp_path: Path) -> None:
    facts = vm.kvm_facts(_fake_root(tmp_path, kvm=False, flags="svm", pvm=False))
    assert facts.cpu_flag == "svm"
    assert not facts.device and not facts.accessible
    assert "does not exist" in facts.explain()


IMAGE = GuestImage(Path("/i"), Path("/k"), "ssh-ed25519 AAAA", "id")


def test_forced_tcg_needs_no_probe(tmp_path: Path) -> None:
    decision = vm.choose_accel("tcg", tmp_path / "none", IMAGE, vm.VMConfig())
    assert decision == vm.AccelDecision("tcg", "accel: tcg was requested")


def test_auto_without_kvm_device_skips_the_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vm, "kvm_facts", lambda: vm.KvmFacts(False, False, None, False))
    monkeypatch.setattr(vm, "probe_kvm", _no_probe)
    decision = vm.choose_accel("auto", tmp_path / "none", IMAGE, vm.VMConfig())
    assert decision.accel == "tcg"
    assert "/dev/kvm does not exist" in decision.reason


def test_forced_kvm_without_device_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "kvm_facts", lambda: vm.KvmFacts(True, False, "vmx", False))
    with pytest.raises(VMError, match="not readable and writable"):
        vm.choose_accel("kvm", Path("/none"), IMAGE, vm.VMConfig())


def _no_probe(*args: object, **kwargs: object) -> vm.AccelDecision:
    raise AssertionError("the probe must not run")


def test_probe_result_is_cached_per_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vm, "kvm_facts", lambda: vm.KvmFacts(True, True, None, True))
    monkeypatch.setattr(vm, "_probes", {})
    calls: list[Path] = []

    def probe(kernel: Path, *args: object, **kwargs: object) -> vm.AccelDecision:
        calls.append(kernel)
        return vm.AccelDecision("tcg", "KVM probe failed (test)")

    monkeypatch.setattr(vm, "probe_kvm", probe)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"kernel a")
    b.write_bytes(b"kernel b")
    for kernel in (a, a, b, a):
        assert vm.choose_accel("auto", kernel, IMAGE, vm.VMConfig()).accel == "tcg"
    assert calls == [a, b]


def test_sigterm_handler_is_installed_only_while_guests_run(
    fake_qemu: Path, tmp_path: Path
) -> None:
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    before = signal.getsignal(signal.SIGTERM)
    if before != signal.SIG_DFL:
        pytest.skip("someone else handles SIGTERM in this process")
    proc, _ = vm.spawn_qemu(
        lambda p: [str(fake_qemu), f"hostfwd=tcp:127.0.0.1:{p}-:22"], log=tmp_path / "q.log"
    )
    try:
        assert signal.getsignal(signal.SIGTERM) is vm._on_sigterm
    finally:
        _stop(proc)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_splat_error_mentions_other_kinds() -> None:
    splats = vm.find_splats(_lines("bug_at.log"))
    error = vm.splat_error(splats, "tail")
    assert error.kind == "panic"
    assert "also seen: kernel BUG, kernel Oops" in error.message


def test_guest_needs_an_existing_kernel(tmp_path: Path) -> None:
    guest = vm.Guest(tmp_path / "missing-bzImage", IMAGE, vm.VMConfig(accel="tcg"))
    with pytest.raises(UserError, match="does not exist"):
        guest.start()
    assert vm.live_pids() == []
    shutil.rmtree(guest.workdir, ignore_errors=True)


def _stall_error(lines: list[str]) -> GuestError:
    splats = vm.find_splats(lines)
    return vm.splat_error(splats, "\n".join(lines[-40:]), lines_after=lambda n: lines[n - 1 :])


def test_a_stall_of_the_kernel_itself_is_not_put_on_the_host() -> None:
    # a CPU stuck in show_map_vma (the kthread starved behind it), and a self-detected
    # stall with the kthread running (fqs=5177): the kernel under test is at fault
    for log in ("rcu_stall.log", "rcu_self_stall_caller.log"):
        error = _stall_error(_lines(log))
        assert error.kind == "rcu-stall"
        assert error.host_starved is None, log
        assert "did not run" not in error.message


def test_console_lines_from_a_line_number(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 501)))
    console = vm.Console(log, "ready", keep=100)
    console.read_now()
    assert console.lines_from(450)[:2] == ["line 450", "line 451"]
    assert console.lines_from(500) == ["line 500"]
    assert console.lines_from(10)[0] == "line 401"  # the tail holds the last 100 lines


def test_a_stall_from_a_host_that_stopped_the_guest_is_put_on_the_host() -> None:
    # a real console: QEMU stopped (SIGSTOP) for 30 s while the guest's four vCPUs were busy;
    # the stall is 7504 jiffies (30 s at HZ=250), the CPU "1 GPs behind" and fqs=0
    lines = _lines("rcu_stall_host_stopped.log")
    error = _stall_error(lines)
    assert error.kind == "rcu-stall" and error.exit_code == EXIT_GUEST
    assert error.host_starved == (
        "rcu: rcu_sched kthread timer wakeup didn't happen for 7503 jiffies!"
        " g7181 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402"
    )
    assert "unscheduled" in (error.hint or "")
    # without the lines after the stall's first line, nothing is put on the host
    assert vm.splat_error(vm.find_splats(lines), "tail").host_starved is None


def test_a_stall_report_names_the_host_only_from_its_own_lines() -> None:
    head = "[ 93.52] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
    qses = "[ 93.53] rcu: \tAll QSes seen, last rcu_preempt kthread activity 23807 (42-41)"
    oops = "[ 93.54] Oops: general protection fault, probably for non-canonical address"
    assert vm.kthread_kept_from_running([head, qses]) == (
        "rcu: \tAll QSes seen, last rcu_preempt kthread activity 23807 (42-41)"
    )
    # another kind of splat ends the stall's report
    assert vm.kthread_kept_from_running([head, oops, qses]) is None
    # a stall beside an Oops is the Oops' business: never put on the host
    lines = [head, qses, oops]
    error = vm.splat_error(vm.find_splats(lines), "", lines_after=lambda n: lines[n - 1 :])
    assert error.kind == "oops" and error.host_starved is None


def test_a_stall_after_the_host_held_a_vcpu_is_put_on_the_host() -> None:
    # whatever the report's own lines say, the host's measurement is evidence of its own
    lines = _lines("rcu_stall.log")
    splats = vm.find_splats(lines)
    held = Hold("CPU 2/TCG", 100.0, 127.5, stopped=False)
    error = vm.splat_error(splats, "tail", host_hold=held)
    assert error.kind == "rcu-stall" and error.exit_code == EXIT_GUEST
    assert error.host_starved == (
        "the host did not run vCPU thread 'CPU 2/TCG' for 27.5 s (waiting for a core) just before"
    )
    assert error.host_starved in error.message and "unscheduled" in (error.hint or "")
    # a short hold is what any busy host does: the stall stays the kernel's
    brief = Hold("CPU 2/TCG", 100.0, 100.0 + vm.HOST_HOLD_S - 0.5, stopped=True)
    assert vm.splat_error(splats, "tail", host_hold=brief).host_starved is None
    # an Oops is never put on the host, held vCPU or not
    oops = [*lines, "[ 99.1] Oops: general protection fault, probably for non-canonical address"]
    error = vm.splat_error(vm.find_splats(oops), "tail", host_hold=held)
    assert error.kind == "oops" and error.host_starved is None
