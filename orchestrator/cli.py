"""Command line: parse, build one domain object, call it, map errors to exit codes.

Subcommands register themselves in :data:`COMMANDS` with :func:`command`; each gets the
parsed arguments and a rich console and returns an exit code.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from . import __version__, config, errors
from .fsutil import cache_root

if TYPE_CHECKING:  # imported when a command runs: keep start-up light
    from .plan import Overrides
    from .run import RunRequest

Handler = Callable[[argparse.Namespace, Console], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}

EPILOG = """exit codes: 0 no gated regression, 1 regression gate tripped, 2 infrastructure failure
(build, boot, ssh, a full disk; safe to retry), 3 inconclusive, 4 guest panic or kernel
splat, 64 usage or configuration error, 70 internal error (a bug), 130 interrupted.  Cache: $KORCH_CACHE, else $XDG_CACHE_HOME/korch, else ~/.cache/korch."""


def command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = (help, arguments, fn)
        return fn

    return register


def load_experiment(path: str | None) -> config.Experiment:
    """The experiment named on the command line, or the embedded default."""
    return config.load(Path(path)) if path else config.load_default()


def _experiment_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "experiment",
        nargs="?",
        help="experiment YAML file (default: the embedded maps-contention experiment)",
    )


# ---------------------------------------------------------------- validate


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML file")


@command("validate", "check an experiment file without building anything", _validate_args)
def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from . import kconfig

    exp = config.load(Path(args.experiment))
    for ref in exp.kconfig:
        kconfig.resolve(ref)
    for v in exp.variants:
        for ref in v.kconfig:
            kconfig.resolve(ref)
        if v.series.kind == "files":
            for f in v.series.files:
                if not f.is_file():
                    raise errors.UserError(
                        f"{exp.path}: variant {v.name}: patch {f} does not exist"
                    )
    trees = len({exp.source_of(v.name) for v in exp.variants})
    console.print(
        f"{exp.path}: ok ({exp.name}: {len(exp.variants)} variants, baseline {exp.baseline}"
        + (f"; cross-tree: {trees} kernel sources" if trees > 1 else "")
        + f"; workload {exp.workload.name}"
        + ")"
    )
    return errors.EXIT_OK


# ---------------------------------------------------------------- kconfigs


@command("kconfigs", "list the kconfig fragments that experiments can name", lambda p: None)
def cmd_kconfigs(args: argparse.Namespace, console: Console) -> int:
    from . import kconfig

    table = Table("fragment", "symbols", "what it is for", box=None)
    for frag in kconfig.list_fragments():
        table.add_row(frag.name, str(len(frag.symbols)), frag.description)
    console.print(table)
    console.print(f"(from {kconfig.fragments_dir()})", style="dim")
    return errors.EXIT_OK


# ---------------------------------------------------------------- build


def _build_args(p: argparse.ArgumentParser) -> None:
    _experiment_arg(p)
    p.add_argument(
        "--variant", action="append", metavar="NAME", help="build only this variant (repeatable)"
    )
    p.add_argument(
        "--out", metavar="RUNDIR", help="also copy the artifacts to RUNDIR/build/<variant>/"
    )
    p.add_argument(
        "--resume",
        metavar="RUNDIR",
        help="build the kernels planned in RUNDIR (korch plan) into RUNDIR/build/ (the build stage)",
    )
    p.add_argument("--no-ccache", action="store_true", help="compile without ccache")


@command("build", "build the experiment's kernel variants (cached by content)", _build_args)
def cmd_build(args: argparse.Namespace, console: Console) -> int:
    from . import build
    from .ui import progress_for

    if args.resume and (args.experiment or args.out):
        raise errors.UserError(
            "--resume RUNDIR builds the run's own experiment into RUNDIR/build/;"
            " drop EXPERIMENT and --out"
        )
    with progress_for(console) as progress:
        if args.resume:
            from . import stages

            results = stages.build_stage(
                Path(args.resume), args.variant, progress, use_ccache=not args.no_ccache
            )
        else:
            exp = load_experiment(args.experiment)
            builder = build.Builder(exp, cache_root(), progress, use_ccache=not args.no_ccache)
            results = builder.build_all(args.variant)
    table = Table("variant", "kernel", "objects compiled", "build", "bzImage", box=None)
    for name, b in results.items():
        took = "cached" if b.cached else f"{b.metadata['durations_s']['build']:.1f}s"
        table.add_row(
            name, b.metadata["kernel_release"], str(b.objects_compiled), took, str(b.bzimage)
        )
    console.print(table)
    if args.out:
        build.export(results, Path(args.out))
    if args.out or args.resume:
        console.print(f"artifacts copied to {Path(args.out or args.resume) / 'build'}")
    return errors.EXIT_OK


# ---------------------------------------------------------------- run


def _boot_overrides(p: argparse.ArgumentParser) -> None:
    """What a boot does, over the experiment's settings: korch run, plan and bisect."""
    p.add_argument("--runs", type=int, metavar="N", help="runs per boot (overrides workload.runs)")
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="length of one run (overrides workload.duration_s)",
    )
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="override vm.accel")


