"""The run directory: its layout, and loading what korch wrote into it.

The one module that knows where things live in RUNDIR; run, stages, report, history and
bisect ask it instead of joining path names themselves::

    RUNDIR/
      run.json                 the plan (RunDir.plan, RunDir.info): settings, seed, run id
      experiment.yaml          the experiment as planned
      guest-packages.txt       its guest.packages, for a bench job to install
      results/<variant>.json   one results file per variant (RunDir.results)
      build/<variant>/         the kernel and its checks' programs (build.export)
      boot/<variant>-<block>[.<attempt>]/   console.log, qemu.log, checks/, the workload's
                               outputs (command/, kselftest/) (RunDir.boot)
      aa/                      an A/A run beside the A/B one (RunDir(root, aa=True).base)
      cells/<cell>/            a matrix cell, itself a run directory
      [cells/<cell>/]shards/<n>/   a shard of a cell's blocks, itself a run directory
      comparison.json report.html summary.md junit.xml   the reports

A directory that holds ``results/`` is one run's; one without is a matrix or a sharded
run whose cells and shards :func:`expand_inputs` finds.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError
from .fsutil import stable_hash, sweep_stale
from .results import ResultsFile

PLAN_FILE = "run.json"
RESULTS_DIR = "results"
DEFAULT_CELL = "default"
CELLS_DIR = "cells"
SHARDS_DIR = "shards"
AA_SUBDIR = "aa"
AA_DIR = Path(AA_SUBDIR) / RESULTS_DIR
GUEST_PACKAGES = "guest-packages.txt"  # the experiment's guest.packages, for a bench job


class RunDir:
    """Paths inside a run directory (``aa`` runs live in RUNDIR/aa)."""

    def __init__(self, root: Path, aa: bool = False) -> None:
        self.root = root
        self.base = root / AA_SUBDIR if aa else root

    @property
    def plan(self) -> Path:
        return self.base / PLAN_FILE

    @property
    def results_dir(self) -> Path:
        return self.base / RESULTS_DIR

    def results(self, side: str) -> Path:
        return self.base / RESULTS_DIR / f"{side}.json"

    def info(self) -> dict[str, Any]:
        """run.json: the plan, the reproduce command, when it was made, the run id."""
        if not self.plan.exists():
            raise UserError(
                f"{self.root} holds no korch run ({self.plan} is missing)",
                hint="give the RUNDIR that 'korch run' or 'korch plan' wrote",
            )
        try:
            obj = json.loads(self.plan.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{self.plan}: not valid JSON ({exc})",
                hint="the run's plan is damaged; plan the run again into a new directory",
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("plan"), dict):
            raise UserError(
                f"{self.plan}: not a korch plan (no 'plan' object)",
                hint="give the RUNDIR that 'korch run' or 'korch plan' wrote",
            )
        obj.setdefault("run_id", run_id(obj))
        return obj

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one korch: a second korch booting into the same
        directory would rerun the same missing boots, remove the first's boot directories
        and overwrite its results. The lock is the kernel's (flock), so it goes with the
        process however that ends; the file names the holder's pid for the message."""
        self.base.mkdir(parents=True, exist_ok=True)
        path = self.base / ".korch.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise UserError(
                    f"another korch (pid {holder}) is running in {self.base}",
                    hint="wait for it to finish (then --resume if runs are missing),"
                    " or choose another --out",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            # what a korch killed outright here left half-written (it held this lock)
            sweep_stale(self.base, self.base / RESULTS_DIR, *self.base.glob("build/*"))
            yield
        finally:
            os.close(fd)

    def boot(self, side: str, n: int, attempt: int) -> Path:
        suffix = f".{attempt}" if attempt > 1 else ""
        return self.base / "boot" / f"{side}-{n}{suffix}"


def run_id(info: dict[str, Any]) -> str:
    """A run's stable id: its plan and the moment it was planned. Every copy of the run
    directory (CI artifacts, the cells of a matrix) carries the same id, which the history
    store uses to add a night once."""
    return stable_hash({"created": info.get("created"), "plan": info.get("plan")})[:16]


def shard_dir(cell_dir: Path, shard: int) -> Path:
    """Where shard ``shard`` of a cell's blocks lives: a run directory of its own."""
    return cell_dir / SHARDS_DIR / str(shard)


def cell_of(results: ResultsFile) -> str:
    """The matrix cell a results file belongs to (``default`` outside a matrix)."""
    cell = results.provenance.get("cell") or {}
    return str(cell.get("id") or DEFAULT_CELL)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Report inputs with a matrix run directory replaced by its cells' directories, and a
    sharded one by its shards' directories."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir() or (p / RESULTS_DIR).is_dir():
            out.append(p)
            continue
        found = sorted(
            d
            for pattern in ("*", f"*/{SHARDS_DIR}/*")
            for d in (p / CELLS_DIR).glob(pattern)
            if (d / RESULTS_DIR).is_dir()
        ) + sorted(d for d in (p / SHARDS_DIR).glob("*") if (d / RESULTS_DIR).is_dir())
        out += found or [p]
    return out


def shard_of(results: ResultsFile) -> dict[str, Any] | None:
    """The shard a results file holds (index, of, blocks), or None for a whole run."""
    shard = results.provenance.get("shard")
    return shard if isinstance(shard, dict) and "index" in shard else None


HOST_KEYS = ("host", "host_cpu")


