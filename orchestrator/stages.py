"""The stages of a run as separate commands, so that CI jobs can split them.

``korch plan``, ``korch build --resume``, ``korch bench`` and ``korch report`` each take a run
directory, do one stage and leave their output in it; a GitHub Actions job uploads the
directory and the next job downloads it (see ci/github/). ``korch run --matrix`` runs the
same functions one after another on one machine. ``korch run`` is the same stages too
(:class:`orchestrator.run.Runner`), but boots the variants in blocks (each block boots every
variant once, in a balanced order), which a split across machines cannot do: there each
bench job boots its own variant, block after block. Stopping when the verdict is decisive
(``korch run --until-decisive``) needs every variant's results after each block, so it is
not offered here.

A run directory made by ``korch plan``::

    RUNDIR/run.json               the plan, its run id, and the matrix cells
    RUNDIR/experiment.yaml        a copy of the experiment file
    RUNDIR/build/<variant>/       the build stage's kernels (shared by every cell)
    RUNDIR/results/ boot/ env.json    the bench stage's output, without a matrix
    RUNDIR/cells/<cell>/          with a matrix: each cell's run.json, results, boots, reports

An experiment's ``matrix:`` varies boot-time settings (vCPUs, memory, workload parameters);
each combination is a *cell*, a run of its own with its own comparison. Without a matrix
there is one cell, ``default``, whose directory is RUNDIR itself.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import build
from .config import Experiment
from .errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, UserError
from .fsutil import sha256_file, stable_hash
from .results import ResultsFile
from .run import Plan, RunDir, Runner, load_bench_experiment, load_experiment, load_plan

DEFAULT_CELL = "default"
CELLS_DIR = "cells"
# experiment key in a matrix -> the Plan field it sets
PLAN_FIELDS = {
    "vm.cpus": "cpus",
    "vm.memory": "memory",
    "workload.procfile": "procfile",
    "workload.region_mb": "region_mb",
    "workload.busy_ms": "busy_ms",
}
MATRIX_STAGES = ("bench", "build")
BUILD_KEYS = ("kernel", "variant", "config")
BENCH_KEYS = ("kernel", "variant", "config", "cell", "dir")


# ---------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One combination of an experiment's matrix: an id usable in paths and artifact
    names, and the settings it overrides (experiment keys such as ``vm.cpus``)."""

    id: str
    settings: dict[str, Any]

    def dir(self, rundir: Path) -> Path:
        """Where the cell's run lives: RUNDIR itself for the default cell."""
        return rundir if self.id == DEFAULT_CELL else rundir / CELLS_DIR / self.id


def cell_id(settings: dict[str, Any]) -> str:
    """``cpus-2_procfile-smaps``: the settings' short names and values, in the given order."""
    parts = [f"{key.split('.')[-1]}-{value}" for key, value in settings.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(parts)) or DEFAULT_CELL


def cells(exp: Experiment) -> list[Cell]:
    """Every combination of the experiment's matrix (one default cell without one)."""
    if not exp.matrix:
        return [Cell(DEFAULT_CELL, {})]
    keys = [k for k, _ in exp.matrix]
    out = []
    for values in itertools.product(*(v for _, v in exp.matrix)):
        settings = dict(zip(keys, values, strict=True))
        out.append(Cell(cell_id(settings), settings))
    return out


def cell_plan(plan: Plan, cell: Cell) -> Plan:
    """``plan`` with the cell's settings applied."""
    return replace(plan, **{PLAN_FIELDS[k]: v for k, v in cell.settings.items()})


def planned_cells(rundir: Path) -> list[Cell]:
    """The cells ``korch plan`` recorded in RUNDIR/run.json (the default cell otherwise)."""
    recorded = RunDir(rundir).info().get("cells") or {DEFAULT_CELL: {}}
    return [Cell(cid, dict(settings)) for cid, settings in recorded.items()]


