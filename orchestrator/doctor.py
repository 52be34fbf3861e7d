"""``korch doctor``: is this machine ready to build kernels and boot them in QEMU?

Each check says what it found and, when something is missing, which Debian/Ubuntu package
provides it; the summary prints one ``apt-get install`` line for all of them. KVM is judged
by a real probe boot when a kernel is given (a present /dev/kvm is not proof: a PVM host hangs
or crashes mainline guests); without one, the host's facts are reported and TCG is assumed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import image, process, vm
from .errors import EXIT_INFRA, EXIT_OK, KorchError
from .fsutil import cache_root

MIN_FREE_GB = 10.0  # a source tree, two out-of-tree builds and the ccache


@dataclass(frozen=True)
class Check:
    """One line of the report. ``required`` checks fail the doctor; others only warn."""

    name: str
    ok: bool
    detail: str
    package: str | None = None
    required: bool = True


def _first_line(argv: list[str]) -> str:
    try:
        result = process.run(argv, check=False, timeout=15)
    except KorchError:
        return ""
    return next((line.strip() for line in result.output.splitlines() if line.strip()), "")


def check_tool(
    name: str, tool: str, package: str, *, version: str | None = "--version", required: bool = True
) -> Check:
    """A program on PATH, with the first line of its version output (``version=None``: path)."""
    path = shutil.which(tool)
    if path is None:
        return Check(name, False, f"{tool} not found on PATH", package, required)
    found = _first_line([path, version]) if version else ""
    return Check(name, True, found or path, package, required)


def check_file(name: str, path: Path, package: str, *, required: bool = True) -> Check:
    """A file some package installs (a header, a helper binary)."""
    if path.exists():
        return Check(name, True, str(path), package, required)
    return Check(name, False, f"{path} is missing", package, required)


def image_checks() -> list[Check]:
    """The host binaries the default guest image copies (from its recipe), and dropbearkey."""
    checks = []
    try:
        recipe = image.load_recipe()
    except KorchError as exc:
        return [Check("guest image recipe", False, exc.message)]
    for binary in recipe.binaries:
        checks.append(check_file(f"guest {binary.host.name}", binary.host, binary.package))
    checks.append(
        check_tool("dropbearkey (host keys)", "dropbearkey", "dropbear-bin", version=None)
    )
    checks.append(check_tool("ldd (guest libraries)", "ldd", "libc-bin"))
    return checks


def check_kvm(kernel: Path | None = None, *, probe_timeout_s: float = 20.0) -> Check:
    """Can QEMU use KVM? With ``kernel``, decided by the probe boot ``accel: auto`` uses."""
    facts = vm.kvm_facts()
    causes = facts.causes()
    if kernel is None:
        if causes:
            detail = f"not usable, TCG will be used: {'; '.join(causes)}"
            return Check("KVM", False, detail, None, required=False)
        return Check(
            "KVM",
            True,
            "/dev/kvm usable and the CPU has "
            + (facts.cpu_flag or "?")
            + " (give --kernel to confirm with a probe boot)",
            None,
            required=False,
        )
    if not facts.accessible:
        return Check("KVM", False, f"not usable, TCG will be used: {facts.explain()}", None, False)
    try:
        decision = vm.choose_accel(
            "auto",
            kernel,
            image.build_image(),
            vm.VMConfig(probe_timeout_s=probe_timeout_s),
        )
    except KorchError as exc:
        return Check("KVM", False, f"probe could not run: {exc.message}", None, False)
    return Check("KVM", decision.accel == "kvm", decision.reason, None, required=False)


def check_disk(path: Path | None = None, min_free_gb: float = MIN_FREE_GB) -> Check:
    """Free space where the cache lives (sources, builds, ccache, images)."""
    where = path or cache_root()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    detail = f"{free_gb:.1f} GB free for {where}"
    if free_gb < min_free_gb:
        return Check("free disk", False, f"{detail} (want {min_free_gb:.0f} GB)", None)
    return Check("free disk", True, detail, None)


def run_checks(kernel: Path | None = None) -> list[Check]:
    """Every check, in report order."""
    checks = [
        check_tool("QEMU", "qemu-system-x86_64", "qemu-system-x86"),
        check_tool("C compiler", "gcc", "gcc"),
        check_tool("make", "make", "make"),
        check_tool("flex", "flex", "flex"),
        check_tool("bison", "bison", "bison"),
        check_tool("bc", "bc", "bc"),
        check_file("libelf headers", Path("/usr/include/libelf.h"), "libelf-dev"),
        check_file("OpenSSL headers", Path("/usr/include/openssl/opensslv.h"), "libssl-dev"),
        check_tool("ccache", "ccache", "ccache", required=False),
        check_tool("git", "git", "git"),
        check_tool("cpio", "cpio", "cpio"),
        *image_checks(),
        check_kvm(kernel),
        check_disk(),
    ]
    return checks


def missing_packages(checks: Iterable[Check]) -> list[str]:
    """apt package names that would fix the failed checks."""
    return sorted({c.package for c in checks if not c.ok and c.package})


def run_doctor(console: Console, kernel: Path | None = None) -> int:
    """Print the report; exit code 0 when every required check passes, else 2."""
    checks = run_checks(kernel)
    table = Table("check", "", "found", box=None)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]warn[/]")
        table.add_row(c.name, mark, c.detail)
    console.print(table)
    packages = missing_packages(checks)
    if packages:
        console.print(f"install: sudo apt-get install {' '.join(packages)}", markup=False)
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        console.print(f"{len(failed)} required check(s) failed", style="red")
        return EXIT_INFRA
    console.print("ready", style="green")
    return EXIT_OK
