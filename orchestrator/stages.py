"""The stages of a run as separate commands, so that CI jobs can split them.

``korch plan``, ``korch build --resume``, ``korch bench`` and ``korch report`` each take a run
directory, do one stage and leave their output in it; a GitHub Actions job uploads the
directory and the next job downloads it (see ci/github/). ``korch run --matrix`` runs the
same functions one after another on one machine. ``korch run`` is the same stages too
(:class:`orchestrator.run.Runner`). Every bench job boots every variant in blocks (each
block boots every variant once, in a balanced order), as ``korch run`` does; ``korch plan
--shards N`` splits the blocks into N contiguous shards, a bench job each, and the report
merges the shards and pairs the variants within each block (one machine), so a difference
between the jobs' runners cancels. Stopping when the verdict is decisive (``korch run
--until-decisive``) needs every block's results after each block, so it is not offered
here.

A run directory made by ``korch plan``::

    RUNDIR/run.json               the plan, its run id, and the matrix cells
    RUNDIR/experiment.yaml        a copy of the experiment file
    RUNDIR/build/<variant>/       the build stage's kernels (shared by every cell)
    RUNDIR/results/ boot/ env.json    the bench stage's output, without a matrix
    RUNDIR/cells/<cell>/          with a matrix: each cell's run.json, results, boots, reports
    <cell dir>/shards/<n>/        with --shards: each shard's run.json, results, boots

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
from .plan import Plan, load_plan
from .results import ResultsFile
from .run import Runner, RunRequest, load_bench_experiment, load_experiment
from .rundir import (
    CELLS_DIR,
    DEFAULT_CELL,
    SHARDS_DIR,
    RunDir,
    cell_of,
    expand_inputs,
    merge_shards,
    shard_dir,
)

# experiment key in a matrix -> the Plan field it sets; ``workload.<key>`` sets the
# workload's own parameter of that name
PLAN_FIELDS = {
    "vm.cpus": "cpus",
    "vm.memory": "memory",
}
MATRIX_STAGES = ("bench", "build")
BUILD_KEYS = ("kernel", "config", "variants")
BENCH_KEYS = ("kernel", "cell", "shard", "dir")


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
    own = {k: v for k, v in cell.settings.items() if k in PLAN_FIELDS}
    params = {k.split(".", 1)[1]: v for k, v in cell.settings.items() if k.startswith("workload.")}
    return replace(
        plan, **{PLAN_FIELDS[k]: v for k, v in own.items()}, params={**plan.params, **params}
    )


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


def kernel_label(exp: Experiment, variant: str | None = None) -> str:
    """A short name of a kernel source for matrix entries and cache keys: ``variant``'s,
    else the experiment's (every source's, joined by '+', when the variants differ)."""
    if variant is None and exp.cross_tree:
        labels = [kernel_label(exp, v.name) for v in exp.variants]
        return "+".join(dict.fromkeys(labels))
    spec = exp.source_of(variant) if variant else exp.source
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

    refs = [*exp.kconfig, *exp.workload_kconfig, *exp.variant(variant).kconfig]
    base = exp.kconfig_base
    parts: list[Any] = [sha256_file(Path(base)) if "/" in base else base]
    for ref in refs:
        frag = kconfig.resolve(ref)
        parts.append([frag.name, sha256_file(frag.path)])
    return stable_hash(parts)[:12]


def github_matrix(exp: Experiment, plan: Plan, cell_list: list[Cell], stage: str) -> dict:
    """``{"include": [...]}`` for a GitHub Actions ``strategy.matrix`` (via ``fromJSON``).

    ``build``: one job per kernel source and configuration (kernel, config, variants: the
    variants it builds, space-separated), so variants that share a .config build one after
    another in one build directory and the second compiles only what its patches touch.
    ``bench``: one job per matrix cell and shard of blocks (kernel, cell, shard, dir: the
    shard's run directory relative to RUNDIR); each boots every variant, block by block.
    """
    if stage not in MATRIX_STAGES:
        raise UserError(
            f"no stage {stage!r} has a matrix", hint=f"choose {' or '.join(MATRIX_STAGES)}"
        )
    label = kernel_label(exp)
    include: list[dict[str, str]] = []
    if stage == "build":
        order = [v.name for v in exp.variants]
        groups: dict[tuple[str, str], list[str]] = {}
        for k in sorted(dict.fromkeys(plan.kernels.values()), key=order.index):
            groups.setdefault((kernel_label(exp, k), config_id(exp, k)), []).append(k)
        for (kernel, config), names in groups.items():
            include.append({"kernel": kernel, "config": config, "variants": " ".join(names)})
    else:
        for c in cell_list:
            for s in range(1, plan.shards + 1):
                where = c.dir(Path(".")) if plan.shards == 1 else shard_dir(c.dir(Path(".")), s)
                include.append(
                    {"kernel": label, "cell": c.id, "shard": str(s), "dir": where.as_posix()}
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
                f" (build) or {', '.join(BENCH_KEYS)} (bench), got {entry!r}"
            )
    return obj


# ---------------------------------------------------------------- the stages


def plan_stage(exp: Experiment, plan: Plan, rundir: Path, reproduce: str) -> list[Cell]:
    """``korch plan``: write RUNDIR/run.json (with the matrix cells) and each cell's plan."""
    cell_list = cells(exp)
    top = Runner(exp, plan, rundir, build.NullProgress(), reproduce, nest_aa=False)
    top.prepare(extra={"cells": {c.id: c.settings for c in cell_list}})
    info = RunDir(rundir).info()
    same_run = {"run_id": info["run_id"], "created": info["created"]}
    for c in cell_list:
        cplan = cell_plan(plan, c)
        cell = {"cell": {"id": c.id, "settings": c.settings}} if c.id != DEFAULT_CELL else {}
        if c.id != DEFAULT_CELL:
            Runner(
                exp, cplan, c.dir(rundir), build.NullProgress(), reproduce, nest_aa=False
            ).prepare(extra={**cell, **same_run})
        if plan.shards == 1:
            continue
        for s in range(1, plan.shards + 1):
            splan = replace(cplan, shard=s)
            own = splan.own_blocks
            where = shard_dir(c.dir(rundir), s)
            Runner(exp, splan, where, build.NullProgress(), reproduce, nest_aa=False).prepare(
                extra={
                    **cell, **same_run,
                    "shard": {"index": s, "of": plan.shards, "blocks": [own.start, own.stop - 1]},
                }
            )  # fmt: skip
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
    runner = Runner(exp, plan, rundir, progress, reproduce, nest_aa=False)
    return runner.build_kernels(variants, use_ccache=use_ccache)


def bench_stage(
    rundir: Path,
    variants: list[str] | None,
    cell: str | None,
    progress: build.Progress,
    shard: int | None = None,
) -> dict[str, ResultsFile]:
    """``korch bench RUNDIR``: boot the kernels in RUNDIR/build/ and run the workload for
    ``variants`` (default: every side, block by block) of one cell, and of one shard of
    its blocks when the plan has shards. Needs neither the kernel source nor the build
    cache."""
    where = bench_dir(rundir, cell, shard)
    plan, reproduce = load_plan(where)
    exp = load_bench_experiment(where, plan)
    runner = Runner(exp, plan, where, progress, reproduce, nest_aa=False)
    sides = tuple(dict.fromkeys(variants)) if variants else plan.variants
    unknown = [s for s in sides if s not in plan.variants]
    if unknown:
        raise UserError(
            f"the plan in {where} has no variant {', '.join(map(repr, unknown))}",
            hint=f"its variants: {', '.join(plan.variants)}",
        )
    builds = runner.exported_kernels(sides, rundir / "build")
    return runner.bench(builds, sides)


def bench_dir(rundir: Path, cell: str | None, shard: int | None) -> Path:
    """The run directory ``korch bench`` fills: the cell's, or its shard's."""
    where = find_cell(rundir, cell).dir(rundir)
    plan, _ = load_plan(where)
    if plan.shards == 1:
        if shard not in (None, 1):
            raise UserError(
                f"the plan in {where} has no shards (--shard {shard})",
                hint="plan the run with korch plan --shards N to split its blocks",
            )
        return where
    if shard is None or not 1 <= shard <= plan.shards:
        raise UserError(
            f"the plan in {where} splits its {plan.blocks} blocks into {plan.shards} shards;"
            + (" name one with --shard" if shard is None else f" there is no shard {shard}"),
            hint=f"--shard 1 to {plan.shards} (korch matrix lists the bench jobs)",
        )
    return shard_dir(where, shard)


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
    if out is None and (len(groups) > 1 or target is None):
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
        members, said = merge_shards(members)
        comparison = report.write_reports(
            where, members, replace(options, source_dir=source, warnings=tuple(said))
        )
        if github_summary:
            report.append_step_summary(comparison)
        codes.append(report.exit_code(comparison, fail_on))
        written.append(where)
    return combine_exit_codes(codes), written


def common_run_dir(inputs: list[Path]) -> Path | None:
    """The one run directory that all ``inputs`` are (or lie in: its cells, its shards), if
    there is one."""
    roots = set()
    for p in inputs:
        p = p.resolve()
        if p.parent.name == SHARDS_DIR:
            p = p.parent.parent
        roots.add(p.parent.parent if p.parent.name == CELLS_DIR else p)
    return next(iter(roots)) if len(roots) == 1 else None


def stage_reproduce(argv: list[str]) -> str:
    """What reproduces a run made by the stage commands on one machine: ``korch run
    --matrix`` with the options given to ``korch plan``."""
    rest = argv[1:] if argv and argv[0] == "plan" else argv
    return shlex.join(["korch", "run", "--matrix", *rest])


def run_matrix(req: RunRequest, console: Any) -> int:
    """``korch run --matrix``: plan, then every build, bench and report job of the CI
    workflow one after another on this machine, through the same stage functions."""
    import time

    from . import report, stats
    from .fsutil import write_json
    from .run import plan_from_request
    from .ui import progress_for

    o = req.overrides
    if o.aa:
        raise UserError(
            "--matrix and --aa do not go together",
            hint="use korch run --aa, or korch plan --aa and the stage commands",
        )
    sequential = [f for f in o.given() if f in ("--until-decisive", "--max-blocks", "--budget")]
    if sequential:
        raise UserError(
            f"--matrix runs the bench jobs one by one, so it cannot stop on the whole"
            f" comparison or a shared time budget; drop {', '.join(sequential)}",
            hint="use korch run without --matrix",
        )
    exp, plan, rundir, reproduce = plan_from_request(req)
    console.print(f"run directory: {rundir}")
    timings: dict[str, float] = {}
    start = time.monotonic()
    cell_list = plan_stage(exp, plan, rundir, reproduce)
    if exp.matrix:
        console.print(f"matrix: {len(cell_list)} cells: {', '.join(c.id for c in cell_list)}")
    timings["plan"] = time.monotonic() - start
    with progress_for(console) as progress:
        t = time.monotonic()
        # one build job per kernel source and configuration in the workflow
        for entry in github_matrix(exp, plan, cell_list, "build")["include"]:
            build_stage(rundir, entry["variants"].split(), progress)
        timings["build"] = time.monotonic() - t
        t = time.monotonic()
        for c in cell_list:  # one bench job per cell and shard, every variant in blocks
            for s in range(1, plan.shards + 1):
                bench_stage(rundir, None, c.id, progress, s if plan.shards > 1 else None)
        timings["bench"] = time.monotonic() - t
    t = time.monotonic()
    options = report.ReportOptions(
        stats=stats.StatsOptions(baseline=plan.baseline),
        console=console,
        report_command=shlex.join(["korch", "report", str(rundir)]),
    )
    code, written = report_stage(
        expand_inputs([c.dir(rundir) for c in cell_list]),
        None,
        options,
        req.fail_on,
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
