"""Command line: parse, build one domain object, call it, map errors to exit codes.

Subcommands register themselves in :data:`COMMANDS` with :func:`command`; each gets the
parsed arguments and a rich console and returns an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__, config, errors
from .fsutil import cache_root

Handler = Callable[[argparse.Namespace, Console], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}

EPILOG = """exit codes: 0 no gated regression, 1 regression gate tripped, 2 infrastructure failure
(build, boot, ssh; safe to retry), 3 inconclusive, 4 guest panic or kernel splat,
64 usage or configuration error.  Cache: $KORCH_CACHE, else $XDG_CACHE_HOME/korch, else ~/.cache/korch."""


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
    console.print(
        f"{exp.path}: ok ({exp.name}: {len(exp.variants)} variants, baseline {exp.baseline})"
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
    p.add_argument("--no-ccache", action="store_true", help="compile without ccache")


@command("build", "build the experiment's kernel variants (cached by content)", _build_args)
def cmd_build(args: argparse.Namespace, console: Console) -> int:
    from . import build
    from .ui import progress_for

    exp = load_experiment(args.experiment)
    with progress_for(console) as progress:
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
        console.print(f"artifacts copied to {Path(args.out) / 'build'}")
    return errors.EXIT_OK


# ---------------------------------------------------------------- run


def _run_args(p: argparse.ArgumentParser) -> None:
    _experiment_arg(p)
    p.add_argument("--runs", type=int, metavar="N", help="runs per boot (overrides workload.runs)")
    p.add_argument(
        "--boots", type=int, metavar="N", help="boots per variant (overrides workload.boots)"
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="length of one run (overrides workload.duration_s)",
    )
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="run only these variants (repeatable; keep the baseline)",
    )
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="override vm.accel")
    p.add_argument(
        "--out", metavar="RUNDIR", help="run directory (default: runs/<experiment>-<timestamp>)"
    )
    p.add_argument(
        "--resume",
        metavar="RUNDIR",
        help="complete the missing runs of an interrupted run, with its saved settings",
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


@command("run", "build, boot and benchmark every variant, then report (the main job)", _run_args)
def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from . import run

    return run.main(args, console)


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
    p.add_argument("experiment", help="experiment YAML file")
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
        config.load(Path(args.experiment)),
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
        help="the metric that decides the verdict (default: the experiment's, else max_ms)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--min-effect",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="smallest change of the median counted as a change (default 0.05, i.e. 5%%)",
    )
    p.add_argument(
        "--min-runs", type=int, default=5, metavar="N", help="fewer runs per side is inconclusive"
    )
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=1, help="bootstrap seed (default 1)")
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

    from . import report, stats

    results, rundir = report.load_results([Path(p) for p in args.inputs])
    out = Path(args.out) if args.out else rundir
    if out is None:
        raise errors.UserError(
            "the results come from several run directories; where should the reports go?",
            hint="name an output directory with --out",
        )
    options = report.ReportOptions(
        stats=stats.StatsOptions(
            alpha=args.alpha,
            min_effect=args.min_effect,
            min_runs=args.min_runs,
            resamples=args.resamples,
            seed=args.seed,
            headline=args.headline,
            force=args.force,
            baseline=args.baseline,
        ),
        console=console,
        report_command=shlex.join(["korch", "report", *args.inputs]),
        source_dir=rundir,
    )
    comparison = report.write_reports(out, results, options)
    if args.github_summary:
        report.append_step_summary(comparison)
    written = ", ".join(report.OUTPUTS[f] for f in options.formats)
    console.print(f"\nreports written to {out}: {written}")
    return report.exit_code(comparison, args.fail_on)


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
    try:
        return fn(args, console)
    except errors.KorchError as exc:
        kind = "error" if exc.exit_code == errors.EXIT_USAGE else "failed"
        err.print(f"[bold red]korch {args.command}: {kind}:[/] ", end="")
        err.print(str(exc), markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(f"korch {args.command}: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