def _plan_options(p: argparse.ArgumentParser) -> None:
    _experiment_arg(p)
    p.add_argument(
        "--blocks",
        type=int,
        metavar="N",
        help="blocks to run; a block boots every variant once, in a balanced random order"
        " (overrides workload.blocks)",
    )
    # the old name of --blocks (boots per variant), for older scripts and workflows
    p.add_argument("--boots", type=int, dest="blocks", help=argparse.SUPPRESS)
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="run only these variants (repeatable; keep the baseline)",
    )
    _boot_overrides(p)
    p.add_argument(
        "--out", metavar="RUNDIR", help="run directory (default: runs/<experiment>-<timestamp>)"
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    _plan_options(p)
    p.add_argument(
        "--matrix",
        action="store_true",
        help="run the CI workflow's jobs one after another here: plan, a build per kernel"
        " source and configuration, a bench per matrix cell (every variant, in blocks), one"
        " report per cell",
    )
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="with --matrix: split the blocks into N bench jobs, as korch plan --shards does",
    )
    p.add_argument(
        "--resume",
        metavar="RUNDIR",
        help="complete the missing runs of an interrupted run, with its saved settings;"
        " with --blocks N, extend a finished or interrupted run to N blocks",
    )
    p.add_argument(
        "--until-decisive",
        action="store_true",
        help="stop after the first block that makes every candidate's headline verdict"
        " decisive (improved, regressed or equivalent); the statistics then use the"
        " sequential design's level",
    )
    p.add_argument(
        "--max-blocks",
        type=int,
        metavar="N",
        help="with --until-decisive: run at most N blocks (default: the plan's blocks)",
    )
    p.add_argument(
        "--budget",
        metavar="DURATION",
        help="start no block that would end past DURATION from the start of the bench stage"
        " (judged from the blocks so far): 90s, 30m, 1h or seconds",
    )
    p.add_argument(
        "--aa",
        action="store_true",
        help="A/A run: boot the baseline on both sides to measure the noise floor (RUNDIR/aa)",
    )
    p.add_argument(
        "--fail-on",
        choices=("regression", "any", "never"),
        default="regression",
        help="exit 1 when the headline metric regressed (regression), when any metric regressed (any), or never",
    )


def _overrides(args: argparse.Namespace) -> Overrides:
    """The plan options of korch run and korch plan, typed for the library."""
    from .plan import Overrides

    return Overrides(
        runs=args.runs,
        blocks=args.blocks,
        duration_s=args.duration,
        variants=tuple(args.variant or ()),
        accel=args.accel,
        aa=getattr(args, "aa", False),
        until_decisive=getattr(args, "until_decisive", False),
        max_blocks=getattr(args, "max_blocks", None),
        budget=getattr(args, "budget", None),
        shards=getattr(args, "shards", None),
    )


