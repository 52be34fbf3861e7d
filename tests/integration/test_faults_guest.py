"""Faults on real kernels and guests, as a user meets them: korch killed outright at each
stage of a run and resumed, a guest that panics, a kernel that Oopses, a workload that
hangs, a guest without an SSH server or with the wrong key, a disk that fills during a
build and during a run, and two korchs at once on one cache and one run directory.

Every case feeds the fault suite's tally (tests/faults.py): its exit code and class, any
traceback, whether the message named what it must, the processes it left behind (its own:
found by its directories) and the completed runs it lost.

The faulty kernel is Linux 7.2 with tests/integration/data/faulty-maps.patch: a reader
named ``korch-oops`` hits a BUG, and the maps-contention scanner waits in the kernel until
it is killed. The patch gets a line unique to the test session, so the build stage has a
real (incremental) build to interrupt every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from orchestrator import build, vm
from orchestrator.errors import EXIT_GUEST, EXIT_INFRA, KorchError
from orchestrator.fsutil import cache_root
from orchestrator.image import GuestImage, build_image
from orchestrator.results import ResultsFile
from tests import faults

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"


def korch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


@dataclass
class Korch:
    """A korch started in the background whose output lines are collected as they come."""

    argv: list[str]
    env: dict[str, str] | None = None
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, seen: Callable[[], bool], what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not seen():
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"korch ended ({self.proc.returncode}) before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.05)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def kill(self) -> None:
        """SIGKILL: nothing of korch's own runs after this, only what the kernel does for it
        (flock released, PR_SET_PDEATHSIG signals to its children)."""
        self.proc.kill()
        self.proc.wait(30)
        self._reader.join(5)

    def finish(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


def left_behind(marker: Path, timeout: float = 20.0) -> dict[int, str]:
    """The processes that still name ``marker`` after ``timeout`` (they get that long to go:
    a killed korch's children end on the signal their parent's death sends them)."""
    deadline = time.monotonic() + timeout
    while True:
        left = faults.processes_of(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def runs_of(rundir: Path) -> dict[tuple[str, str, int], dict[str, object]]:
    """Every completed run in ``rundir``: (variant, boot, index) -> its record."""
    out = {}
    for path in sorted((rundir / "results").glob("*.json")):
        res = ResultsFile.load(path)
        for row in res.runs:
            out[(res.variant, str(row["boot"]), int(row["index"]))] = row
    return out


def lost(before: dict[tuple[str, str, int], dict[str, object]], rundir: Path) -> int:
    after = runs_of(rundir)
    return sum(1 for key, row in before.items() if after.get(key) != row)


# -- the experiments ---------------------------------------------------------------------

KERNEL = """\
kernel:
  source: {debian: linux-source-7.2, suite: trixie-backports}
  kconfig: [tinyconfig, qemu-guest, maps-contention]
