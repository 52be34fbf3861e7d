"""``korch run``: build, image, boot rounds with variants interleaved, results, report.

The run directory holds everything a later stage, a CI job or a person needs::

    RUNDIR/run.json                 the options, the plan, the command that reproduces the run
    RUNDIR/experiment.yaml          a copy of the experiment file
    RUNDIR/env.json                 host, QEMU, accelerator chosen and why
    RUNDIR/build/<variant>/         metadata.json, config, build.log, bzImage
    RUNDIR/boot/<variant>-<n>/      console.log, qemu.log, qemu-argv.txt
    RUNDIR/results/<variant>.json   every run (see :mod:`orchestrator.results`)
    RUNDIR/aa/...                   the same for an A/A run (``--aa``)
    RUNDIR/cells/<cell>/...         a matrix cell's run (:mod:`orchestrator.stages`)

Results files are rewritten atomically after every run, so an interruption (Ctrl-C,
SIGTERM, a guest that died) keeps every completed run; the file is then marked
``interrupted`` with the failing boot, and ``korch run --resume RUNDIR`` completes what is
missing with the same plan.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import __version__, build, image, process, vm
from .config import Experiment
from .errors import KorchError, UserError
from .fsutil import atomic_write, cache_root, sha256_file, stable_hash, write_json
from .results import ResultsFile
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
    variants: tuple[str, ...]  # the sides, in interleaving order
    kernels: dict[str, str]  # side -> variant whose kernel it boots (differs for --aa)
    baseline: str
    boots: int
    runs: int
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

    def workload(self) -> dict[str, Any]:
        return {
            "name": "maps-contention",
            "runs": self.runs,
            "boots": self.boots,
            "duration_s": self.duration_s,
            "region_mb": self.region_mb,
            "busy_ms": self.busy_ms,
            "procfile": self.procfile,
            **({"headline": self.headline} if self.headline else {}),
        }

    def schedule(self) -> list[tuple[str, int]]:
        """Boots in order, variants interleaved (A B A B ...)."""
        return [(side, n) for n in range(1, self.boots + 1) for side in self.variants]


def make_plan(
    exp: Experiment,
    *,
    runs: int | None = None,
    boots: int | None = None,
    duration_s: float | None = None,
    variants: list[str] | None = None,
    accel: str | None = None,
    aa: bool = False,
) -> Plan:
    """The experiment's settings with the command line's overrides applied and checked."""
    w = exp.workload
    problems = []
    for name, value in (("--runs", runs), ("--boots", boots), ("--duration", duration_s)):
        if value is not None and value <= 0:
            problems.append(f"{name} must be greater than zero (got {value})")
    if problems:
        raise UserError("; ".join(problems))
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
        boots=boots or w.boots,
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
    )


class RunDir:
    """Paths inside a run directory (``aa`` runs live in RUNDIR/aa)."""

    def __init__(self, root: Path, aa: bool = False) -> None:
        self.root = root
        self.base = root / "aa" if aa else root

    @property
    def plan(self) -> Path:
        return self.base / "run.json"

    def results(self, side: str) -> Path:
        return self.base / "results" / f"{side}.json"

    def info(self) -> dict[str, Any]:
        """run.json: the plan, the reproduce command, when it was made, the run id."""
        if not self.plan.exists():
            raise UserError(
                f"{self.root} holds no korch run ({self.plan} is missing)",
                hint="give the RUNDIR that 'korch run' or 'korch plan' wrote",
            )
        obj: dict[str, Any] = json.loads(self.plan.read_text())
        obj.setdefault("run_id", run_id(obj))
        return obj

    def boot(self, side: str, n: int, attempt: int) -> Path:
        suffix = f".{attempt}" if attempt > 1 else ""
        return self.base / "boot" / f"{side}-{n}{suffix}"


def run_id(info: dict[str, Any]) -> str:
    """A run's stable id: its plan and the moment it was planned. Every copy of the run
    directory (CI artifacts, the cells of a matrix) carries the same id, which the history
    store uses to add a night once."""
    return stable_hash({"created": info.get("created"), "plan": info.get("plan")})[:16]


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


class Interrupted(KorchError):
    """SIGTERM or Ctrl-C during a run; what was completed is saved."""

    exit_code = 130


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
    ) -> None:
        self.exp = exp
        self.plan = plan
        self.dirs = RunDir(rundir, plan.aa)
        self.progress = progress
        self.reproduce = reproduce
        self.cache = cache or cache_root()
        self.timings: dict[str, float] = {}
        self.on_boot: Callable[[str], None] | None = None

    # -- stages ----------------------------------------------------------------------

    def prepare(self, extra: dict[str, Any] | None = None) -> None:
        """The plan stage: write run.json (the plan, ``extra`` keys) and experiment.yaml.
        A run directory that already holds the same plan is left as it is."""
        self.dirs.base.mkdir(parents=True, exist_ok=True)
        if self.dirs.plan.exists():
            saved = json.loads(self.dirs.plan.read_text())["plan"]
            saved["variants"] = tuple(saved["variants"])
            if Plan(**saved) != self.plan:
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
                **self.run_identity(),
            }
        )
        return res

    def run_identity(self) -> dict[str, Any]:
        """``run_id``, ``planned_at`` and, in a matrix, ``cell`` (id and settings): what
        the history store needs to file the results under their run."""
        if not self.dirs.plan.exists():
            return {}
        info = self.dirs.info()
        out: dict[str, Any] = {"run_id": info["run_id"], "planned_at": info.get("created")}
        if info.get("cell"):
            out["cell"] = info["cell"]
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
        """The bench stage: boot ``sides`` (default: every side, interleaved A B A B) with
        the kernels ``builds``, run every missing run; return those sides' results."""
        sides = sides or self.plan.variants
        unknown = [s for s in sides if s not in self.plan.variants]
        if unknown:
            raise UserError(
                f"the plan in {self.dirs.root} has no variant {', '.join(map(repr, unknown))}",
                hint=f"its variants: {', '.join(self.plan.variants)}",
            )
        img = self.guest_image()
        decision = self.environment(builds, img, sides[0])
        results = {side: self.results_for(side, builds[self.plan.kernels[side]]) for side in sides}
        for res in results.values():
            res.status, res.interruption = "running", None
            res.save(self.dirs.results(res.variant))
        start = time.monotonic()
        current: tuple[str, str] | None = None
        try:
            with sigterm_as_interrupt():
                for side, n in self.plan.schedule():
                    if side not in results:
                        continue
                    res = results[side]
                    boot_id = f"{side}-{n}"
                    if self.runs_done(res, boot_id) >= self.plan.runs:
                        continue
                    current = (side, boot_id)
                    self.one_boot(res, builds[self.plan.kernels[side]], img, decision, boot_id, n)
                current = None
        except BaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                reason = "interrupted (Ctrl-C)"
            for res in results.values():
                res.status = "interrupted"
                res.interruption = {
                    "reason": reason,
                    "boot": current[1] if current else None,
                    "at": now(),
                }
                res.save(self.dirs.results(res.variant))
            raise
        self.timings["boots_total"] = time.monotonic() - start
        for res in results.values():
            res.status = "complete"
            res.save(self.dirs.results(res.variant))
        return results

    def one_boot(
        self,
        res: ResultsFile,
        kernel: build.Build,
        img: image.GuestImage,
        decision: vm.AccelDecision,
        boot_id: str,
        n: int,
    ) -> None:
        done = self.runs_done(res, boot_id)
        attempt = 1 + sum(1 for b in res.boots if b.get("id") == boot_id)
        workdir = self.dirs.boot(res.variant, n, attempt)
        if workdir.exists():
            shutil.rmtree(workdir)
        entry: dict[str, Any] = {
            "id": boot_id,
            "attempt": attempt,
            "kernel": self.plan.kernels[res.variant],
            "started_at": now(),
            "console": str(workdir.relative_to(self.dirs.root) / "console.log"),
            "error": None,
        }
        res.boots.append(entry)
        self.progress.stage(
            res.variant,
            f"boot {n}/{self.plan.boots}" + (f" (attempt {attempt})" if attempt > 1 else ""),
        )
        params = driver.Params(
            runs=self.plan.runs - done,
            duration_s=self.plan.duration_s,
            region_mb=self.plan.region_mb,
            busy_ms=self.plan.busy_ms,
            procfile=self.plan.procfile,
            vcpus=self.plan.cpus,
            # run i of boot n uses the same seed on every side
            seed=self.plan.seed + (n - 1) * self.plan.runs + done,
        )
        try:
            with vm.Guest(
                kernel.bzimage, img, self.vm_config(), workdir=workdir, accel=decision
            ) as guest:
                entry["boot_s"] = round(guest.boot_s or 0.0, 2)
                self.timings["boot"] = self.timings.get("boot", 0.0) + (guest.boot_s or 0.0)
                t_workload = time.monotonic()
                entry["kernel_version_string"] = guest.run(
                    "cat /proc/version", timeout=30
                ).stdout.strip()
                res.provenance.setdefault("kernel_version_string", entry["kernel_version_string"])
                self.progress.stage(res.variant, f"boot {n}/{self.plan.boots}: workload")

                def record(outcome: driver.RunOutcome) -> None:
                    row = dict(
                        outcome.to_json(),
                        boot=boot_id,
                        index=done + outcome.index,
                        finished_at=now(),
                    )
                    res.runs.append(row)
                    res.save(self.dirs.results(res.variant))
                    self.progress.stage(
                        res.variant,
                        f"boot {n}/{self.plan.boots}: run {done + outcome.index + 1}/{self.plan.runs}"
                        + (" HANG" if outcome.hang else ""),
                    )

                result = driver.run_workload(
                    RemoteAdapter(guest), params, guest_dir=GUEST_DIR, on_run=record
                )
                res.provenance["placement"] = asdict(result.placement)
                self.timings["workload"] = (
                    self.timings.get("workload", 0.0) + time.monotonic() - t_workload
                )
        except BaseException as exc:
            entry["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            entry["ended_at"] = now()
            res.save(self.dirs.results(res.variant))
            raise
        entry["ended_at"] = now()
        res.save(self.dirs.results(res.variant))


def load_plan(rundir: Path, aa: bool = False) -> tuple[Plan, str]:
    """The plan and reproduce command saved in a run directory (for ``--resume``)."""
    obj = RunDir(rundir, aa).info()
    saved = dict(obj["plan"])
    saved["variants"] = tuple(saved["variants"])
    return Plan(**saved), obj.get("reproduce", "")


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


# ---------------------------------------------------------------- command line


def plan_for_args(exp: Experiment, args: Any) -> Plan:
    """The plan for ``exp`` with the overrides of ``korch run`` or ``korch plan`` applied."""
    return make_plan(
        exp,
        runs=args.runs,
        boots=args.boots,
        duration_s=args.duration,
        variants=args.variant,
        accel=args.accel,
        aa=getattr(args, "aa", False),
    )


def plan_from_args(args: Any, argv: list[str]) -> tuple[Experiment, Plan, Path, str]:
    """Resolve the experiment, plan and run directory from ``korch run`` arguments."""
    from . import config

    if args.resume:
        rundir = Path(args.resume)
        overrides = [
            n
            for n in ("experiment", "runs", "boots", "duration", "variant", "accel", "out")
            if getattr(args, n)
        ]
        if overrides:
            raise UserError(
                f"--resume takes the settings saved in {rundir}; drop {', '.join('--' + o if o != 'experiment' else 'EXPERIMENT' for o in overrides)}"
            )
        plan, reproduce = load_plan(rundir, args.aa)
        return load_experiment(rundir, plan, args.aa), plan, rundir, reproduce
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
    start = time.monotonic()
    runner: Runner | None = None
    try:
        with progress_for(console) as progress:
            runner = Runner(exp, plan, rundir, progress, reproduce)
            results = runner.execute()
    except (KorchError, KeyboardInterrupt):
        console.print(
            f"[bold]completed runs are kept in {RunDir(rundir, plan.aa).base / 'results'}; "
            f"finish with: korch run --resume {rundir}{' --aa' if plan.aa else ''}[/]"
        )
        raise
    t_report = time.monotonic()
    out = RunDir(rundir, plan.aa).base
    options = report.ReportOptions(
        stats=stats.StatsOptions(baseline=plan.variants[0] if plan.aa else plan.baseline),
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