def _run_request(args: argparse.Namespace) -> RunRequest:
    """What korch run was asked, typed for the library (orchestrator.run.RunRequest)."""
    from .run import RunRequest

    return RunRequest(
        experiment=Path(args.experiment) if args.experiment else None,
        overrides=_overrides(args),
        out=Path(args.out) if args.out else None,
        resume=Path(args.resume) if args.resume else None,
        argv=tuple(args.argv),
        fail_on=args.fail_on,
    )


@command("run", "build, boot and benchmark every variant, then report (the main job)", _run_args)
def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from . import run

    if args.matrix:
        from . import stages

        return stages.run_matrix(_run_request(args), console)
    if args.shards is not None:
        raise errors.UserError(
            "--shards splits the bench stage into jobs, which korch run on one machine does"
            " not have",
            hint="use korch run --matrix --shards N, or korch plan --shards N in CI",
        )
    return run.main(_run_request(args), console)


# ---------------------------------------------------------------- stages: plan, bench, matrix


def _plan_args(p: argparse.ArgumentParser) -> None:
    _plan_options(p)
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="split the blocks into N bench jobs; each boots every variant, block by block,"
        " on its own machine, and the report pairs the variants within each block",
    )
    p.add_argument(
        "--aa",
        action="store_true",
        help="A/A plan: the baseline on both sides (BASELINE and BASELINE-aa, one kernel), to"
        " measure the noise floor of the stages' machines; RUNDIR is the A/A run",
    )


@command(
    "plan",
    "write a run directory's plan (run.json), the first stage of a CI workflow",
    _plan_args,
)
def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from . import plan as plans
    from . import stages

    if not args.out:
        raise errors.UserError("korch plan needs --out RUNDIR: the directory the jobs hand on")
    exp = load_experiment(args.experiment)
    plan = plans.plan_for(exp, _overrides(args))
    rundir = Path(args.out)
    cell_list = stages.plan_stage(exp, plan, rundir, stages.stage_reproduce(args.argv))
    console.print(
        f"{rundir}: plan of {plan.experiment}: variants {', '.join(plan.variants)},"
        f" {plan.blocks} block(s) (order seed {plan.order_seed}) x {plan.runs} run(s)"
        f" of {plan.duration_s:g} s a boot"
        + (f"; {len(cell_list)} matrix cells" if len(cell_list) > 1 else "")
        + (
            "; shards: "
            + ", ".join(
                f"{s} (blocks {r.start}-{r.stop - 1})"
                for s, r in ((s, plan.shard_blocks(s)) for s in range(1, plan.shards + 1))
            )
            if plan.shards > 1
            else ""
        )
    )
    return errors.EXIT_OK


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rundir", metavar="RUNDIR", help="a run directory with its kernels in build/")
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="boot only this variant (repeatable; default: every variant, block by block)",
    )
    p.add_argument("--cell", metavar="CELL", help="the matrix cell to run (see korch matrix)")
    p.add_argument(
        "--shard",
        type=int,
        metavar="N",
        help="the shard of blocks to run, when korch plan --shards split them (see korch matrix)",
    )


@command(
    "bench",
    "boot the kernels in RUNDIR/build and run the workload (the bench stage)",
    _bench_args,
)
def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from . import stages
    from .rundir import RunDir
    from .ui import progress_for

    rundir = Path(args.rundir)
    with progress_for(console) as progress:
        results = stages.bench_stage(rundir, args.variant, args.cell, progress, args.shard)
    where = stages.bench_dir(rundir, args.cell, args.shard)
    for side, res in results.items():
        console.print(f"{side}: {len(res.runs)} runs -> {RunDir(where).results(side)}")
    console.print(f"next: korch report {where} (with the other variants' results)")
    return errors.EXIT_OK


