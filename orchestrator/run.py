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
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import __version__, build, checks, config, hostwatch, image, kconfig, process, vm
from .config import Experiment
from .errors import BootTimeout, GuestError, Interrupted, KorchError, UserError
from .fsutil import (
    atomic_write,
    cache_root,
    sha256_file,
    write_json,
)
from .results import ResultsFile
from .rundir import CELLS_DIR, DEFAULT_CELL, RunDir, run_id
from .workloads.maps_contention import driver
from .workloads.maps_contention.binaries import compile_workload
from .workloads.protocol import RemoteAdapter

GUEST_DIR = "/opt/korch"  # the workload's programs are baked into the image under here


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Plan:
    """What a run does; saved in run.json so that ``--resume`` does exactly the same."""

    experiment: str
    experiment_file: str
    variants: tuple[str, ...]  # the sides
    kernels: dict[str, str]  # side -> variant whose kernel it boots (differs for --aa)
    baseline: str
    blocks: int  # each side boots once per block; with until_decisive, the most blocks
    runs: int  # per boot
    duration_s: float
    region_mb: int
    busy_ms: int
    procfile: str
    cpus: int
    memory: str
    accel: str
    seed: int
    aa: bool
    headline: str | None = None
    order_seed: int = 1  # draws the order of the sides in each block
    smallest_effect_pct: float = 5.0  # the smallest change of the headline worth detecting
    until_decisive: bool = False  # stop after the first block whose comparison is decisive
    max_blocks: int | None = None  # with until_decisive: the most blocks to run
    budget_s: float | None = None  # start no block that would end past this (bench stage)
    shards: int = 1  # bench jobs the blocks are split into (korch plan --shards)
    shard: int | None = None  # the one shard this plan runs (1-based); None: every block

    def workload(self) -> dict[str, Any]:
        return {
            "name": "maps-contention",
            "runs": self.runs,
            "blocks": self.blocks,
            "duration_s": self.duration_s,
            "region_mb": self.region_mb,
            "busy_ms": self.busy_ms,
            "procfile": self.procfile,
            "headline": self.headline,
            "smallest_effect_pct": self.smallest_effect_pct,
        }

    @property
    def last_block(self) -> int:
        """The last block the bench loop may run: ``max_blocks`` bounds a sequential run."""
        if self.until_decisive and self.max_blocks:
            return self.max_blocks
        return self.blocks

    def shard_blocks(self, shard: int) -> range:
        """The blocks of ``shard`` (1-based) out of :attr:`shards`: contiguous, as even as
        can be, and whole chunks of k = len(sides) blocks where there are enough, so each
        shard keeps the balanced order (every side first once per chunk)."""
        if not 1 <= shard <= self.shards:
            raise ValueError(f"shard {shard} of {self.shards}")
        k = max(1, len(self.variants))
        unit = k if self.blocks >= self.shards * k else 1
        ends = [0]
        for i in range(1, self.shards):
            end = round(i * self.blocks / self.shards / unit) * unit
            # every shard keeps at least one block
            end = min(max(end, ends[-1] + 1), self.blocks - (self.shards - i))
            ends.append(end)
        ends.append(self.blocks)
        return range(ends[shard - 1] + 1, ends[shard] + 1)

    @property
    def own_blocks(self) -> range:
        """The blocks this plan boots: its shard's, else 1..:attr:`last_block`."""
        if self.shard is not None:
            return self.shard_blocks(self.shard)
        return range(1, self.last_block + 1)

    def design(self) -> dict[str, Any]:
        """How the runs were laid out, for the statistics: a sequential run (stopped when
        decisive) needs a stricter level than a fixed number of blocks."""
        return {
            "blocks": self.blocks,
            "runs": self.runs,
            "order_seed": self.order_seed,
            "sequential": {"max_blocks": self.last_block} if self.until_decisive else None,
        }

    def block_order(self, block: int) -> tuple[str, ...]:
        """The sides in the order they boot in ``block`` (1-based).

        Balanced: blocks come in chunks of k = len(sides); the k blocks of a chunk get the
        k cyclic rotations of a permutation drawn for the chunk, in a random order, so each
        side boots first (and in every other position) once per chunk, and a drift along a
        block cannot favour a side. The draw depends only on the order seed, the chunk and
        the sides, so extending a run with more blocks leaves earlier blocks as they were.
        """
        if block < 1:
            raise ValueError(f"blocks are numbered from 1 (got {block})")
        k = len(self.variants)
        if k < 2:
            return self.variants
        chunk, slot = divmod(block - 1, k)
        rng = random.Random(f"{self.order_seed}:{chunk}")
        perm = list(self.variants)
        rng.shuffle(perm)
        rotations = [tuple(perm[i:] + perm[:i]) for i in range(k)]
        rng.shuffle(rotations)
        return rotations[slot]

    def schedule(self) -> list[tuple[str, int]]:
        """Every boot of blocks 1..blocks as (side, block), in boot order."""
        return [(side, b) for b in range(1, self.blocks + 1) for side in self.block_order(b)]