def find_cell(rundir: Path, name: str | None) -> Cell:
    """The cell ``name`` of the run in ``rundir``; the only cell when ``name`` is None."""
    known = planned_cells(rundir)
    if name is None:
        if len(known) == 1:
            return known[0]
        raise UserError(
            f"the run in {rundir} has {len(known)} matrix cells; name one with --cell",
            hint=f"its cells: {', '.join(c.id for c in known)}",
        )
    for c in known:
        if c.id == name:
            return c
    raise UserError(
        f"the run in {rundir} has no cell {name!r}",
        hint=f"its cells: {', '.join(c.id for c in known)}",
    )


# ---------------------------------------------------------------- the matrix for CI


def kernel_label(exp: Experiment) -> str:
    """A short name of the experiment's kernel source for matrix entries and cache keys."""
    spec = exp.source
    if spec.kind == "debian":
        label = spec.location + (f"-{spec.version}" if spec.version else "")
    elif spec.kind == "git":
        label = Path(spec.location.rstrip("/")).name.removesuffix(".git") + f"-{spec.ref}"
    elif spec.kind == "tarball":
        label = re.sub(r"\.tar(\.\w+)?$|\.tgz$", "", Path(spec.location).name)
    else:
        label = Path(spec.location).name
    return re.sub(r"[^A-Za-z0-9._-]", "-", label)


def config_id(exp: Experiment, variant: str) -> str:
    """12 hex digits naming a variant's configuration inputs (base and fragments, by
    content): equal ids mean equal .config files, so build caches can be shared."""
    from . import kconfig

    refs = [*exp.kconfig, *exp.variant(variant).kconfig]
    base = exp.kconfig_base
    parts: list[Any] = [sha256_file(Path(base)) if "/" in base else base]
    for ref in refs:
        frag = kconfig.resolve(ref)
        parts.append([frag.name, sha256_file(frag.path)])
    return stable_hash(parts)[:12]


def github_matrix(exp: Experiment, plan: Plan, cell_list: list[Cell], stage: str) -> dict:
    """``{"include": [...]}`` for a GitHub Actions ``strategy.matrix`` (via ``fromJSON``).

    ``build``: one entry per kernel (kernel, variant, config). ``bench``: one per side and
    cell (kernel, variant, config, cell, dir), ``dir`` being the cell's run directory
    relative to RUNDIR.
    """
    if stage not in MATRIX_STAGES:
        raise UserError(
            f"no stage {stage!r} has a matrix", hint=f"choose {' or '.join(MATRIX_STAGES)}"
        )
    label = kernel_label(exp)
    configs = {k: config_id(exp, k) for k in dict.fromkeys(plan.kernels.values())}
    include: list[dict[str, str]] = []
    if stage == "build":
        order = [v.name for v in exp.variants]
        for k in sorted(configs, key=order.index):
            include.append({"kernel": label, "variant": k, "config": configs[k]})
    else:
        for c in cell_list:
            rel = c.dir(Path(".")).as_posix()
            for side in plan.variants:
                include.append(
                    {
                        "kernel": label,
                        "variant": side,
                        "config": configs[plan.kernels[side]],
                        "cell": c.id,
                        "dir": rel,
                    }
                )
    return {"include": include}


def matrix_to_json(matrix: dict) -> str:
    """One line of JSON (``$GITHUB_OUTPUT`` takes ``name=value`` lines)."""
    return json.dumps(matrix, separators=(",", ":"), sort_keys=True)