def _matrix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        nargs="?",
        metavar="EXPERIMENT|RUNDIR",
        help="an experiment file (default: the embedded one) or a run directory from korch plan",
    )
    p.add_argument(
        "--stage",
        choices=("bench", "build"),
        default="bench",
        help="bench: one entry per matrix cell and shard of blocks (default); build: one per"
        " kernel source and configuration",
    )


@command(
    "matrix",
    "print the jobs of a run as JSON for a GitHub Actions strategy.matrix (fromJSON)",
    _matrix_args,
)
def cmd_matrix(args: argparse.Namespace, console: Console) -> int:
    from . import plan as plans
    from . import run, stages

    source = Path(args.source) if args.source else None
    if source is not None and source.is_dir():
        plan, _ = plans.load_plan(source)
        exp = run.load_bench_experiment(source, plan)
        cell_list = stages.planned_cells(source)
    else:
        exp = load_experiment(args.source)
        plan = plans.make_plan(exp)
        cell_list = stages.cells(exp)
    matrix = stages.github_matrix(exp, plan, cell_list, args.stage)
    print(stages.matrix_to_json(matrix))
    return errors.EXIT_OK


# ---------------------------------------------------------------- bisect


def _bisect_args(p: argparse.ArgumentParser) -> None:
    _experiment_arg(p)
    p.add_argument(
        "--variant",
        metavar="NAME",
        help="the variant whose series to search (default: the one candidate with patches);"
        " patches it shares with the baseline stay applied",
    )
    p.add_argument(
        "--max-blocks",
        type=int,
        metavar="N",
        help="the most blocks a round may take (default: the experiment's blocks)",
    )
    _boot_overrides(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="bisect directory (default: runs/<experiment>-bisect-<variant>-<timestamp>);"
        " the same command with the same --out resumes",
    )


@command(
    "bisect",
    "find the patch of a series that moved the headline metric: build every prefix, boot"
    " them in blocked rounds, narrow down",
    _bisect_args,
)
def cmd_bisect(args: argparse.Namespace, console: Console) -> int:
    from . import bisect
    from .plan import Overrides

    return bisect.main(
        bisect.BisectRequest(
            experiment=Path(args.experiment) if args.experiment else None,
            variant=args.variant,
            overrides=Overrides(
                runs=args.runs,
                duration_s=args.duration,
                accel=args.accel,
                max_blocks=args.max_blocks,
            ),
            out=Path(args.out) if args.out else None,
            argv=tuple(args.argv),
        ),
        console,
    )


# ---------------------------------------------------------------- boot


def _boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", metavar="NAME", help="the variant to boot (default: the baseline)")
    p.add_argument(
        "--accel", choices=("auto", "kvm", "tcg"), help="override the experiment's vm.accel"
    )
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the command after this")
    p.add_argument(
        "--console", action="store_true", help="echo the guest's serial console to stderr"
    )
    p.add_argument(
        "--workdir", metavar="DIR", help="keep console.log, qemu.log and qemu-argv.txt in DIR"
    )


def _boot_args(p: argparse.ArgumentParser) -> None:
    _experiment_arg(p)
    _boot_options(p)
    p.add_argument(
        "guest_command",  # not "command": main() dispatches on args.command
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="-- then the command to run in the guest (default: a shell on this terminal); "
        "korch boot exits with its status",
    )


