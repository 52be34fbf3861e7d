"""``korch boot``: one variant of an experiment, built (or taken from the cache) and booted.

The command line stays thin: this module turns an experiment and a variant name into a
kernel and a :class:`~orchestrator.vm.VMConfig`, and hands them to
:func:`orchestrator.vm.boot_and_run`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from . import additions, build, vm
from .config import Experiment, VmSpec
from .fsutil import cache_root
from .ui import progress_for
from .workloads.api import GUEST_DIR


def vm_config(spec: VmSpec, *, accel: str | None = None) -> vm.VMConfig:
    """The experiment's ``vm:`` section as a :class:`~orchestrator.vm.VMConfig`."""
    return vm.VMConfig(
        cpus=spec.cpus,
        memory=spec.memory,
        accel=accel or spec.accel,
        boot_timeout_s=spec.boot_timeout_s,
    )


def boot_variant(
    exp: Experiment,
    variant: str | None,
    command: list[str] | None,
    *,
    console: Console,
    accel: str | None = None,
    timeout: float | None = None,
    workdir: Path | None = None,
    show_console: bool = False,
) -> int:
    """Build ``variant`` (default: the baseline) if needed, boot it and run ``command``.

    ``command`` words are joined with spaces and run by the guest's shell, as ``ssh`` does,
    so ``-- 'ls /proc | wc -l'`` works. Without a command, an interactive shell opens on
    the terminal. Returns the command's (or the shell's) exit status.
    """
    name = variant or exp.baseline
    exp.variant(name)  # an unknown name is a ConfigError that lists the variants
    if not command:
        vm.require_terminal()  # before a build, not after it
    # the workload's files (its programs, a command's files) where korch run puts them, so
    # that a command can be tried by hand; a package not installed is said before a build
    w = exp.workload
    own = w.declaration.guest_files(w.params, cache_root(), GUEST_DIR)
    extra = additions.merge(own, additions.guest_files(exp.guest))
    with progress_for(console) as progress:
        built = build.Builder(exp, cache_root(), progress).build_all([name])[name]
    return vm.boot_and_run(
        built.bzimage,
        " ".join(command) if command else None,
        config=vm_config(exp.vm, accel=accel),
        extra_files=extra or None,
        workdir=workdir,
        timeout=timeout,
        echo_console=show_console,
    )