def boot_id(side: str, block: int) -> str:
    """A boot's id, the same on every attempt: ``<side>-<block>``."""
    return f"{side}-{block}"


def plan_from_json(saved: dict[str, Any]) -> Plan:
    """A plan as run.json holds it; plans written before blocks were named ``boots``
    (boots per variant, which is what a block count is) read as blocks."""
    fields = dict(saved)
    fields["variants"] = tuple(fields["variants"])
    if "boots" in fields:
        old = fields.pop("boots")
        fields.setdefault("blocks", old)
    return Plan(**fields)


# command-line values beyond these are typos, not plans (as in the experiment's schema)
LIMITS = {
    "--runs": config.MAX_RUNS,
    "--blocks": config.MAX_BLOCKS,
    "--max-blocks": config.MAX_BLOCKS,
    "--duration": config.MAX_DURATION_S,
}


def make_plan(
    exp: Experiment,
    *,
    runs: int | None = None,
    blocks: int | None = None,
    duration_s: float | None = None,
    variants: list[str] | None = None,
    accel: str | None = None,
    aa: bool = False,
    until_decisive: bool = False,
    max_blocks: int | None = None,
    budget_s: float | None = None,
    shards: int | None = None,
) -> Plan:
    """The experiment's settings with the command line's overrides applied and checked.

    With ``until_decisive`` the plan's blocks are the most the run may take: ``max_blocks``
    when given, else the experiment's (or ``--blocks``) number."""
    w = exp.workload
    problems = []
    for name, value in (
        ("--runs", runs),
        ("--blocks", blocks),
        ("--duration", duration_s),
        ("--max-blocks", max_blocks),
        ("--budget", budget_s),
        ("--shards", shards),
    ):
        if value is None:
            continue
        if not math.isfinite(value) or value <= 0:
            problems.append(f"{name} must be a finite number greater than zero (got {value})")
        elif name in LIMITS and value > LIMITS[name]:
            problems.append(f"{name} must be at most {LIMITS[name]:g} (got {value:g})")
    if problems:
        raise UserError("; ".join(problems))
    if max_blocks is not None and not until_decisive:
        raise UserError(
            "--max-blocks bounds a run that stops when decisive",
            hint="add --until-decisive, or set a fixed number of blocks with --blocks",
        )
    n_blocks = blocks or w.blocks
    if until_decisive:
        n_blocks = max_blocks or n_blocks
    if shards is not None and shards > n_blocks:
        raise UserError(
            f"--shards {shards} is more than the {n_blocks} blocks to split",
            hint="every shard needs a block of its own: lower --shards or raise --blocks",
        )
    if shards is not None and shards > 1 and until_decisive:
        raise UserError(
            "--until-decisive needs every block's results after each block, which separate"
            " bench jobs do not have",
            hint="run it with korch run on one machine, or give shards a fixed --blocks",
        )
    side_names: tuple[str, ...]
    if aa:
        side_names = (exp.baseline, f"{exp.baseline}-aa")
        kernels = {side_names[0]: exp.baseline, side_names[1]: exp.baseline}
    else:
        names = (
            [exp.variant(v).name for v in variants] if variants else [v.name for v in exp.variants]
        )
        side_names = tuple(dict.fromkeys(names))
        kernels = {n: n for n in side_names}
    if not aa and len(side_names) > 1 and exp.baseline not in side_names:
        raise UserError(
            f"--variant leaves out the baseline {exp.baseline!r}; a comparison needs it",
            hint=f"add --variant {exp.baseline}",
        )
    busy = w.busy_ms
    if busy != int(busy):
        raise UserError(
            f"{exp.path}: workload.busy_ms must be a whole number of milliseconds (got {busy})"
        )
    return Plan(
        experiment=exp.name,
        experiment_file=str(exp.path),
        variants=side_names,
        kernels=kernels,
        baseline=exp.baseline,
        blocks=n_blocks,
        runs=runs or w.runs,
        duration_s=float(duration_s or w.duration_s),
        region_mb=w.region_mb,
        busy_ms=int(busy),
        procfile=w.procfile,
        cpus=exp.vm.cpus,
        memory=exp.vm.memory,
        accel=accel or exp.vm.accel,
        seed=1,
        aa=aa,
        headline=w.headline,
        order_seed=1,
        smallest_effect_pct=float(w.smallest_effect_pct),
        until_decisive=until_decisive,
        max_blocks=n_blocks if until_decisive else None,
        budget_s=float(budget_s) if budget_s is not None else None,
        shards=shards or 1,
    )


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

    # -- stages ----------------------------------------------------------------------

    def prepare(self, extra: dict[str, Any] | None = None) -> None:
        """The plan stage: write run.json (the plan, ``extra`` keys) and experiment.yaml.
        A run directory that already holds the same plan is left as it is."""
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
        binaries = compile_workload(self.cache)
        extra = {f"{GUEST_DIR}/bin/{name}": path for name, path in binaries.items()}
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
                s for s in order if self.runs_done(results[s], boot_id(s, block)) < plan.runs
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
        params = driver.Params(
            runs=self.plan.runs - done,
            duration_s=self.plan.duration_s,
            region_mb=self.plan.region_mb,
            busy_ms=self.plan.busy_ms,
            procfile=self.plan.procfile,
            vcpus=self.plan.cpus,
            # run i of block b uses the same seed on every side
            seed=self.plan.seed + (block - 1) * self.plan.runs + done,
        )
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

                def record(outcome: driver.RunOutcome) -> None:
                    row = dict(
                        outcome.to_json(),
                        boot=this_boot,
                        block=block,
                        attempt=attempt,
                        index=done + outcome.index,
                        finished_at=now(),
                    )
                    res.runs.append(row)
                    res.save(self.dirs.results(res.variant))
                    self.progress.stage(
                        res.variant,
                        f"{where}: run {done + outcome.index + 1}/{self.plan.runs}"
                        + (" HANG" if outcome.hang else ""),
                    )

                result = driver.run_workload(
                    RemoteAdapter(guest), params, guest_dir=GUEST_DIR, on_run=record
                )
                res.provenance["placement"] = asdict(result.placement)
                others = host_share.others() if host_share else None
                if others is not None:
                    entry["host_others_cpu"] = round(others, 3)
                self.timings["workload"] = (
                    self.timings.get("workload", 0.0) + time.monotonic() - t_workload
                )
                self.run_checks(res, kernel, guest, entry, workdir, where)
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
    ) -> None:
        """The experiment's correctness checks, after the timed runs of this boot (so they
        cannot disturb the timings); their results go into the boot's entry."""
        if not self.exp.checks or not kernel.checks:
            return
        self.progress.stage(res.variant, f"{where}: checks")

        def on_check(test: str, result: checks.CheckResult) -> None:
            entry.setdefault("checks", {})[test] = result.to_json()
            res.save(self.dirs.results(res.variant))
            self.progress.stage(res.variant, f"{where}: {test} {result.status}")

        t_checks = time.monotonic()
        checks.run_checks(
            RemoteAdapter(guest),
            self.exp.checks,
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


def load_plan(rundir: Path, aa: bool = False) -> tuple[Plan, str]:
    """The plan and reproduce command saved in a run directory (for ``--resume``)."""
    obj = RunDir(rundir, aa).info()
    return plan_from_json(obj["plan"]), obj.get("reproduce", "")


def extend_run(rundir: Path, plan: Plan, blocks: int, aa: bool = False) -> Plan:
    """``korch run --resume RUNDIR --blocks N``: raise a run's blocks to N in its run.json
    (and its matrix cells' run.json) so that the resumed run boots the missing blocks.

    Earlier blocks keep their order (it depends only on the order seed and the block's
    chunk) and the run keeps its run id; run.json records the extension, and the
    reproduce command gains ``--blocks N``."""
    if blocks < plan.blocks:
        raise UserError(
            f"--blocks {blocks} is fewer than the {plan.blocks} blocks of the run in {rundir}",
            hint=f"give --blocks {plan.blocks} or more; a run is extended, never cut",
        )
    if blocks == plan.blocks:
        return plan

    base = RunDir(rundir, aa).base
    where = [base]
    for cell in RunDir(rundir, aa).info().get("cells") or {}:
        if cell != DEFAULT_CELL:
            where.append(base / CELLS_DIR / cell)
    for d in where:
        _extend_plan_file(RunDir(d).plan, blocks)
    return _extended(plan, blocks)


def _extended(plan: Plan, blocks: int) -> Plan:
    """The plan with ``blocks`` blocks. An extended run is sequential from then on: the
    decision to add blocks was taken after looking at the first ones, so the statistics must
    use the level that holds over every look (and the run may stop once decisive)."""
    return replace(plan, blocks=blocks, until_decisive=True, max_blocks=blocks)


def _extend_plan_file(path: Path, blocks: int) -> None:
    """Rewrite one run.json (atomically) with its plan extended to ``blocks``."""
    obj = RunDir(path.parent).info()  # with the run id fixed before the plan changes
    old = plan_from_json(obj["plan"])
    obj["plan"] = asdict(_extended(old, blocks))
    obj["extended"] = [*obj.get("extended", []), {"blocks": [old.blocks, blocks], "at": now()}]
    if obj.get("reproduce"):
        obj["reproduce"] = shlex.join([*shlex.split(obj["reproduce"]), "--blocks", str(blocks)])
    write_json(path, obj)


def load_experiment(rundir: Path, plan: Plan, aa: bool = False) -> Experiment:
    """The experiment a saved plan was made from, for the build stage.

    The experiment file named in the plan, when it is still there and unchanged; else the
    embedded default experiment when the plan was made from it (a CI job with korch
    installed elsewhere). The copy in RUNDIR/experiment.yaml is not enough to build: the
    patches it names are relative to the original file.
    """
    from . import config

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
    from . import config

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


def with_overrides(plan: Plan, **kw: Any) -> Plan:
    return replace(plan, **{k: v for k, v in kw.items() if v is not None})


DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30m``, ``90s``, ``1h`` or plain seconds (``600``, ``12.5``), as seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smh]?)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise UserError(
            f"--budget {text!r} is not a duration",
            hint="give a positive number of seconds, or one with a unit: 90s, 30m, 1h",
        )
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest of ``1h``, ``30m``, ``90s`` that says ``seconds`` exactly."""
    for unit in ("h", "m"):
        if seconds % DURATION_UNITS[unit] == 0:
            return f"{seconds / DURATION_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- command line


def plan_for_args(exp: Experiment, args: Any) -> Plan:
    """The plan for ``exp`` with the overrides of ``korch run`` or ``korch plan`` applied."""
    budget = getattr(args, "budget", None)
    return make_plan(
        exp,
        runs=args.runs,
        blocks=args.blocks,
        duration_s=args.duration,
        variants=args.variant,
        accel=args.accel,
        aa=getattr(args, "aa", False),
        until_decisive=getattr(args, "until_decisive", False),
        max_blocks=getattr(args, "max_blocks", None),
        budget_s=parse_duration(budget) if budget is not None else None,
        shards=getattr(args, "shards", None),
    )


# the options of korch run that change a plan, which --resume takes from the run directory
# (--blocks is the exception: it extends the run)
RESUME_REFUSES = (
    "experiment", "runs", "duration", "variant", "accel", "out", "until_decisive",
    "max_blocks", "budget", "shards",
)  # fmt: skip


def plan_from_args(args: Any, argv: list[str]) -> tuple[Experiment, Plan, Path, str]:
    """Resolve the experiment, plan and run directory from ``korch run`` arguments."""
    from . import config

    if args.resume:
        rundir = Path(args.resume)
        overrides = [n for n in RESUME_REFUSES if getattr(args, n, None)]
        if overrides:
            names = [
                "EXPERIMENT" if o == "experiment" else "--" + o.replace("_", "-") for o in overrides
            ]
            raise UserError(
                f"--resume takes the settings saved in {rundir}; drop {', '.join(names)}",
                hint="--blocks N is the one setting a resumed run takes: it extends the run",
            )
        plan, reproduce = load_plan(rundir, args.aa)
        exp = load_experiment(rundir, plan, args.aa)  # before extending: it must still be there
        if getattr(args, "blocks", None) is not None:
            plan = extend_run(rundir, plan, args.blocks, args.aa)
            reproduce = RunDir(rundir, args.aa).info().get("reproduce", reproduce)
        return exp, plan, rundir, reproduce
    exp = config.load(Path(args.experiment)) if args.experiment else config.load_default()
    plan = plan_for_args(exp, args)
    rundir = Path(args.out) if args.out else default_rundir(exp, args.aa)
    # the reproduce command names the run directory even when korch chose it
    full = argv if args.out else [*argv, "--out", str(rundir)]
    return exp, plan, rundir, reproduce_command(full)


def main(args: Any, console: Any) -> int:
    """``korch run``: the whole pipeline, then the report; returns the exit code."""
    from . import report, stats
    from .ui import progress_for

    exp, plan, rundir, reproduce = plan_from_args(args, args.argv)
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
    return report.exit_code(comparison, getattr(args, "fail_on", "regression"))