def _boot_tail(args: argparse.Namespace) -> list[str]:
    # argparse ends positionals at the first option after EXPERIMENT, so the REMAINDER may
    # hold "--variant NAME -- COMMAND...": parse the options in it here, keep what follows
    # "--". A tail that does not start with an option is the command itself (argparse drops
    # a "--" that directly follows EXPERIMENT).
    tail = list(args.guest_command)
    raw = list(getattr(args, "argv", None) or [])
    if args.experiment is not None and "--" in raw:
        # no EXPERIMENT given: argparse took the command's first word after "--" for it
        # ("korch boot --variant per-vma -- uname -r")
        after = raw[raw.index("--") + 1 :]
        if after and after[0] == args.experiment and args.experiment not in raw[: raw.index("--")]:
            tail = [args.experiment, *tail]
            args.experiment = None
            return tail
    if not tail or not tail[0].startswith("-"):
        return tail
    if tail[0] == "--":
        return tail[1:]
    cut = tail.index("--") if "--" in tail else len(tail)
    options = argparse.ArgumentParser(prog="korch boot", add_help=False)
    _boot_options(options)
    _, extra = options.parse_known_args(tail[:cut], namespace=args)
    return extra + tail[cut + 1 :]


@command("boot", "boot one variant in QEMU and run a command in it (or a shell)", _boot_args)
def cmd_boot(args: argparse.Namespace, console: Console) -> int:
    from . import guest

    command_words = _boot_tail(args)
    return guest.boot_variant(
        load_experiment(args.experiment),
        args.variant,
        command_words,
        console=console,
        accel=args.accel,
        timeout=args.timeout,
        workdir=Path(args.workdir) if args.workdir else None,
        show_console=args.console,
    )


# ---------------------------------------------------------------- doctor


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel",
        metavar="BZIMAGE",
        help="decide KVM by a probe boot of this kernel (otherwise from the host's facts)",
    )


@command("doctor", "check the tools, packages and KVM this machine needs", _doctor_args)
def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from . import doctor

    return doctor.run_doctor(console, Path(args.kernel) if args.kernel else None)


# ---------------------------------------------------------------- report


# the report package pulls in numpy and scipy: keep them out of every other command's start-up
FAIL_ON = ("regression", "any", "never")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="RUNDIR|RESULTS",
        help="a run directory (reads its results/*.json) or results files, one per variant",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write comparison.json, report.html, summary.md and junit.xml here"
        " (default: the run directory the results come from)",
    )
    p.add_argument("--baseline", metavar="VARIANT", help="compare against this variant")
    p.add_argument(
        "--headline",
        metavar="METRIC",
        help="the metric that decides the verdict (default: the one the experiment declared,"
        " else its workload's: max_ms for maps-contention); another than the declared one is"
        " marked exploratory",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--min-effect",
        type=float,
        default=None,
        metavar="FRACTION",
        help="the smallest effect of interest: an interval inside ±this is 'equivalent'"
        " (default: the experiment's workload.smallest_effect_pct, else 0.05, i.e. 5%%)",
    )
    p.add_argument(
        "--force", action="store_true", help="give verdicts even when the sides are not comparable"
    )
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="regression",
        help="exit 1 when the headline regressed (regression), when any metric regressed (any),"
        " or never (default: regression)",
    )
    p.add_argument(
        "--github-summary",
        action="store_true",
        help="also append the Markdown report to $GITHUB_STEP_SUMMARY",
    )


@command("report", "compare results: terminal table, HTML, Markdown, JSON, JUnit", _report_args)
def cmd_report(args: argparse.Namespace, console: Console) -> int:
    import shlex

    from . import report, stages, stats

    inputs = [Path(p) for p in args.inputs]
    rundir = inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None
    options = report.ReportOptions(
        stats=stats.StatsOptions(
            alpha=args.alpha,
            smallest_effect=args.min_effect,
            headline=args.headline,
            force=args.force,
            baseline=args.baseline,
        ),
        console=console,
        report_command=shlex.join(["korch", "report", *args.inputs]),
        source_dir=rundir,
    )
    code, dirs = stages.report_stage(
        inputs,
        Path(args.out) if args.out else None,
        options,
        args.fail_on,
        github_summary=args.github_summary,
    )
    written = ", ".join(report.OUTPUTS[f] for f in options.formats)
    console.print(f"\nreports written to {', '.join(map(str, dirs))}: {written}")
    return code


