"""``korch run``: build, image, boot blocks of every variant, results, report.

The run directory holds everything a later stage, a CI job or a person needs::

    RUNDIR/run.json                 the options, the plan, the command that reproduces the run
    RUNDIR/experiment.yaml          a copy of the experiment file
    RUNDIR/env.json                 host, QEMU, accelerator chosen and why
    RUNDIR/build/<variant>/         metadata.json, config, build.log, bzImage
    RUNDIR/boot/<variant>-<block>/  console.log, qemu.log, qemu-argv.txt
    RUNDIR/results/<variant>.json   every run (see :mod:`orchestrator.results`)
    RUNDIR/aa/...                   the same for an A/A run (``--aa``)
    RUNDIR/cells/<cell>/...         a matrix cell's run (:mod:`orchestrator.stages`)

Results files are rewritten atomically after every run, so an interruption (Ctrl-C,
SIGTERM, a guest that died) keeps every completed run; the file is then marked
``interrupted`` with the failing boot, and ``korch run --resume RUNDIR`` completes what is
missing with the same plan.

A run is a sequence of *blocks*; a block boots every variant once, in an order drawn for it
(:meth:`Plan.block_order`), so slow drift of the host and the position in a block hit every
variant alike. The boot is the unit of replication: runs of one boot share its memory
layout and its noise, so results record each run's block and boot attempt for the
statistics to cluster on. With ``--until-decisive`` the run stops after the first block
whose comparison is decisive (:meth:`Runner.bench`); ``--resume RUNDIR --blocks N``
extends a run, and earlier blocks keep their order.

``korch run`` is the stages one after another on one machine (:meth:`Runner.prepare`, then
:meth:`Runner.build_kernels`, :meth:`Runner.bench`, then the report); ``korch plan``,
``korch build --resume``, ``korch bench`` and ``korch report`` run them one at a time, so CI
jobs can hand the run directory on (see :mod:`orchestrator.stages`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, additions, build, checks, config, hostwatch, image, kconfig, process, vm
from .config import Experiment
from .errors import BootTimeout, GuestError, Interrupted, KorchError, UserError
from .fsutil import (
    atomic_write,
    cache_root,
    now,
    sha256_file,
    write_json,
)
from .plan import (
    Overrides,
    Plan,
    boot_id,
    extend_run,
    format_duration,
    load_plan,
    plan_for,
    plan_from_json,
)
from .results import ResultsFile
from .rundir import GUEST_PACKAGES, RunDir, run_id
from .workloads.api import GUEST_DIR, Outcome, Session, Workload
from .workloads.protocol import RemoteAdapter
from .workloads.registry import get as get_workload


def host_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "host_cpu": cpu,
        "host_cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def qemu_version(qemu: str = "qemu-system-x86_64") -> str:
    process.require(qemu, "qemu-system-x86")
    return process.run([qemu, "--version"]).output.splitlines()[0].strip()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into an exception, so the results are saved and guests stopped."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Runner:
    """Carries out one :class:`Plan` into one run directory."""

    def __init__(
        self,
        exp: Experiment,
        plan: Plan,
        rundir: Path,
        progress: build.Progress,
        reproduce: str,
        cache: Path | None = None,
        nest_aa: bool = True,
    ) -> None:
        self.exp = exp
        self.plan = plan
        # korch run --aa keeps an A/A run in RUNDIR/aa beside the A/B one; a staged A/A run
        # (korch plan --aa) is the whole of its run directory
        self.dirs = RunDir(rundir, plan.aa and nest_aa)
        self.progress = progress
        self.reproduce = reproduce
        self.cache = cache or cache_root()
        self.timings: dict[str, float] = {}
        self.on_boot: Callable[[str], None] | None = None
        # with plan.until_decisive: called after each complete block with the results so
        # far; returns why to stop (decisive) or None to go on
        self.on_block: Callable[[int, dict[str, ResultsFile]], str | None] | None = None
        self.current_boot: str | None = None  # the boot under way, for an interruption

    @property
    def workload(self) -> Workload:
        """The plan's workload (its declaration in orchestrator/workloads)."""
        return get_workload(self.plan.workload_name)

    # -- stages ----------------------------------------------------------------------

    def prepare(self, extra: dict[str, Any] | None = None) -> None:
        """The plan stage: write run.json (the plan, ``extra`` keys) and experiment.yaml.
        A run directory that already holds the same plan is left as it is."""
        additions.guest_files(self.exp.guest)  # a guest package not installed: said first
        self.dirs.base.mkdir(parents=True, exist_ok=True)
        if self.dirs.plan.exists():
            saved = plan_from_json(json.loads(self.dirs.plan.read_text())["plan"])
            if saved != self.plan:
                raise UserError(
                    f"{self.dirs.root} already holds a run with other settings ({self.dirs.plan})",
                    hint="use --resume RUNDIR to complete it, or choose another --out",
                )
        else:
            info: dict[str, Any] = {
                "plan": asdict(self.plan),
                "reproduce": self.reproduce,
                "created": now(),
            }
            if Path(self.exp.path).is_file():
                info["experiment_sha256"] = sha256_file(Path(self.exp.path))
            info["run_id"] = run_id(info)
            write_json(self.dirs.plan, {**info, **(extra or {})})
        copy = self.dirs.root / "experiment.yaml"
        if not copy.exists() and Path(self.exp.path).is_file():
            atomic_write(copy, Path(self.exp.path).read_text())
        # for a bench job on another machine to install before it boots (the workflow
        # passes it to ci/install-deps.sh): the experiment's guest.packages, one per line
        packages = self.dirs.root / GUEST_PACKAGES
        if not packages.exists():
            atomic_write(
                packages,
                "# the experiment's guest.packages: installed on a machine that boots its"
                " guests\n" + "".join(f"{name}\n" for name in self.exp.guest.packages),
            )

    def kernel_names(self, only: list[str] | None = None) -> list[str]:
        """The variants whose kernels the plan boots (``only`` narrows them), in file order."""
        needed = set(self.plan.kernels.values())
        for name in only or []:
            if name not in needed:
                raise UserError(
                    f"the plan in {self.dirs.root} boots no kernel of variant {name!r}",
                    hint=f"its kernels: {', '.join(sorted(needed))}",
                )
        order = [v.name for v in self.exp.variants]
        return sorted(set(only) if only else needed, key=order.index)

    def build_kernels(
        self, only: list[str] | None = None, use_ccache: bool = True
    ) -> dict[str, build.Build]:
        """The build stage: build the plan's kernels and copy them to RUNDIR/build/."""
        start = time.monotonic()
        builder = build.Builder(self.exp, self.cache, self.progress, use_ccache=use_ccache)
        builds = builder.build_all(self.kernel_names(only))
        build.export(builds, self.dirs.root)
        self.timings["build"] = time.monotonic() - start
        return builds

    def exported_kernels(
        self, sides: tuple[str, ...], build_dir: Path | None = None
    ) -> dict[str, build.Build]:
        """The kernels ``sides`` boot, as the build stage left them in ``build_dir``
        (default RUNDIR/build): what a bench job on another machine has."""
        base = build_dir or self.dirs.root / "build"
        return {
            k: build.load_exported(base / k)
            for k in dict.fromkeys(self.plan.kernels[s] for s in sides)
        }

    def guest_image(self) -> image.GuestImage:
        start = time.monotonic()
        self.progress.stage("(image)", "workload programs and guest image")
        extra = self.workload.guest_files(self.plan.params, self.cache, GUEST_DIR)
        extra = additions.merge(extra, additions.guest_files(self.exp.guest))
        img = image.build_image(extra, cache=self.cache)
        self.timings["image"] = time.monotonic() - start
        return img

    def environment(
        self, builds: dict[str, build.Build], img: image.GuestImage, side: str | None = None
    ) -> vm.AccelDecision:
        env_file = self.dirs.base / "env.json"
        cfg = self.vm_config()
        first = builds[self.plan.kernels[side or self.plan.variants[0]]]
        self.progress.stage("(accel)", f"deciding the accelerator ({self.plan.accel})")
        decision = vm.choose_accel(
            self.plan.accel, first.bzimage, img, cfg, workdir=self.dirs.base / "boot" / "kvm-probe"
        )
        facts = dict(
            host_facts(),
            qemu_version=qemu_version(cfg.qemu),
            accel=decision.accel,
            accel_reason=decision.reason,
            korch_version=__version__,
            image=img.content_id,
        )
        if env_file.exists():
            old = json.loads(env_file.read_text())
            facts["earlier_sessions"] = [
                *old.get("earlier_sessions", []),
                {k: old[k] for k in ("accel", "qemu_version", "host", "written") if k in old},
            ]
        facts["written"] = now()
        write_json(env_file, facts)
        self.env = facts
        return decision

    def vm_config(self) -> vm.VMConfig:
        return vm.VMConfig(
            cpus=self.plan.cpus,
            memory=self.plan.memory,
            accel=self.plan.accel,
            boot_timeout_s=self.exp.vm.boot_timeout_s,
        )

    # -- results bookkeeping ---------------------------------------------------------------

    def results_for(self, side: str, kernel: build.Build) -> ResultsFile:
        path = self.dirs.results(side)
        if path.exists():
            res = ResultsFile.load(path)
        else:
            res = ResultsFile(
                self.plan.experiment,
                side,
                self.plan.baseline if not self.plan.aa else self.plan.variants[0],
            )
        meta = kernel.metadata
        res.provenance.update(
            {
                "variant": self.plan.kernels[side],
                "kernel_release": meta["kernel_release"],
                "config_sha256": meta["config_sha256"],
                "kernel_source": (meta.get("source") or {}).get("spec"),
                **self.config_symbols(kernel),
                "build_key": kernel.key,
                "patches": [{"file": p["file"], "subject": p["subject"]} for p in meta["patches"]],
                "accel": self.env["accel"],
                "accel_reason": self.env["accel_reason"],
                "qemu_version": self.env["qemu_version"],
                "vcpus": self.plan.cpus,
                "memory": self.plan.memory,
                "host_cpu": self.env["host_cpu"],
                "host": self.env["host"],
                "korch_version": __version__,
                "reproduce": self.reproduce,
                "workload": self.plan.workload(),
                "checks": [spec.to_json() for spec in self.exp.checks],
                "guest_additions": {
                    "packages": list(self.exp.guest.packages),
                    "files": {f.guest: str(f.host) for f in self.exp.guest.files},
                },
                "design": self.plan.design(),
                **self.run_identity(),
            }
        )
        return res

    def config_symbols(self, kernel: build.Build) -> dict[str, Any]:
        """In a cross-tree experiment, the kernel's .config symbols (the report lists where
        the trees' configurations differ); else nothing."""
        if not self.exp.cross_tree or not kernel.config.is_file():
            return {}
        return {"config_symbols": kconfig.parse_config(kernel.config.read_text())}

    def run_identity(self) -> dict[str, Any]:
        """``run_id``, ``planned_at`` and, in a matrix, ``cell`` (id and settings): what
        the history store needs to file the results under their run."""
        if not self.dirs.plan.exists():
            return {}
        info = self.dirs.info()
        out: dict[str, Any] = {"run_id": info["run_id"], "planned_at": info.get("created")}
        if info.get("cell"):
            out["cell"] = info["cell"]
        if self.plan.shard is not None:
            own = self.plan.own_blocks
            out["shard"] = {
                "index": self.plan.shard,
                "of": self.plan.shards,
                "blocks": [own.start, own.stop - 1],
            }
        return out

    @staticmethod
    def runs_done(res: ResultsFile, boot_id: str) -> int:
        return sum(1 for r in res.runs if r.get("boot") == boot_id)

    def checks_missing(self, res: ResultsFile, boot_id: str, kernel: build.Build) -> list[str]:
        """The experiment's checks that no attempt of boot ``boot_id`` has a result for
        (a run cut short after its timed runs); only those the kernel has a program for."""
        mine = [b for b in res.boots if b.get("id") == boot_id]
        return [
            c.test
            for c in self.exp.checks
            if c.test in kernel.checks and not any(checks.has_result(b, c.test) for b in mine)
        ]

    def boot_done(self, res: ResultsFile, boot_id: str, kernel: build.Build) -> bool:
        """True when boot ``boot_id`` has every run and every check."""
        return self.runs_done(res, boot_id) >= self.plan.runs and not self.checks_missing(
            res, boot_id, kernel
        )

    # -- the main loop ---------------------------------------------------------------------

    def execute(self) -> dict[str, ResultsFile]:
        """Plan, build, then run every missing boot of the plan; the results per side."""
        self.prepare()
        return self.bench(self.build_kernels())

    def bench(
        self, builds: dict[str, build.Build], sides: tuple[str, ...] | None = None
    ) -> dict[str, ResultsFile]:
        """The bench stage: boot ``sides`` (default: every side) block after block with the
        kernels ``builds``, run every missing run; return those sides' results.

        Each block boots the sides in :meth:`Plan.block_order`; boots that already have
        their runs are skipped, so ``--resume`` runs exactly what is missing. The loop ends
        after the plan's blocks, or earlier: when a complete block makes :attr:`on_block`
        give a reason (with ``until_decisive``), or when another block would end past the
        time budget. Why it ended and how many blocks are complete go into every results
        file's ``provenance.design``.
        """
        sides = sides or self.plan.variants
        unknown = [s for s in sides if s not in self.plan.variants]
        if unknown:
            raise UserError(
                f"the plan in {self.dirs.root} has no variant {', '.join(map(repr, unknown))}",
                hint=f"its variants: {', '.join(self.plan.variants)}",
            )
        with self.dirs.lock():
            return self._bench(builds, sides)

    def _bench(
        self, builds: dict[str, build.Build], sides: tuple[str, ...]
    ) -> dict[str, ResultsFile]:
        started = time.monotonic()  # the time budget counts from here
        img = self.guest_image()
        decision = self.environment(builds, img, sides[0])
        stopped = self.stopped_before(sides)
        results = {side: self.results_for(side, builds[self.plan.kernels[side]]) for side in sides}
        for res in results.values():
            res.status, res.interruption = "running", None
            res.save(self.dirs.results(res.variant))
        start = time.monotonic()
        self.current_boot = None
        try:
            with sigterm_as_interrupt():
                stop = stopped or self.run_blocks(results, builds, img, decision, started)
        except BaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                reason = "interrupted (Ctrl-C)"
            self.record_design(results, None)
            for res in results.values():
                res.status = "interrupted"
                res.interruption = {"reason": reason, "boot": self.current_boot, "at": now()}
                res.save(self.dirs.results(res.variant))
            raise
        self.timings["boots_total"] = time.monotonic() - start
        self.record_design(results, stop)
        for res in results.values():
            res.status = "complete"
            res.save(self.dirs.results(res.variant))
        return results

    def run_blocks(
        self,
        results: dict[str, ResultsFile],
        builds: dict[str, build.Build],
        img: image.GuestImage,
        decision: vm.AccelDecision,
        started: float,
    ) -> str:
        """Boot the missing boots block by block; return why the loop ended."""
        plan = self.plan
        took: list[float] = []  # seconds of each block booted whole in this session
        for block in plan.own_blocks:
            order = [s for s in plan.block_order(block) if s in results]
            missing = [
                s
                for s in order
                if not self.boot_done(results[s], boot_id(s, block), builds[plan.kernels[s]])
            ]
            if not missing:
                continue
            over = self.over_budget(block, took, time.monotonic() - started)
            if over:
                return over
            t_block = time.monotonic()
            for side in missing:
                self.current_boot = boot_id(side, block)
                position = plan.block_order(block).index(side)
                boot = (results[side], builds[plan.kernels[side]], img, decision, block, position)
                try:
                    self.one_boot(*boot)
                except (BootTimeout, GuestError) as exc:
                    why = host_trouble(exc)
                    if why is None:
                        raise
                    # The failed attempt stays in the results (the report lists it) with the
                    # runs it completed; the next attempt runs only the missing ones. A
                    # kernel that really does not boot, or stalls by itself, fails again.
                    self.progress.stage(side, f"block {block}: {why}; booting it once more")
                    self.one_boot(*boot)
            self.current_boot = None
            if len(missing) == len(order):
                took.append(time.monotonic() - t_block)
            complete = all(
                self.runs_done(results[s], boot_id(s, block)) >= plan.runs for s in order
            )
            if plan.until_decisive and self.on_block is not None and complete:
                reason = self.on_block(block, results)
                if reason:
                    return reason
        if plan.until_decisive:
            return f"reached the most blocks allowed ({plan.last_block}) without a decisive verdict"
        if plan.shard is not None:
            own = plan.own_blocks
            return f"ran blocks {own.start}-{own.stop - 1}, shard {plan.shard} of {plan.shards}"
        return f"ran the {plan.last_block} planned blocks"

    def over_budget(self, block: int, took: list[float], used_s: float) -> str | None:
        """Why block ``block`` must not start: it would end past the time budget, judged by
        the blocks booted so far (none booted yet: no estimate, so it starts)."""
        if self.plan.budget_s is None or not took:
            return None
        per_block = sum(took) / len(took)
        if used_s + per_block <= self.plan.budget_s:
            return None
        return (
            f"time budget: block {block} would end past {format_duration(self.plan.budget_s)}"
            f" ({used_s:.0f} s used, about {per_block:.0f} s a block)"
        )

    def stopped_before(self, sides: tuple[str, ...]) -> str | None:
        """Why an earlier session of this run ended, when it ended by its own rule (all its
        blocks, a decisive verdict, the time budget) with the number of blocks the plan
        still has: a plain ``--resume`` then starts no block, while ``--resume --blocks N``
        with more blocks goes on."""
        reasons = set()
        for side in sides:
            path = self.dirs.results(side)
            if not path.exists():
                return None
            res = ResultsFile.load(path)
            design = res.provenance.get("design") or {}
            if res.status != "complete" or design.get("blocks") != self.plan.blocks:
                return None
            if not design.get("stop"):
                return None
            reasons.add(str(design["stop"]))
        return reasons.pop() if len(reasons) == 1 else None

    def complete_blocks(self, results: dict[str, ResultsFile]) -> int:
        """How many blocks have every run of every side in ``results``."""
        blocks = (
            self.plan.own_blocks
            if self.plan.shard is not None
            else range(1, max(self.plan.blocks, self.plan.last_block) + 1)
        )
        return sum(
            1
            for block in blocks
            if all(
                self.runs_done(res, boot_id(side, block)) >= self.plan.runs
                for side, res in results.items()
            )
        )

    def record_design(self, results: dict[str, ResultsFile], stop: str | None) -> None:
        """The design as run: the plan's, the blocks completed and why the loop ended."""
        done = self.complete_blocks(results)
        for res in results.values():
            res.provenance["design"] = dict(self.plan.design(), blocks_run=done, stop=stop)

    def one_boot(
        self,
        res: ResultsFile,
        kernel: build.Build,
        img: image.GuestImage,
        decision: vm.AccelDecision,
        block: int,
        position: int,
    ) -> None:
        """Boot ``res``'s side as its boot of ``block`` (``position`` in the block's order)
        and run its missing runs, saving after every run."""
        this_boot = boot_id(res.variant, block)
        done = self.runs_done(res, this_boot)
        # a boot booted again runs only what it lacks: its missing runs, its missing checks
        todo_checks = self.checks_missing(res, this_boot, kernel)
        attempt = 1 + sum(1 for b in res.boots if b.get("id") == this_boot)
        workdir = self.dirs.boot(res.variant, block, attempt)
        if workdir.exists():
            shutil.rmtree(workdir)
        entry: dict[str, Any] = {
            "id": this_boot,
            "attempt": attempt,
            "block": block,
            "position": position,
            "kernel": self.plan.kernels[res.variant],
            "started_at": now(),
            "console": str(workdir.relative_to(self.dirs.root) / "console.log"),
            "error": None,
        }
        res.boots.append(entry)
        where = f"block {block}/{self.plan.last_block}"
        self.progress.stage(res.variant, where + (f" (attempt {attempt})" if attempt > 1 else ""))
        try:
            with vm.Guest(
                kernel.bzimage, img, self.vm_config(), workdir=workdir, accel=decision
            ) as guest:
                entry["boot_s"] = round(guest.boot_s or 0.0, 2)
                self.timings["boot"] = self.timings.get("boot", 0.0) + (guest.boot_s or 0.0)
                t_workload = time.monotonic()
                host_share = hostwatch.HostShare(guest.proc.pid) if guest.proc else None
                entry["kernel_version_string"] = guest.run(
                    "cat /proc/version", timeout=30
                ).stdout.strip()
                res.provenance.setdefault("kernel_version_string", entry["kernel_version_string"])
                self.progress.stage(res.variant, f"{where}: workload")

                def record(outcome: Outcome) -> None:
                    row = dict(
                        outcome.to_json(),
                        boot=this_boot,
                        block=block,
                        attempt=attempt,
                        index=outcome.index,
                        finished_at=now(),
                    )
                    res.runs.append(row)
                    res.save(self.dirs.results(res.variant))
                    self.progress.stage(
                        res.variant,
                        f"{where}: run {outcome.index + 1}/{self.plan.runs}"
                        + (" HANG" if outcome.hang else ""),
                    )

                def check(test: str, result: checks.CheckResult) -> None:
                    entry.setdefault("checks", {})[test] = result.to_json()
                    res.save(self.dirs.results(res.variant))

                session = Session(
                    remote=RemoteAdapter(guest),
                    params=self.plan.params,
                    runs=self.plan.runs - done,
                    first_index=done,
                    duration_s=self.plan.duration_s,
                    vcpus=self.plan.cpus,
                    # run i of block b uses the same seed on every side
                    seed=self.plan.seed + (block - 1) * self.plan.runs + done,
                    guest_dir=GUEST_DIR,
                    on_run=record,
                    selftests=kernel.checks,
                    save_dir=workdir,
                    on_check=check,
                )
                if session.runs > 0:
                    res.provenance.update(self.workload.run(session))
                others = host_share.others() if host_share else None
                if others is not None:
                    entry["host_others_cpu"] = round(others, 3)
                self.timings["workload"] = (
                    self.timings.get("workload", 0.0) + time.monotonic() - t_workload
                )
                self.run_checks(res, kernel, guest, entry, workdir, where, todo_checks)
        except BaseException as exc:
            entry["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            entry["ended_at"] = now()
            res.save(self.dirs.results(res.variant))
            raise
        entry["ended_at"] = now()
        res.save(self.dirs.results(res.variant))

    def run_checks(
        self,
        res: ResultsFile,
        kernel: build.Build,
        guest: vm.Guest,
        entry: dict[str, Any],
        workdir: Path,
        where: str,
        tests: list[str],
    ) -> None:
        """The experiment's correctness checks ``tests``, after the timed runs of this boot
        (so they cannot disturb the timings); their results go into the boot's entry."""
        specs = [c for c in self.exp.checks if c.test in tests]
        if not specs:
            return
        self.progress.stage(res.variant, f"{where}: checks")

        def on_check(test: str, result: checks.CheckResult) -> None:
            entry.setdefault("checks", {})[test] = result.to_json()
            res.save(self.dirs.results(res.variant))
            self.progress.stage(res.variant, f"{where}: {test} {result.status}")

        t_checks = time.monotonic()
        checks.run_checks(
            RemoteAdapter(guest),
            specs,
            kernel.checks,
            save_dir=workdir / "checks",
            on_check=on_check,
        )
        self.timings["checks"] = self.timings.get("checks", 0.0) + time.monotonic() - t_checks


def host_trouble(exc: BaseException) -> str | None:
    """Why a failed boot says more about the host than about the kernel, or None.

    Two failures are worth one more boot: a boot past its deadline (under TCG on a loaded
    host a boot can stall for a minute where every vCPU thread must meet, after 'vgaarb:
    loaded', while the same kernel boots in 4 s otherwise), and an RCU stall on a host that
    did not run the guest (its vCPUs held off the cores, or the report showing RCU's
    grace-period kthread kept from running; seen with two other guests and both cores busy).
    """
    if isinstance(exc, BootTimeout):
        return str(exc).splitlines()[0]
    if isinstance(exc, GuestError) and exc.host_starved:
        return f"RCU stall on a host that did not run the guest ({exc.host_starved})"
    return None


def load_experiment(rundir: Path, plan: Plan, aa: bool = False) -> Experiment:
    """The experiment a saved plan was made from, for the build stage.

    The experiment file named in the plan, when it is still there and unchanged; else the
    embedded default experiment when the plan was made from it (a CI job with korch
    installed elsewhere). The copy in RUNDIR/experiment.yaml is not enough to build: the
    patches it names are relative to the original file.
    """

    recorded = RunDir(rundir, aa).info().get("experiment_sha256")
    exp_file = Path(plan.experiment_file)
    if exp_file.is_file():
        if recorded and sha256_file(exp_file) != recorded:
            raise UserError(
                f"{exp_file} changed since the run in {rundir} was planned",
                hint=f"the planned version is in {rundir / 'experiment.yaml'}; plan again to use the new one",
            )
        return config.load(exp_file)
    default = config.default_experiment_path()
    if recorded and sha256_file(default) == recorded:
        return config.load_default()
    raise UserError(
        f"the run's experiment file {exp_file} is gone",
        hint=f"a copy is in {rundir / 'experiment.yaml'}; run from the checkout that planned the run",
    )


def load_bench_experiment(rundir: Path, plan: Plan, aa: bool = False) -> Experiment:
    """The experiment for booting only: the original file if present, else RUNDIR's copy
    (booting needs its vm settings, never its patches)."""

    with contextlib.suppress(UserError):
        return load_experiment(rundir, plan, aa)
    copy = rundir / "experiment.yaml"
    if not copy.is_file():
        raise UserError(f"{rundir}: experiment.yaml is missing", hint="plan the run again")
    return config.load(copy)


def default_rundir(exp: Experiment, aa: bool) -> Path:
    return Path("runs") / f"{exp.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def reproduce_command(argv: list[str]) -> str:
    return shlex.join(["korch", *argv])


# ---------------------------------------------------------------- command line


@dataclass(frozen=True)
class RunRequest:
    """What ``korch run`` was asked: a new run of an experiment, or ``--resume`` of one.

    ``experiment`` None is the embedded default; ``argv`` is the command line after
    ``korch`` (for the reproduce command); with ``resume`` only ``overrides.blocks`` may be
    given (it extends the run) and the rest comes from the run directory.
    """

    experiment: Path | None = None
    overrides: Overrides = field(default_factory=Overrides)
    out: Path | None = None
    resume: Path | None = None
    argv: tuple[str, ...] = ()
    fail_on: str = "regression"


def plan_from_request(req: RunRequest) -> tuple[Experiment, Plan, Path, str]:
    """Resolve the experiment, plan and run directory of a ``korch run``."""
    from . import config

    o = req.overrides
    if req.resume is not None:
        rundir = req.resume
        refused = (["EXPERIMENT"] if req.experiment else []) + o.given()
        refused += ["--out"] if req.out else []
        if refused:
            raise UserError(
                f"--resume takes the settings saved in {rundir}; drop {', '.join(refused)}",
                hint="--blocks N is the one setting a resumed run takes: it extends the run",
            )
        plan, reproduce = load_plan(rundir, o.aa)
        exp = load_experiment(rundir, plan, o.aa)  # before extending: it must still be there
        if o.blocks is not None:
            plan = extend_run(rundir, plan, o.blocks, o.aa)
            reproduce = RunDir(rundir, o.aa).info().get("reproduce", reproduce)
        return exp, plan, rundir, reproduce
    exp = config.load(req.experiment) if req.experiment else config.load_default()
    plan = plan_for(exp, o)
    rundir = req.out or default_rundir(exp, o.aa)
    # the reproduce command names the run directory even when korch chose it
    full = list(req.argv) if req.out else [*req.argv, "--out", str(rundir)]
    return exp, plan, rundir, reproduce_command(full)


def main(req: RunRequest, console: Any) -> int:
    """``korch run``: the whole pipeline, then the report; returns the exit code."""
    from . import report, stats
    from .ui import progress_for

    exp, plan, rundir, reproduce = plan_from_request(req)
    console.print(f"run directory: {rundir}")
    baseline = plan.variants[0] if plan.aa else plan.baseline

    def on_block(block: int, results: dict[str, ResultsFile]) -> str | None:
        """Every candidate's headline verdict after ``block``; stop when all are decisive."""
        comp = stats.compare(list(results.values()), stats.StatsOptions(baseline=baseline))
        lines = []
        decisive = True
        for c in comp.candidates:
            h = c.headline
            lines.append(
                f"block {block}: {c.candidate} vs {comp.baseline}: {stats.describe_headline(h)}"
            )
            if h is None or h.verdict not in stats.DECISIVE:
                decisive = False
        for line in lines:
            console.print(line)
        return f"decisive after {block} blocks" if decisive else None

    start = time.monotonic()
    runner: Runner | None = None
    try:
        with progress_for(console) as progress:
            runner = Runner(exp, plan, rundir, progress, reproduce)
            if plan.until_decisive:
                runner.on_block = on_block
            results = runner.execute()
    except (KorchError, KeyboardInterrupt, OSError) as exc:
        results_dir = RunDir(rundir, plan.aa).results_dir
        if isinstance(exc, UserError):
            pass  # the input is wrong: resuming the same run would fail the same way
        elif any(results_dir.glob("*.json")):
            console.print(
                f"[bold]completed runs are kept in {results_dir}; "
                f"finish with: korch run --resume {rundir}{' --aa' if plan.aa else ''}[/]"
            )
        raise
    stop = next(iter(results.values())).provenance["design"]["stop"]
    console.print(f"blocks: {stop}")
    t_report = time.monotonic()
    out = RunDir(rundir, plan.aa).base
    options = report.ReportOptions(
        stats=stats.StatsOptions(baseline=baseline),
        console=console,
        report_command=shlex.join(["korch", "report", str(out)]),
        source_dir=out,
    )
    comparison = report.write_reports(out, list(results.values()), options)
    timings = dict(
        runner.timings, report=time.monotonic() - t_report, total=time.monotonic() - start
    )
    write_json(out / "timings.json", {k: round(v, 2) for k, v in timings.items()})
    console.print(
        "stages: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"\nreports written to {out}"
    )
    return report.exit_code(comparison, req.fail_on)
