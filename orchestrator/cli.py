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