def _import_published_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="directory holding published-<variant>.dat files")
    p.add_argument("out", metavar="OUT_RUNDIR", help="run directory to create (results/*.json)")
    p.add_argument("--baseline", default="mmap-lock", metavar="VARIANT", help="default: mmap-lock")


@command(
    "import-published",
    "turn published per-run data (published-*.dat) into results files for 'korch report'",
    _import_published_args,
)
def cmd_import_published(args: argparse.Namespace, console: Console) -> int:
    from .report import published

    results = published.import_published(Path(args.dir), Path(args.out), baseline=args.baseline)
    for r in results:
        console.print(
            f"{r.variant}: {len(r.runs)} runs -> {Path(args.out) / 'results' / (r.variant + '.json')}"
        )
    console.print(f"next: korch report {args.out}")
    return errors.EXIT_OK


# ---------------------------------------------------------------- history


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        metavar="PATH",
        help="the store (default: $KORCH_HISTORY, else $XDG_DATA_HOME/korch/history.sqlite,"
        " else ~/.local/share/korch/history.sqlite)",
    )
    sub = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="file a run's results under its run id (repeating is a no-op)")
    add.add_argument(
        "inputs", nargs="+", metavar="RUNDIR|RESULTS", help="run directories or results files"
    )
    show = sub.add_parser("show", help="the trend of each metric per variant")
    check = sub.add_parser(
        "check", help="the newest night against the nights before it; exit 1 on a regression"
    )
    for q in (show, check):
        q.add_argument("--experiment", metavar="NAME", help="default: the newest night's")
        q.add_argument(
            "--nights",
            type=int,
            default=7,
            metavar="N",
            help="compare with up to N earlier comparable nights (default 7)",
        )
    show.add_argument(
        "--metric", action="append", metavar="KEY", help="default: the headline metric and mean_ms"
    )
    show.add_argument("--html", metavar="FILE", help="also write trend charts to FILE")
    check.add_argument(
        "--min-nights",
        type=int,
        default=3,
        metavar="N",
        help="fewer comparable earlier nights is inconclusive (default 3)",
    )
    check.add_argument(
        "--headline",
        metavar="METRIC",
        help="default: the experiment's, else its workload's (max_ms for maps-contention)",
    )
    check.add_argument(
        "--alpha", type=float, default=0.05, help="significance level (default 0.05)"
    )
    check.add_argument(
        "--min-effect",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="smallest change of the median counted as a change (default 0.05)",
    )
    check.add_argument(
        "--min-runs", type=int, default=5, metavar="N", help="fewer runs is inconclusive"
    )
    check.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="regression",
        help="exit 1 when a selftest or the headline regressed (regression), when any metric"
        " regressed too (any), or never (default: regression)",
    )
    check.add_argument("--json", metavar="FILE", help="also write the outcome as JSON")
    export = sub.add_parser("export", help="write the whole store as JSON")
    export.add_argument("--out", metavar="FILE", help="default: standard output")