"""


def faulty_experiment(d: Path, name: str = "faults") -> Path:
    """An experiment of stock 7.2 (per-vma, the default's build) against the faulty kernel,
    with a comment line unique to this call: its faulty kernel is not built yet."""
    d.mkdir(parents=True, exist_ok=True)
    patch = (DATA / "faulty-maps.patch").read_text()
    marker = f"+\t/* build {uuid.uuid4().hex} */\n"
    patch = patch.replace("@@ -311,6 +311,13 @@", "@@ -311,6 +311,14 @@", 1)
    patch = patch.replace(" 1 file changed, 7 insertions(+)", " 1 file changed, 8 insertions(+)")
    patch = patch.replace(" fs/proc/task_mmu.c | 7 +++++++", " fs/proc/task_mmu.c | 8 ++++++++")
    patch = patch.replace(
        "+\t/* A fault for korch's tests", marker + "+\t/* A fault for korch's tests", 1
    )
    (d / "faulty.patch").write_text(patch)
    (d / "exp.yaml").write_text(
        f"schema: 1\nname: {name}\n" + KERNEL + "variants:\n"
        "  - {name: per-vma}\n"
        "  - {name: faulty, patches: [faulty.patch]}\n"
        "baseline: per-vma\n"
        "vm: {cpus: 4, memory: 1G, accel: tcg}\n"
        "workload: {name: maps-contention, runs: 1, blocks: 1, duration_s: 2, region_mb: 64}\n"
    )
    return d / "exp.yaml"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The faulty experiment of this module's tests (built by the first that needs it)."""
    return faulty_experiment(tmp_path_factory.mktemp("faulty"))


def builds_in_flight(objdirs: Path) -> dict[int, str]:
    return faults.processes_of(objdirs)


# -- korch killed at each stage ------------------------------------------------------------


def test_sigkill_during_the_build_then_resume(
    default_builds: dict[str, build.Build], faulty: Path, tmp_path: Path
) -> None:
    """korch SIGKILLed while make builds the faulty kernel: the compilers go with it, and the
    next korch takes the work tree, builds and runs. A second korch building the same
    kernel meanwhile waits for the first, says so, and uses its result."""
    rundir = tmp_path / "run"
    objdirs, builds = cache_root() / "objdirs", cache_root() / "builds"
    before = set(builds.glob(".*.tmp"))
    first = Korch(korch("run", str(faulty), "--out", str(rundir)))
    first.wait_for(lambda: first.said("faulty: build"), "the faulty kernel's build")
    first.wait_for(lambda: bool(builds_in_flight(objdirs)), "make running", timeout=120)
    time.sleep(2)  # well inside the compile
    first.kill()
    left = left_behind(objdirs)
    faults.record(first.proc.returncode, first.output, True, left=len(left))
    assert left == {}, left
    killed = set(builds.glob(".*.tmp")) - before  # its half-made artifact: nothing cleans up
    assert killed  # after a SIGKILL

    second = Korch(korch("run", "--resume", str(rundir)))
    second.wait_for(lambda: second.said("faulty: build"), "the resumed build")
    waiting = subprocess.run(
        korch("build", str(faulty)), cwd=REPO, capture_output=True, text=True, timeout=900
    )
    code = second.finish()
    said = waiting.stdout + waiting.stderr
    faults.record(waiting.returncode, said, "waiting" in said)
    faults.record(code, second.output, True, left=len(left_behind(rundir)))
    assert waiting.returncode == 0, said
    assert "waiting" in said, said  # the second korch said why it sat still
    assert code == 3, second.output  # one block decides nothing: inconclusive
    for variant in ("per-vma", "faulty"):
        res = ResultsFile.load(rundir / "results" / f"{variant}.json")
        assert res.status == "complete" and len(res.runs) == 1, variant
    # the scanner of the faulty kernel waits in m_start until it is killed: a hung run
    assert [r["hang"] for r in ResultsFile.load(rundir / "results" / "faulty.json").runs] == [True]
    assert not killed & set(builds.glob(".*.tmp"))  # the next korch swept it


def test_sigkill_at_each_stage_of_a_run_then_resume(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    """korch run SIGKILLed during a boot, during the workload and while it writes the
    report, resumed after each: no guest outlives it, no completed run is lost, and a
    second korch on the same run directory meanwhile is refused with the holder named."""
    rundir = tmp_path / "run"
    argv = ["--blocks", "2", "--runs", "2", "--duration", "2", "--accel", "tcg"]
    start = korch("run", *argv, "--out", str(rundir))
    resume = korch("run", "--resume", str(rundir))
    stages: list[tuple[str, Callable[[Korch], bool]]] = [
        ("a boot", lambda k: k.said("block 1/2") and not k.said("block 1/2: workload")),
        ("the workload", lambda k: k.said(": run 1/2")),
        ("the report", lambda k: k.said("blocks: ")),
    ]
    kept: dict[tuple[str, str, int], dict[str, object]] = {}
    for n, (stage, seen) in enumerate(stages):
        k = Korch(start if n == 0 else resume)
        k.wait_for(lambda k=k, seen=seen: seen(k), stage)
        if stage == "the workload":
            other = subprocess.run(resume, cwd=REPO, capture_output=True, text=True, timeout=60)
            said = other.stdout + other.stderr
            clear = f"another korch (pid {k.proc.pid})" in said
            faults.record(other.returncode, said, clear)
            assert other.returncode == 64 and clear, said
        if rundir.exists() and (rundir / "results").exists():
            kept = runs_of(rundir)
        k.kill()
        left = left_behind(rundir)
        gone = lost(kept, rundir)
        faults.record(k.proc.returncode, k.output, True, left=len(left), lost=gone)
        assert left == {}, f"after a SIGKILL during {stage}: {left}"
        assert gone == 0, stage
    done = subprocess.run(resume, cwd=REPO, capture_output=True, text=True, timeout=900)
    said = done.stdout + done.stderr
    gone = lost(kept, rundir)
    faults.record(done.returncode, said, True, left=len(left_behind(rundir)), lost=gone)
    assert done.returncode == 3, said
    assert gone == 0
    for variant in ("mmap-lock", "per-vma"):
        res = ResultsFile.load(rundir / "results" / f"{variant}.json")
        assert res.status == "complete" and len(res.runs) == 4, variant
        assert sorted((r["block"], r["index"] % 2) for r in res.runs) == [
            (1, 0), (1, 1), (2, 0), (2, 1)
        ]  # fmt: skip
    comparison = json.loads((rundir / "comparison.json").read_text())
    assert comparison["verdict"] == "inconclusive"
    assert not list(rundir.rglob("*.tmp"))


# -- a kernel that goes wrong -------------------------------------------------------------


def test_a_guest_panic_exits_4_with_the_panic(tmp_path: Path) -> None:
    """Out of memory with vm.panic_on_oom set: a real panic, from a stock kernel."""
    workdir = tmp_path / "boot"
    cmd = (
        "echo 1 > /proc/sys/vm/panic_on_oom && mkdir -p /mnt/fill &&"
        " mount -t tmpfs -o size=100% fill /mnt/fill && cat /dev/zero > /mnt/fill/zero"
    )
    res = subprocess.run(
        korch("boot", "--variant", "per-vma", "--accel", "tcg", "--workdir", str(workdir), "--", cmd),
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    said = res.stdout + res.stderr
    clear = "kernel panic" in said and "Out of memory" in said and str(workdir) in said
    faults.record(res.returncode, said, clear, left=len(left_behind(workdir)))
    assert res.returncode == EXIT_GUEST, said
    assert clear, said
    assert "Kernel panic - not syncing" in (workdir / "console.log").read_text()


def test_an_oops_exits_4_and_names_the_code(faulty: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "boot"
    cmd = (
        "printf '#!/bin/sh\\nread line < /proc/self/maps\\n' > /tmp/korch-oops &&"
        " chmod +x /tmp/korch-oops && /tmp/korch-oops"
    )
    res = subprocess.run(
        korch("boot", str(faulty), "--variant", "faulty", "--workdir", str(workdir), "--", cmd),
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    said = res.stdout + res.stderr
    clear = "kernel BUG at fs/proc/task_mmu.c" in said and str(workdir) in said
    faults.record(res.returncode, said, clear, left=len(left_behind(workdir)))
    assert res.returncode == EXIT_GUEST, said
    assert clear, said


# -- SSH -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return build_image()


def test_a_guest_that_rejects_the_key(
    default_builds: dict[str, build.Build], image: GuestImage, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    key = paramiko.RSAKey.generate(2048)  # a key the guest was never given
    key.write_private_key_file(str(other))
    wrong = GuestImage(image.initrd, other, image.host_public_key, image.content_id)
    config = vm.VMConfig(cpus=1, memory="512M", accel="tcg", boot_timeout_s=120)
    start = time.monotonic()
    guest = vm.Guest(default_builds["per-vma"].bzimage, wrong, config, workdir=tmp_path / "b")
    with pytest.raises(KorchError) as info:
        guest.start()  # a failed start stops QEMU itself
    took = time.monotonic() - start
    said = str(info.value)
    clear = "rejected the image's key" in said and str(other) in said
    faults.record(info.value.exit_code, said, clear, left=len(left_behind(tmp_path)))
    assert info.value.exit_code == EXIT_INFRA and clear, said
    assert took < config.boot_timeout_s  # refused at once, not waited out


def test_a_guest_without_an_ssh_server(
    default_builds: dict[str, build.Build], image: GuestImage, tmp_path: Path
) -> None:
    """The guest says it is ready but nothing answers SSH in it (init is a shell that prints
    the marker and sleeps, with no network and no server): a login error at the deadline
    that says so and shows the console, and QEMU stopped."""
    config = vm.VMConfig(
        cpus=1, memory="512M", accel="tcg", boot_timeout_s=25,
        cmdline=("rdinit=/bin/busybox", "--", "sh", "-c", '"echo korch-guest: ready; exec /bin/busybox sleep 600"'),
    )  # fmt: skip
    guest = vm.Guest(default_builds["per-vma"].bzimage, image, config, workdir=tmp_path / "b")
    with pytest.raises(KorchError) as info:
        guest.start()
    said = str(info.value)
    clear = "no SSH login" in said and "did not start its SSH server" in said
    faults.record(info.value.exit_code, said, clear, left=len(left_behind(tmp_path)))
    assert info.value.exit_code == EXIT_INFRA and clear, said
    assert guest.proc is None


# -- a disk that fills ---------------------------------------------------------------------


def _no_private_mounts() -> str | None:
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"no private mount namespace (root needed): {probe.stderr.strip()}"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs at tmp_path/disk, for this test only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "korch-test", str(disk)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk: {made.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler to delete."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_a_disk_that_fills_during_a_run_then_resume(
    default_builds: dict[str, build.Build], small_disk: Path
) -> None:
    rundir = small_disk / "run"
    argv = ["--blocks", "2", "--runs", "1", "--duration", "2", "--accel", "tcg"]
    k = Korch(korch("run", *argv, "--out", str(rundir)))
    results = rundir / "results" / "mmap-lock.json"
    k.wait_for(lambda: results.exists() and bool(ResultsFile.load(results).runs), "a run")
    kept = runs_of(rundir)
    filler = fill(small_disk)
    code = k.finish()
    clear = "No space left on device" in k.output and f"korch run --resume {rundir}" in k.output
    faults.record(code, k.output, clear, left=len(left_behind(rundir)), lost=lost(kept, rundir))
    assert code == EXIT_INFRA, k.output
    assert clear, k.output
    assert lost(kept, rundir) == 0
    filler.unlink()
    done = subprocess.run(
        korch("run", "--resume", str(rundir)), cwd=REPO, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    said = done.stdout + done.stderr
    faults.record(done.returncode, said, True, lost=lost(kept, rundir))
    assert done.returncode == 3, said
    assert lost(kept, rundir) == 0
    for variant in ("mmap-lock", "per-vma"):
        assert len(ResultsFile.load(rundir / "results" / f"{variant}.json").runs) == 2


@pytest.mark.skipif(_no_private_mounts() is not None, reason=str(_no_private_mounts()))
def test_a_disk_that_fills_during_a_build(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    """The build directories on a 24 MB file system (a tmpfs over the cache's objdirs, in a
    mount namespace of korch's own): the build of a kernel not yet built runs out of space.
    korch says so, names the place, keeps the build log, leaves no partial artifact and no
    process; the real cache is untouched."""
    objdirs = cache_root() / "objdirs"
    exp = faulty_experiment(tmp_path / "exp", "full-disk")
    script = f'mount -t tmpfs -o size=24m korch-test "{objdirs}" || exit 99; exec "$@"'
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         *korch("build", str(exp), "--variant", "faulty")],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    said = res.stdout + res.stderr
    clear = f"the disk is full where it builds ({objdirs}/" in said and "free space" in said
    faults.record(res.returncode, said, clear, left=len(left_behind(objdirs)))
    assert res.returncode == EXIT_INFRA, said
    assert clear, said
    assert not list((cache_root() / "builds").glob(".*.tmp"))