def merge_shards(members: list[ResultsFile]) -> tuple[list[ResultsFile], list[str]]:
    """One results file per variant from the shards' files of one cell, and warnings.

    Each boot and run keeps the host it ran on (``host``, ``host_cpu``) and its ``shard``,
    so the statistics pair the variants within a block only where one machine booted the
    block, and the report can show the effect per shard. The merged provenance lists the
    shards (``shards``: index, blocks, host, CPU model, status); its host fields name every
    machine, the same on every side when each shard ran every variant. A shard planned but
    absent, or cut short, is said in the warnings: the report then uses the complete blocks
    it has."""
    by_variant: dict[str, list[ResultsFile]] = {}
    for r in members:
        by_variant.setdefault(r.variant, []).append(r)
    merged: list[ResultsFile] = []
    warnings: list[str] = []
    planned: set[int] = set()
    present: dict[str, set[int]] = {}
    for variant, files in by_variant.items():
        shards = [shard_of(f) for f in files]
        if all(s is None for s in shards):
            merged += files
            continue
        if any(s is None for s in shards):
            raise UserError(
                f"results of variant {variant!r} mix a whole run with shards of one",
                hint="report the shards of one planned run (korch plan --shards) together",
            )
        indices = [int(s["index"]) for s in shards if s is not None]
        if len(set(indices)) != len(indices):
            dup = sorted({i for i in indices if indices.count(i) > 1})
            raise UserError(
                f"two results files of variant {variant!r} hold shard {dup[0]}",
                hint="give each bench job's results once",
            )
        run_ids = {f.provenance.get("run_id") for f in files}
        if len(run_ids) != 1:
            raise UserError(
                f"the shards of variant {variant!r} come from different planned runs",
                hint="report the shards of one korch plan together",
            )
        pairs = sorted(
            ((s, f) for s, f in zip(shards, files, strict=True) if s is not None),
            key=lambda sf: int(sf[0]["index"]),
        )
        ordered = [f for _, f in pairs]
        first = ordered[0]
        out = ResultsFile(
            experiment=first.experiment,
            variant=variant,
            baseline=first.baseline,
            provenance=dict(first.provenance),
            status="complete" if all(f.status == "complete" for f in ordered) else "interrupted",
            interruption=next((f.interruption for f in ordered if f.interruption), None),
        )
        listing = []
        for s, f in pairs:
            where = {k: f.provenance.get(k) for k in HOST_KEYS}
            out.boots += [{**b, "shard": s["index"], **where} for b in f.boots]
            out.runs += [{**r, "shard": s["index"], **where} for r in f.runs]
            listing.append({**s, **where, "status": f.status})
            planned.update(range(1, int(s["of"]) + 1))
        present[variant] = {int(s["index"]) for s in listing}
        for key in HOST_KEYS:
            out.provenance[key] = "; ".join(sorted({str(x[key]) for x in listing}))
        out.provenance.pop("shard", None)
        out.provenance["shards"] = listing
        design = dict(out.provenance.get("design") or {})
        design["blocks_run"] = sum(
            int((f.provenance.get("design") or {}).get("blocks_run") or 0) for f in ordered
        )
        design["stop"] = "; ".join(
            str((f.provenance.get("design") or {}).get("stop") or "cut short") for f in ordered
        )
        out.provenance["design"] = design
        for s, f in pairs:
            if f.status != "complete":
                warnings.append(
                    f"Shard {s['index']} of {variant} ended early"
                    f" ({(f.interruption or {}).get('reason', f.status)}); its complete blocks"
                    " are used."
                )
        merged.append(out)
    if planned:
        for variant, have in sorted(present.items()):
            missing = sorted(planned - have)
            if missing:
                warnings.append(
                    f"No results of {variant} from shard(s) {', '.join(map(str, missing))} of"
                    f" {max(planned)}: their blocks are missing from the comparison."
                )
    return merged, warnings


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block.

    Results files hold millions of small lists (histogram pairs) that live until the
    report is written and contain no cycles; while they are parsed and analysed, every
    automatic collection rescans all of them for nothing (about half of the parse time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_results(paths: Sequence[Path]) -> tuple[list[ResultsFile], Path | None]:
    """Results files named on a command line: run directories (every ``results/*.json``)
    or single files. Returns them with the run directory they share, or ``None`` when they
    come from several (or from no run directory). A run directory that holds only an A/A
    run (``aa/results``) contributes no files; :func:`write_reports` then reports the A/A."""
    found: list[ResultsFile] = []
    dirs: set[Path] = set()
    with collector_paused():
        _load_into(paths, found, dirs)
    return found, (next(iter(dirs)) if len(dirs) == 1 else None)


def _load_into(paths: Sequence[Path], found: list[ResultsFile], dirs: set[Path]) -> None:
    for path in paths:
        if path.is_dir():
            files = sorted((path / RESULTS_DIR).glob("*.json"))
            # an A/A-only run directory contributes no results: write_reports reports its A/A
            if not files and not any((path / AA_DIR).glob("*.json")):
                raise UserError(
                    f"{path}: no results/*.json in this directory",
                    hint="give a run directory written by 'korch run', or results files",
                )
            found += [ResultsFile.load(f) for f in files]
            dirs.add(path.resolve())
        elif path.exists():
            found.append(ResultsFile.load(path))
            parent = path.resolve().parent
            dirs.add(parent.parent if parent.name == RESULTS_DIR else parent)
        else:
            raise UserError(f"{path}: no such run directory or results file")


def load_noise_floor(rundir: Path) -> list[ResultsFile] | None:
    """The A/A results under ``rundir/aa/results`` in name order, or ``None`` without any."""
    files = sorted((rundir / AA_DIR).glob("*.json"))
    if not files:
        return None
    with collector_paused():
        return [ResultsFile.load(f) for f in files]