@command("history", "nightly history: add a run, show trends, check for regressions", _history_args)
def cmd_history(args: argparse.Namespace, console: Console) -> int:
    import json

    from . import history
    from .fsutil import atomic_write

    db = Path(args.db) if args.db else None
    action = args.history_command
    if action == "add":
        sides = history.load_sides([Path(p) for p in args.inputs])
        with history.open_store(db) as store:
            outcomes = store.add(sides, source=" ".join(args.inputs))
        for o in outcomes:
            state = "new night" if o.new_night else "known night"
            console.print(
                f"{store.path}: run {o.run_id} ({state}): added {', '.join(o.added) or 'nothing'}"
                + (f"; already there: {', '.join(o.present)}" if o.present else "")
                + (f"; completed: {', '.join(o.replaced)}" if o.replaced else "")
                + f" ({o.values} values)"
            )
            if o.partial:
                console.print(
                    f"[yellow]warning:[/] run {o.run_id} is not complete ({', '.join(o.partial)});"
                    " its runs so far are stored, and adding the run again after"
                    " 'korch run --resume' completes them"
                )
        return errors.EXIT_OK
    with history.open_store(db, create=False) as store:
        if action == "export":
            text = json.dumps(store.export(), indent=2, sort_keys=True) + "\n"
            if args.out:
                atomic_write(Path(args.out), text)
            else:
                print(text, end="")
            return errors.EXIT_OK
        from .report import trend

        if action == "show":
            experiment, nights, trends = history.trends(store, args.experiment, args.metric)
            trend.render_trends(experiment, nights, trends, console, args.nights)
            if args.html:
                atomic_write(
                    Path(args.html), trend.render_html(experiment, nights, trends), mode=0o644
                )
                console.print(f"trend charts written to {args.html}")
            return errors.EXIT_OK
        from . import stats

        result = history.check(
            store,
            experiment=args.experiment,
            nights=args.nights,
            min_nights=args.min_nights,
            options=stats.StatsOptions(
                alpha=args.alpha,
                min_effect=args.min_effect,
                min_runs=args.min_runs,
                headline=args.headline,
            ),
        )
    trend.render_check(result, console)
    if args.json:
        atomic_write(Path(args.json), json.dumps(result.to_json(), indent=2) + "\n", mode=0o644)
    return result.exit_code(args.fail_on)


# ---------------------------------------------------------------- main


def make_console(stderr: bool) -> Console:
    """Rich on a terminal; unwrapped lines of a fixed generous width in logs and pipes."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False, soft_wrap=True)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=160)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="korch",
        description="Does this patch series change how the kernel performs? korch builds kernel "
        "variants, boots each in QEMU, runs a benchmark in the guest and compares.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"korch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, _fn) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = make_console(stderr=False)
    err = make_console(stderr=True)
    if not args.command:
        parser().print_help()
        return errors.EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for reproduce commands
    fn = COMMANDS[args.command][2]
    previous = _stop_on_sigterm()
    try:
        return fn(args, console)
    except errors.KorchError as exc:
        kind = "error" if exc.exit_code == errors.EXIT_USAGE else "failed"
        err.print(f"[bold red]korch {args.command}: {kind}:[/] ", end="")
        err.print(str(exc), markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(f"korch {args.command}: interrupted")
        return errors.EXIT_INTERRUPTED
    except OSError as exc:
        # the machine refused (a full disk, a read-only or unwritable path): not the
        # benchmark's verdict, and worth a retry once the machine is fixed
        where = f" ({exc.filename})" if exc.filename else ""
        err.print(f"[bold red]korch {args.command}: failed:[/] ", end="")
        err.print(f"{exc.strerror or exc}{where}", markup=False, highlight=False)
        todo = _OS_ERROR_HINTS.get(exc.errno or 0)
        if todo:
            err.print(f"  hint: {todo}", markup=False, highlight=False)
        return errors.EXIT_INFRA
    except Exception:
        # a bug: say so with the traceback, and never exit 1 (a regression to CI)
        err.print(
            f"[bold red]korch {args.command}: internal error (a bug in korch; please report it"
            " with the traceback below)[/]"
        )
        err.print(traceback.format_exc(), markup=False, highlight=False)
        return errors.EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free space on that file system, then run the command again"
    " (a run continues with --resume)",
    errno.EDQUOT: "free space within your quota, then run the command again",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.EACCES: "choose a path you may write, or fix its permissions",
}


def _stop_on_sigterm() -> Any:
    """SIGTERM unwinds like Ctrl-C: every command's cleanup runs (guests stopped, build
    process groups stopped, temporary directories removed) and korch says it was stopped,
    instead of dying silently with its children left running. The previous handler, to be
    restored; None when not in the main thread (no handler can be set there)."""

    def stop(signum: int, frame: object) -> None:
        raise errors.Interrupted("stopped by SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
