"""The guest stage on a real kernel under TCG: boot, SSH, copy files, panic, lifecycle.

The kernel is $KORCH_TEST_BZIMAGE when set (any bzImage built with korch's guest fragment),
else the default experiment's per-vma build (the build stage's ``default_builds``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import vm
from orchestrator.errors import EXIT_GUEST, EXIT_INFRA, BootTimeout, GuestError
from orchestrator.image import GuestImage, build_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TCG4 = vm.VMConfig(cpus=4, memory="1G", accel="tcg", boot_timeout_s=120)
_started: list[int] = []  # every QEMU pid the tests saw, checked at the end of the session


@pytest.fixture(scope="session")
def guest_kernel(request: pytest.FixtureRequest) -> Path:
    """A bzImage to boot: $KORCH_TEST_BZIMAGE, else the per-vma build of the default experiment."""
    explicit = os.environ.get("KORCH_TEST_BZIMAGE")
    if explicit:
        return Path(explicit)
    builds = request.getfixturevalue("default_builds")
    return Path(builds["per-vma"].bzimage)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return build_image()


def _qemu_processes() -> dict[int, str]:
    """QEMU processes on the machine: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and argv and b"qemu-system" in argv[0]:
            found[int(entry.name)] = b" ".join(argv).decode(errors="replace")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_qemu_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No guest of these tests is left: every guest they start writes its console under the
    session's temporary directory, so a QEMU whose command line names it is one of ours;
    other QEMUs on the host (a user's VM, another job) are none of the tests' business."""
    ours = str(tmp_path_factory.getbasetemp())
    yield
    assert vm.live_pids() == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {pid: cmd for pid, cmd in _qemu_processes().items() if ours in cmd}
        if not left and not any(Path(f"/proc/{pid}").exists() for pid in _started):
            return
        time.sleep(0.1)
    raise AssertionError(f"QEMU processes left behind: {left}")


def _release(bzimage: Path) -> str:
    # the x86 boot header points at the version string ("7.2.0 (user@host) #1 ...")
    data = bzimage.read_bytes()[:0x10000]
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    return data[offset : data.index(b"\0", offset)].decode().split()[0]


@contextlib.contextmanager
def _booted(kernel: Path, image: GuestImage, workdir: Path) -> Iterator[vm.Guest]:
    """A TCG4 guest, booted once more when its boot stalls past the deadline, as korch run
    does (run.host_trouble): under TCG a boot now and then stalls after 'vgaarb: loaded'
    where every vCPU thread must meet, and the same kernel boots in 4 s the next time. The
    tests that use it are about what follows the boot, not the boot."""
    try:
        guest = vm.Guest(kernel, image, TCG4, workdir=workdir)
        guest.__enter__()
    except BootTimeout:
        workdir.rename(workdir.with_name(workdir.name + "-stalled"))  # kept, as evidence
        guest = vm.Guest(kernel, image, TCG4, workdir=workdir)
        guest.__enter__()
    with contextlib.ExitStack() as stack:
        stack.push(guest)  # __exit__ stops the guest, with the exception if there is one
        yield guest


def test_boot_run_copy_poweroff(
    guest_kernel: Path, guest_image: GuestImage, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(256 * 1024))
    back = tmp_path / "back.bin"
    with _booted(guest_kernel, guest_image, tmp_path / "boot") as guest:
        assert guest.proc is not None
        proc = guest.proc
        _started.append(proc.pid)
        assert guest.accel == vm.AccelDecision("tcg", "accel: tcg was requested")
        assert guest.boot_s is not None and guest.boot_s < TCG4.boot_timeout_s
        assert guest.run("uname -r").stdout.strip() == _release(guest_kernel)
        assert guest.run("nproc").stdout.strip() == "4"
        guest.put(payload, "/tmp/payload.bin")
        guest.run("cp /tmp/payload.bin /tmp/copy.bin")
        guest.get("/tmp/copy.bin", back)
        assert "127.0.0.1" in guest.argv[guest.argv.index("-netdev") + 1]
    assert back.read_bytes() == payload.read_bytes()
    assert proc.returncode == 0
    console = (tmp_path / "boot" / "console.log").read_text()
    assert "korch-guest: ready" in console
    assert "reboot: Power down" in console  # powered off over SSH, not killed
    assert (tmp_path / "boot" / "qemu-argv.txt").read_text().startswith(TCG4.qemu)


def test_missing_init_is_a_guest_error(
    guest_kernel: Path, guest_image: GuestImage, tmp_path: Path
) -> None:
    config = vm.VMConfig(cpus=2, accel="tcg", boot_timeout_s=90, cmdline=("rdinit=/nonexistent",))
    guest = vm.Guest(guest_kernel, guest_image, config, workdir=tmp_path)
    start = time.monotonic()
    with pytest.raises(GuestError) as info:
        guest.start()  # a failed start stops QEMU itself
    assert time.monotonic() - start < config.boot_timeout_s
    error = info.value
    assert error.exit_code == EXIT_GUEST == 4
    assert error.kind == "panic"
    assert "No working init found" in error.line
    assert "Run /bin/sh as init process" in error.console_tail
    assert guest.proc is None


def test_a_host_that_stops_running_the_guest_is_named_in_the_stall(
    guest_kernel: Path, guest_image: GuestImage, tmp_path: Path
) -> None:
    # A host that leaves the vCPUs unscheduled past RCU's 21 s stall timeout (two other
    # guests and both cores busy did it here) makes the guest report an RCU stall: its clock
    # follows the host's, so time jumps forward. SIGSTOP on QEMU for 30 s is that host.
    with (
        pytest.raises(GuestError) as info,
        _booted(guest_kernel, guest_image, tmp_path / "boot") as guest,
    ):
        assert guest.proc is not None
        _started.append(guest.proc.pid)
        busy = "while :; do cat /proc/self/maps >/dev/null; done"
        guest.run(f"for i in 1 2 3 4; do ({busy}) >/dev/null 2>&1 & done", timeout=30)
        os.kill(guest.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(30)
        finally:
            os.kill(guest.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            guest.run("true", timeout=60)
            time.sleep(1)
    error = info.value
    assert error.exit_code == EXIT_GUEST and error.kind == "rcu-stall"
    # the host's own counters name the held vCPU, whatever the guest's report holds (its
    # lines vary with where the grace period was when the host stopped the guest)
    assert error.host_starved is not None, str(error)
    assert re.search(r"did not run vCPU thread 'CPU \d/TCG' for \d+\.\d s \(stopped\)", str(error))
    assert "unscheduled" in (error.hint or "")


def test_boot_deadline_is_an_infra_error(
    guest_kernel: Path, guest_image: GuestImage, tmp_path: Path
) -> None:
    config = vm.VMConfig(cpus=1, accel="tcg", boot_timeout_s=1.0)
    guest = vm.Guest(guest_kernel, guest_image, config, workdir=tmp_path)
    with pytest.raises(BootTimeout) as info:
        guest.start()
    assert guest.proc is None
    assert info.value.exit_code == EXIT_INFRA
    assert "within 1 s" in str(info.value)
    assert info.value.console_log == str(tmp_path / "console.log")


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="no /dev/kvm: nothing to probe")
def test_kvm_probe_decides(guest_kernel: Path, guest_image: GuestImage, tmp_path: Path) -> None:
    facts = vm.kvm_facts()
    config = vm.VMConfig(cpus=2, probe_timeout_s=20)
    start = time.monotonic()
    decision = vm.choose_accel("auto", guest_kernel, guest_image, config, workdir=tmp_path)
    assert time.monotonic() - start < config.probe_timeout_s + 15
    assert decision.reason
    if facts.causes():  # e.g. this project's PVM machines: must fall back, and say why
        assert decision.accel == "tcg"
        assert facts.causes()[0] in decision.reason
    assert vm.choose_accel("auto", guest_kernel, guest_image, config) is decision  # cached


def test_boot_and_run_returns_the_status(
    guest_kernel: Path, guest_image: GuestImage, capfd: pytest.CaptureFixture[str]
) -> None:
    status = vm.boot_and_run(
        guest_kernel, "echo from-the-guest; exit 3", config=TCG4, image=guest_image
    )
    assert status == 3
    assert "from-the-guest" in capfd.readouterr().out


@pytest.mark.parametrize(
    ("sig", "status"),
    [
        # the handler turns SIGTERM into SystemExit(143), so Guest.__exit__ stops QEMU itself
        (signal.SIGTERM, 128 + signal.SIGTERM),
        # Ctrl-C: KeyboardInterrupt unwinds the same way; Python then dies of SIGINT
        (signal.SIGINT, -signal.SIGINT),
    ],
)
def test_signals_stop_the_guest(
    guest_kernel: Path, guest_image: GuestImage, tmp_path: Path, sig: int, status: int
) -> None:
    script = tmp_path / "korch_like.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from pathlib import Path
            from orchestrator import vm
            from orchestrator.image import GuestImage
            image = GuestImage(Path({str(guest_image.initrd)!r}), Path({str(guest_image.client_key)!r}),
                               {guest_image.host_public_key!r}, {guest_image.content_id!r})
            config = vm.VMConfig(cpus=1, accel="tcg")
            with vm.Guest(Path({str(guest_kernel)!r}), image, config, workdir=Path({str(tmp_path / "boot")!r})) as g:
                print(g.proc.pid, flush=True)
                time.sleep(120)
            """
        )
    )
    child = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        # a background job of a non-interactive shell (a CI runner's) inherits SIGINT
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert child.stdout is not None
        qemu_pid = int(child.stdout.readline())
        _started.append(qemu_pid)
        child.send_signal(sig)
        assert child.wait(180) == status  # a loaded host stops a TCG guest slowly
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not Path(f"/proc/{qemu_pid}").exists()


def test_an_experiments_guest_additions_run_in_the_guest(
    guest_kernel: Path, tmp_path: Path
) -> None:
    # guest: {files, packages} through korch boot: a host file and an installed Debian
    # package with its shared libraries (ccache: libzstd, libhiredis, libstdc++)
    from orchestrator import config

    (tmp_path / "note.txt").write_text("added by the experiment\n")
    default = config.default_experiment_path()
    text = default.read_text().replace("patches/", f"{default.parent}/patches/")
    exp = tmp_path / "e.yaml"
    exp.write_text(
        text + "guest:\n  files: [{host: note.txt, guest: /srv/note.txt}]\n  packages: [ccache]\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "boot", str(exp), "--accel", "tcg", "--",
         "ccache --version | head -1; cat /srv/note.txt"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^ccache version \d", res.stdout, re.M), res.stdout
    assert "added by the experiment" in res.stdout
    assert not vm.live_pids()