def matrix_from_json(text: str) -> dict:
    """Parse and check a matrix printed by ``korch matrix``; :class:`UserError` otherwise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the matrix is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    include = obj.get("include") if isinstance(obj, dict) else None
    if not isinstance(include, list) or set(obj) != {"include"}:
        raise UserError('a matrix is an object with one key, "include", holding a list')
    for i, entry in enumerate(include):
        keys = set(entry) if isinstance(entry, dict) else set()
        if keys not in (set(BUILD_KEYS), set(BENCH_KEYS)) or not all(
            isinstance(v, str) for v in entry.values()
        ):
            raise UserError(
                f"matrix entry {i}: expected string values for {', '.join(BUILD_KEYS)}"
                f" (and {', '.join(BENCH_KEYS[len(BUILD_KEYS) :])} for bench), got {entry!r}"
            )
    return obj


# ---------------------------------------------------------------- the stages


def plan_stage(exp: Experiment, plan: Plan, rundir: Path, reproduce: str) -> list[Cell]:
    """``korch plan``: write RUNDIR/run.json (with the matrix cells) and each cell's plan."""
    if plan.aa:
        raise UserError("the stage commands do not run A/A comparisons", hint="use korch run --aa")
    cell_list = cells(exp)
    top = Runner(exp, plan, rundir, build.NullProgress(), reproduce)
    top.prepare(extra={"cells": {c.id: c.settings for c in cell_list}})
    info = RunDir(rundir).info()
    for c in cell_list:
        if c.id == DEFAULT_CELL:
            continue
        Runner(exp, cell_plan(plan, c), c.dir(rundir), build.NullProgress(), reproduce).prepare(
            extra={
                "cell": {"id": c.id, "settings": c.settings},
                "run_id": info["run_id"],
                "created": info["created"],
            }
        )
    return cell_list


def build_stage(
    rundir: Path,
    variants: list[str] | None,
    progress: build.Progress,
    use_ccache: bool = True,
) -> dict[str, build.Build]:
    """``korch build --resume RUNDIR``: build the planned kernels into RUNDIR/build/."""
    plan, reproduce = load_plan(rundir)
    exp = load_experiment(rundir, plan)
    runner = Runner(exp, plan, rundir, progress, reproduce)
    return runner.build_kernels(variants, use_ccache=use_ccache)


def bench_stage(
    rundir: Path,
    variants: list[str] | None,
    cell: str | None,
    progress: build.Progress,
) -> dict[str, ResultsFile]:
    """``korch bench RUNDIR``: boot the kernels in RUNDIR/build/ and run the workload for
    ``variants`` (default: every side, block by block) of one cell. Needs neither the
    kernel source nor the build cache."""
    chosen = find_cell(rundir, cell)
    where = chosen.dir(rundir)
    plan, reproduce = load_plan(where)
    exp = load_bench_experiment(where, plan)
    runner = Runner(exp, plan, where, progress, reproduce)
    sides = tuple(dict.fromkeys(variants)) if variants else plan.variants
    unknown = [s for s in sides if s not in plan.variants]
    if unknown:
        raise UserError(
            f"the plan in {where} has no variant {', '.join(map(repr, unknown))}",
            hint=f"its variants: {', '.join(plan.variants)}",
        )
    builds = runner.exported_kernels(sides, rundir / "build")
    return runner.bench(builds, sides)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Report inputs with a matrix run directory replaced by its cells' directories."""
    out: list[Path] = []
    for p in paths:
        cell_dirs = sorted(d for d in (p / CELLS_DIR).glob("*") if (d / "results").is_dir())
        if p.is_dir() and not (p / "results").is_dir() and cell_dirs:
            out += cell_dirs
        else:
            out.append(p)
    return out


def cell_of(results: ResultsFile) -> str:
    """The matrix cell a results file belongs to (``default`` outside a matrix)."""
    cell = results.provenance.get("cell") or {}
    return str(cell.get("id") or DEFAULT_CELL)


def combine_exit_codes(codes: list[int]) -> int:
    """One exit code for several comparisons: a regression anywhere wins, then inconclusive."""
    for code in (EXIT_REGRESSION, EXIT_INCONCLUSIVE):
        if code in codes:
            return code
    return max(codes, default=EXIT_OK)


def report_stage(
    inputs: list[Path],
    out: Path | None,
    options: Any,
    fail_on: str = "regression",
    github_summary: bool = False,
) -> tuple[int, list[Path]]:
    """``korch report``: compare the results in ``inputs`` and write the reports.

    Results of several matrix cells give one comparison per cell, written to
    ``OUT/cells/<cell>/``. Returns the combined exit code and the directories written.
    ``options`` is a :class:`orchestrator.report.ReportOptions`.
    """
    from . import report

    results, rundir = report.load_results(expand_inputs(inputs))
    groups: dict[str, list[ResultsFile]] = {}
    for r in results:
        groups.setdefault(cell_of(r), []).append(r)
    if not groups:  # a run directory holding only an A/A run: write_reports reports that
        groups[DEFAULT_CELL] = []
    target = out or rundir
    if len(groups) > 1 and out is None:
        target = common_run_dir(inputs)
    if target is None:
        raise UserError(
            "the results come from several run directories; where should the reports go?",
            hint="name an output directory with --out",
        )
    codes, written = [], []
    for name, members in sorted(groups.items()):
        where = target if len(groups) == 1 else target / CELLS_DIR / name
        if len(groups) > 1 and options.console is not None:
            options.console.rule(f"cell {name}")
        source = options.source_dir if len(groups) == 1 else None
        comparison = report.write_reports(where, members, replace(options, source_dir=source))
        if github_summary:
            report.append_step_summary(comparison)
        codes.append(report.exit_code(comparison, fail_on))
        written.append(where)
    return combine_exit_codes(codes), written


def common_run_dir(inputs: list[Path]) -> Path | None:
    """The one matrix run directory that all ``inputs`` are (or lie in), if there is one."""
    roots = set()
    for p in inputs:
        p = p.resolve()
        roots.add(p.parent.parent if p.parent.name == CELLS_DIR else p)
    return next(iter(roots)) if len(roots) == 1 else None


def stage_reproduce(argv: list[str]) -> str:
    """What reproduces a run made by the stage commands on one machine: ``korch run
    --matrix`` with the options given to ``korch plan``."""
    rest = argv[1:] if argv and argv[0] == "plan" else argv
    return shlex.join(["korch", "run", "--matrix", *rest])


def run_matrix(args: Any, console: Any) -> int:
    """``korch run --matrix``: plan, then every build, bench and report job of the CI
    workflow one after another on this machine, through the same stage functions."""
    import time

    from . import report, stats
    from .fsutil import write_json
    from .run import plan_from_args
    from .ui import progress_for

    if getattr(args, "aa", False):
        raise UserError("--matrix and --aa do not go together", hint="use korch run --aa")
    sequential = [o for o in ("until_decisive", "max_blocks", "budget") if getattr(args, o, None)]
    if sequential:
        raise UserError(
            f"--matrix runs each variant's bench job on its own, so it cannot stop on the"
            f" comparison or a shared time budget; drop"
            f" {', '.join('--' + o.replace('_', '-') for o in sequential)}",
            hint="use korch run without --matrix",
        )
    exp, plan, rundir, reproduce = plan_from_args(args, args.argv)
    console.print(f"run directory: {rundir}")
    timings: dict[str, float] = {}
    start = time.monotonic()
    cell_list = plan_stage(exp, plan, rundir, reproduce)
    if exp.matrix:
        console.print(f"matrix: {len(cell_list)} cells: {', '.join(c.id for c in cell_list)}")
    timings["plan"] = time.monotonic() - start
    kernels = list(dict.fromkeys(plan.kernels.values()))
    with progress_for(console) as progress:
        t = time.monotonic()
        for k in kernels:  # one build job per kernel in the workflow
            build_stage(rundir, [k], progress)
        timings["build"] = time.monotonic() - t
        t = time.monotonic()
        for c in cell_list:  # one bench job per cell and variant
            for side in plan.variants:
                bench_stage(rundir, [side], c.id, progress)
        timings["bench"] = time.monotonic() - t
    t = time.monotonic()
    options = report.ReportOptions(
        stats=stats.StatsOptions(baseline=plan.baseline),
        console=console,
        report_command=shlex.join(["korch", "report", str(rundir)]),
    )
    code, written = report_stage(
        [c.dir(rundir) for c in cell_list],
        None,
        options,
        getattr(args, "fail_on", "regression"),
    )
    timings["report"] = time.monotonic() - t
    timings["total"] = time.monotonic() - start
    write_json(rundir / "timings.json", {k: round(v, 2) for k, v in timings.items()})
    console.print(
        "stages: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + "\nreports written to "
        + ", ".join(str(w) for w in written)
    )
    return code
