"""Nightly history: a SQLite store of runs, trends, and a regression check against it.

``korch history add RUNDIR...`` files a run's per-run metric values under its run id (a
*night*); ``show`` prints the trend of each metric per variant (and writes an HTML page with
trend charts); ``check`` compares the newest night with the nights before it; ``export``
writes the whole store as JSON.

The store (schema version in ``meta``)::

    nights(run_id PRIMARY KEY, experiment, started_at, added_at, source, provenance)
    sides(run_id, cell, variant, baseline, status, runs, hangs, boots, kernel_release,
          provenance)                                  one row per results file
    run_values(run_id, cell, variant, metric, run_index, boot, value)
                                                       one row per completed run and metric
    side_checks(run_id, cell, variant, test, counts)   boots per status of each selftest

It runs in WAL mode and every ``add`` is one transaction, so a process killed in the middle
of an add leaves the store as it was before the add; adding the same run again adds only
the sides not yet there (an add is idempotent by run id and side).

The check rule, for every (cell, variant) of the newest night and every metric:

* the baseline is the newest night's side in up to ``nights`` (default 7) earlier nights
  that pass the comparability guard of ``korch report`` against it (same experiment,
  accelerator, vCPUs, memory, QEMU version, host CPU model, workload parameters);
  fewer than ``min_nights`` (default 3) such nights is *inconclusive*;
* the newest night's per-run values are compared with the baseline nights' per-run values
  pooled, by the same rule as ``korch report`` (:mod:`orchestrator.stats`): a two-sided
  Mann-Whitney test whose p-value is corrected for clustering (Kish's design effect from
  the intraclass correlation, clusters being the nights of the baseline and the boots of
  the newest night, so night-to-night variation counts against significance), Holm's
  adjustment over the headline family and over the other metrics, and a ratio of medians
  with a cluster-bootstrap 95% interval (nights, then runs within them, resampled);
* *regressed* when the adjusted p is below alpha, the interval excludes 1, the median moved
  by at least ``min_effect`` (5%), and the move is in the metric's worse direction.

A selftest (an experiment's ``checks:``, or the kselftest workload's tests) that passed in
the comparable earlier nights that ran it, with no failing boot, and fails in a boot
of the newest night is a correctness regression: one failing boot suffices, as in the
report's gate (orchestrator/checks.py).

``korch history check`` exits 1 when a selftest or a headline metric regressed (any metric
with ``--fail-on any``), 3 when a headline metric could not be judged, else 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .checks import tally
from .errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, InfraError, UserError
from .fsutil import now
from .metrics import Metric
from .results import ResultsFile
from .rundir import RunDir, cell_of, expand_inputs, load_results, merge_shards, shard_of
from .stats import Verdict
from .workloads.registry import DEFAULT, metrics_of
from .workloads.registry import get as get_workload

SCHEMA_VERSION = 1
KIND = "korch-history"
DEFAULT_NIGHTS = 7
DEFAULT_MIN_NIGHTS = 3
FAIL_ON = ("regression", "any", "never")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nights (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    started_at TEXT NOT NULL,
    added_at TEXT NOT NULL,
    source TEXT NOT NULL,
    provenance TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nights_by_time ON nights (experiment, started_at);
CREATE TABLE IF NOT EXISTS sides (
    run_id TEXT NOT NULL REFERENCES nights (run_id) ON DELETE CASCADE,
    cell TEXT NOT NULL,
    variant TEXT NOT NULL,
    baseline TEXT NOT NULL,
    status TEXT NOT NULL,
    runs INTEGER NOT NULL,
    hangs INTEGER NOT NULL,
    boots INTEGER NOT NULL,
    kernel_release TEXT,
    provenance TEXT NOT NULL,
    PRIMARY KEY (run_id, cell, variant)
);
CREATE TABLE IF NOT EXISTS side_checks (
    run_id TEXT NOT NULL,
    cell TEXT NOT NULL,
    variant TEXT NOT NULL,
    test TEXT NOT NULL,
    counts TEXT NOT NULL,
    PRIMARY KEY (run_id, cell, variant, test),
    FOREIGN KEY (run_id, cell, variant) REFERENCES sides (run_id, cell, variant)
        ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS run_values (
    run_id TEXT NOT NULL,
    cell TEXT NOT NULL,
    variant TEXT NOT NULL,
    metric TEXT NOT NULL,
    run_index INTEGER NOT NULL,
    boot TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, cell, variant, metric, run_index),
    FOREIGN KEY (run_id, cell, variant) REFERENCES sides (run_id, cell, variant)
        ON DELETE CASCADE
);
"""


def default_db() -> Path:
    """``$KORCH_HISTORY``, else ``$XDG_DATA_HOME/korch/history.sqlite``, else
    ``~/.local/share/korch/history.sqlite`` (a history is data to keep, not a cache)."""
    explicit = os.environ.get("KORCH_HISTORY")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "korch" / "history.sqlite"


# ---------------------------------------------------------------- what goes in


@dataclass(frozen=True)
class Side:
    """One results file as the store keeps it: per-run values of every metric."""

    run_id: str
    experiment: str
    cell: str
    variant: str
    baseline: str
    status: str
    hangs: int
    boots: tuple[str, ...]  # boot of each completed run, in run order
    provenance: dict[str, Any]
    values: dict[str, list[float | None]]  # metric -> value per completed run (None: absent)
    # selftest -> boots per status (pass, fail, skip, timeout): the correctness checks
    checks: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        """Completed runs (hung runs have no values)."""
        return len(self.boots)


def side_of(results: ResultsFile, run_id: str | None = None, cell: str | None = None) -> Side:
    """The store's view of a results file; the run id comes from its provenance
    (``korch run`` and ``korch bench`` record it) unless given, the cell from it too
    unless given."""
    rid = run_id or results.provenance.get("run_id")
    if not rid:
        raise UserError(
            f"the results of {results.variant!r} carry no run id (made by an older korch?)",
            hint="add them from their run directory, whose run.json names the run",
        )
    data = stats.extract(results)
    values: dict[str, list[float | None]] = {}
    for m in data.metrics:
        arr = data.values[m.key]
        if np.all(np.isnan(arr)):
            continue
        values[m.key] = [None if math.isnan(v) else float(v) for v in arr]
    return Side(
        run_id=str(rid),
        experiment=results.experiment,
        cell=cell or cell_of(results),
        variant=results.variant,
        baseline=results.baseline,
        status=results.status,
        hangs=data.hangs,
        boots=tuple(data.boot_ids[c] for c in data.boot_codes),
        provenance=dict(results.provenance),
        values=values,
        checks=_check_counts(results),
    )


def _check_counts(results: ResultsFile) -> dict[str, dict[str, int]]:
    tests = sorted({t for b in results.boots if isinstance(b, dict) for t in b.get("checks") or {}})
    return {t: dict(tally(results.boots, t).counts) for t in tests}


def load_sides(paths: Sequence[Path]) -> list[Side]:
    """The results in run directories (their cells too) or results files, as sides."""
    sides: list[Side] = []
    shards: dict[tuple[str, str], list[ResultsFile]] = {}
    for path in expand_inputs(list(paths)):
        results, _ = load_results([path])
        fallback = None
        rundir = path if path.is_dir() else path.resolve().parent.parent
        if RunDir(rundir).plan.is_file():
            fallback = RunDir(rundir).info()["run_id"]
        for r in results:
            if shard_of(r) is not None:
                # a night's shards ran on several runners: filed per CPU model (a stratum),
                # so later nights are checked against nights on the same kind of machine
                stratum = f"{cell_of(r)}@{r.provenance.get('host_cpu') or 'unknown CPU'}"
                shards.setdefault((stratum, r.variant), []).append(r)
                continue
            sides.append(side_of(r, None if r.provenance.get("run_id") else fallback))
    for (stratum, _), files in shards.items():
        merged, _ = merge_shards(files)
        sides += [side_of(r, cell=stratum) for r in merged]
    return sides


# ---------------------------------------------------------------- the store


@dataclass(frozen=True)
class AddOutcome:
    """What an add did: the night, whether it was new, the sides added and already there."""

    run_id: str
    new_night: bool
    added: tuple[str, ...]
    present: tuple[str, ...]
    values: int
    replaced: tuple[str, ...] = ()  # partial sides completed by this add
    partial: tuple[str, ...] = ()  # sides stored although their run is not complete


@dataclass(frozen=True)
class Night:
    """A stored run: its id, experiment, when it was planned, and its sides."""

    run_id: str
    experiment: str
    started_at: str
    added_at: str
    source: str
    provenance: dict[str, Any]
    sides: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class Store:
    """The history store at ``path`` (created on first use). Use as a context manager."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not path.exists() and not create:
            raise UserError(
                f"{path}: no history store here", hint="add a night first: korch history add RUNDIR"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode: transactions are begun and ended explicitly below
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.OperationalError as exc:
            # the machine refused (a read-only or full file system, no permission, locked):
            # the store may be fine, and a retry on a healthy machine may work
            raise InfraError(
                f"{path}: cannot open the history store: {exc}",
                hint="check that its directory is writable and its file system has room"
                " (--db or $KORCH_HISTORY choose another store)",
            ) from None
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not a korch history store ({exc})") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (SQLite then folds the WAL back into the file)."""
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed at the end of the block, rolled back on error.
        BEGIN IMMEDIATE takes the write lock at once, so two adds of one night serialise."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            # statement by statement: executescript() would commit the open transaction
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise UserError(
                    f"{self.path}: history schema {row[0]}; this korch reads up to {SCHEMA_VERSION}",
                    hint="use a newer korch",
                )

    # -- writing ---------------------------------------------------------------------

    def add(self, sides: Sequence[Side], source: str) -> list[AddOutcome]:
        """File ``sides`` under their run ids, all in one transaction. Sides already in
        the store are left alone, so adding a run twice changes nothing."""
        if not sides:
            raise UserError("nothing to add: no results")
        by_run: dict[str, list[Side]] = {}
        for s in sides:
            by_run.setdefault(s.run_id, []).append(s)
        outcomes = []
        with self.transaction() as db:
            for rid, members in by_run.items():
                outcomes.append(self._add_night(db, rid, members, source))
        return outcomes

    def _add_night(
        self, db: sqlite3.Connection, rid: str, members: list[Side], source: str
    ) -> AddOutcome:
        experiment = _experiment_of(members)
        row = db.execute("SELECT experiment FROM nights WHERE run_id = ?", (rid,)).fetchone()
        new_night = row is None
        if new_night:
            db.execute(
                "INSERT INTO nights VALUES (?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    experiment,
                    _started_at(members),
                    now(),
                    source,
                    json.dumps(_common(members), sort_keys=True),
                ),
            )
        elif row[0] != experiment:
            raise UserError(
                f"run {rid} is in the store as experiment {row[0]!r}, not {experiment!r}"
            )
        added, present, replaced, partial, count = [], [], [], [], 0
        for s in members:
            label = f"{s.cell}/{s.variant}"
            key = (rid, s.cell, s.variant)
            known = db.execute(
                "SELECT status, runs FROM sides WHERE run_id = ? AND cell = ? AND variant = ?",
                key,
            ).fetchone()
            if known:
                old_status, old_runs = known
                # a side stored from an interrupted run is completed by a later add of the
                # same run (after --resume); a complete one is never changed
                if old_status == "complete" or (s.status != "complete" and s.runs <= old_runs):
                    present.append(label)
                    continue
                db.execute(
                    "DELETE FROM run_values WHERE run_id = ? AND cell = ? AND variant = ?", key
                )
                db.execute(
                    "DELETE FROM side_checks WHERE run_id = ? AND cell = ? AND variant = ?", key
                )
                db.execute("DELETE FROM sides WHERE run_id = ? AND cell = ? AND variant = ?", key)
                replaced.append(label)
            if s.status != "complete":
                partial.append(label)
            db.execute(
                "INSERT INTO sides VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    s.cell,
                    s.variant,
                    s.baseline,
                    s.status,
                    s.runs,
                    s.hangs,
                    len(set(s.boots)),
                    s.provenance.get("kernel_release"),
                    json.dumps(s.provenance, sort_keys=True),
                ),
            )
            count += self._insert_values(db, s)
            db.executemany(
                "INSERT INTO side_checks VALUES (?, ?, ?, ?, ?)",
                [
                    (rid, s.cell, s.variant, test, json.dumps(counts, sort_keys=True))
                    for test, counts in s.checks.items()
                ],
            )
            added.append(label)
        return AddOutcome(
            rid, new_night, tuple(added), tuple(present), count, tuple(replaced), tuple(partial)
        )

    def _insert_values(self, db: sqlite3.Connection, s: Side) -> int:
        rows = [
            (s.run_id, s.cell, s.variant, metric, i, s.boots[i], v)
            for metric, vals in s.values.items()
            for i, v in enumerate(vals)
            if v is not None and not math.isnan(v)
        ]
        db.executemany("INSERT INTO run_values VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    # -- reading ---------------------------------------------------------------------

    def nights(self, experiment: str | None = None) -> list[Night]:
        """Stored nights, oldest first (by the time they were planned, then added)."""
        query = "SELECT run_id, experiment, started_at, added_at, source, provenance FROM nights"
        args: tuple[Any, ...] = ()
        if experiment:
            query += " WHERE experiment = ?"
            args = (experiment,)
        out = {}
        for rid, exp, started, added, source, prov in self.db.execute(
            query + " ORDER BY started_at, added_at, run_id", args
        ):
            out[rid] = Night(rid, exp, started, added, source, json.loads(prov))
        for row in self.db.execute(
            "SELECT run_id, cell, variant, baseline, status, runs, hangs, boots,"
            " kernel_release, provenance FROM sides"
        ):
            night = out.get(row[0])
            if night is not None:
                night.sides[(row[1], row[2])] = {
                    "baseline": row[3],
                    "status": row[4],
                    "runs": row[5],
                    "hangs": row[6],
                    "boots": row[7],
                    "kernel_release": row[8],
                    "provenance": json.loads(row[9]),
                    "checks": {},
                }
        for rid, cell, variant, test, counts in self.db.execute(
            "SELECT run_id, cell, variant, test, counts FROM side_checks"
        ):
            night = out.get(rid)
            if night is not None and (cell, variant) in night.sides:
                night.sides[(cell, variant)]["checks"][test] = json.loads(counts)
        return list(out.values())

    def values(
        self, run_id: str, cell: str, variant: str, metric: str
    ) -> tuple[np.ndarray, list[str]]:
        """A side's values of ``metric`` in run order, and each run's boot."""
        rows = self.db.execute(
            "SELECT value, boot FROM run_values WHERE run_id = ? AND cell = ? AND variant = ?"
            " AND metric = ? ORDER BY run_index",
            (run_id, cell, variant, metric),
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.float64), [r[1] for r in rows]

    def medians(self, cell: str, variant: str, metric: str) -> dict[str, float]:
        """Per night (run id), the median of ``metric`` over the side's runs."""
        out: dict[str, list[float]] = {}
        for rid, v in self.db.execute(
            "SELECT run_id, value FROM run_values WHERE cell = ? AND variant = ? AND metric = ?",
            (cell, variant, metric),
        ):
            out.setdefault(rid, []).append(v)
        return {rid: float(np.median(vs)) for rid, vs in out.items()}

    def integrity(self) -> str:
        """SQLite's own consistency check plus korch's: every side has its night."""
        ok = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            return ok
        bad = self.db.execute("PRAGMA foreign_key_check").fetchall()
        return "ok" if not bad else f"{len(bad)} rows without their parent"

    def export(self) -> dict[str, Any]:
        """Everything in the store as one JSON-ready object."""
        nights = []
        for n in self.nights():
            sides = []
            for (cell, variant), side in sorted(n.sides.items()):
                values: dict[str, list[list[Any]]] = {}
                for metric, i, boot, v in self.db.execute(
                    "SELECT metric, run_index, boot, value FROM run_values WHERE run_id = ?"
                    " AND cell = ? AND variant = ? ORDER BY metric, run_index",
                    (n.run_id, cell, variant),
                ):
                    values.setdefault(metric, []).append([i, boot, v])
                sides.append({"cell": cell, "variant": variant, **side, "values": values})
            nights.append(
                {
                    "run_id": n.run_id,
                    "experiment": n.experiment,
                    "started_at": n.started_at,
                    "added_at": n.added_at,
                    "source": n.source,
                    "provenance": n.provenance,
                    "sides": sides,
                }
            )
        return {"schema": SCHEMA_VERSION, "kind": KIND, "nights": nights}


def _experiment_of(members: list[Side]) -> str:
    found = {s.experiment for s in members}
    if len(found) != 1:
        raise UserError(f"one run holds results of several experiments: {', '.join(sorted(found))}")
    return found.pop()


def _started_at(members: list[Side]) -> str:
    planned = [str(s.provenance["planned_at"]) for s in members if s.provenance.get("planned_at")]
    return min(planned) if planned else now()


def _common(members: list[Side]) -> dict[str, Any]:
    """The provenance fields every side shares (host, QEMU, accelerator, workload, ...)."""
    first = members[0].provenance
    return {k: v for k, v in first.items() if all(m.provenance.get(k) == v for m in members[1:])}


def open_store(path: Path | None, *, create: bool = True) -> Store:
    """The store at ``path`` or the default location."""
    return Store(path or default_db(), create=create)


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class CorrectnessCheck:
    """One selftest of one (cell, variant): the newest night's boots against the comparable
    nights before it. Like the checks' gate in a report: a test that passed, with no failing boot, in
    every earlier night that ran it and fails in a boot of the newest is a regression."""

    cell: str
    variant: str
    test: str
    newest: dict[str, int]  # status -> boots
    earlier: tuple[str, ...]  # run ids of the comparable nights that ran it, newest first
    regressed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "variant": self.variant,
            "test": self.test,
            "newest": dict(self.newest),
            "earlier_nights": list(self.earlier),
            "regressed": self.regressed,
            "reason": self.reason,
        }


def _correctness(
    cell: str, variant: str, newest: dict[str, Any], used: list[Night]
) -> list[CorrectnessCheck]:
    out = []
    for test, counts in sorted((newest.get("checks") or {}).items()):
        runs = [(n.run_id, n.sides[(cell, variant)].get("checks", {}).get(test)) for n in used]
        runs = [(rid, c) for rid, c in runs if c]
        failed_before = [rid for rid, c in runs if c.get("fail")]
        fails = int(counts.get("fail", 0))
        boots = sum(int(v) for v in counts.values())
        regressed = False
        if not fails:
            reason = f"passes ({counts.get('pass', 0)} of {boots} boots passed)"
        elif not runs:
            reason = f"fails in {fails} of {boots} boots; no earlier comparable night ran it"
        elif failed_before:
            reason = (
                f"fails in {fails} of {boots} boots, and failed before too (night"
                f" {failed_before[0]}): not new"
            )
        elif all(c.get("pass") for _, c in runs):
            regressed = True
            reason = (
                f"fails in {fails} of {boots} boots of the newest night; passed with no"
                f" failing boot in {len(runs)} earlier comparable night(s)"
            )
        else:
            reason = f"fails in {fails} of {boots} boots; earlier nights only skipped it"
        out.append(
            CorrectnessCheck(cell, variant, test, dict(counts), tuple(r for r, _ in runs),
                             regressed, reason)
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class SeriesCheck:
    """One metric of one (cell, variant): the newest night against its baseline nights."""

    cell: str
    variant: str
    metric: str
    family: str  # "headline" or "secondary"
    baseline_nights: tuple[str, ...]  # run ids, newest first
    n_baseline: int
    n_newest: int
    baseline_median: float | None
    newest_median: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    design_effect: float | None
    verdict: Verdict
    reason: str
    better: str = "lower"  # the metric's better direction, as its workload declares it
    spec: Metric | None = field(default=None, compare=False)  # the metric's definition

    def to_json(self) -> dict[str, Any]:
        """The series' figures and verdict as JSON-ready values."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "spec"} | {
            "verdict": str(self.verdict),
            "baseline_nights": list(self.baseline_nights),
        }


@dataclass(frozen=True)
class CheckResult:
    """The outcome of ``korch history check``."""

    experiment: str
    newest: Night
    headline: str
    nights: int
    min_nights: int
    checks: tuple[SeriesCheck, ...]
    skipped: dict[str, list[tuple[str, str]]]  # "cell/variant" -> [(run id, why not comparable)]
    correctness: tuple[CorrectnessCheck, ...] = ()

    def exit_code(self, fail_on: str = "regression") -> int:
        """1 when a selftest regressed or a headline metric regressed (any metric with
        ``any``), else 3 when a headline metric could not be judged, else 0; ``never``
        always gives 0."""
        if fail_on not in FAIL_ON:
            raise UserError(f"--fail-on {fail_on!r}: choose one of {', '.join(FAIL_ON)}")
        if fail_on == "never":
            return EXIT_OK
        if any(c.regressed for c in self.correctness):
            return EXIT_REGRESSION
        heads = [c for c in self.checks if c.family == "headline"]
        counted = self.checks if fail_on == "any" else heads
        if any(c.verdict == Verdict.REGRESSED for c in counted):
            return EXIT_REGRESSION
        if not heads or any(c.verdict == Verdict.INCONCLUSIVE for c in heads):
            return EXIT_INCONCLUSIVE
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The whole outcome (``korch history check --json``)."""
        return {
            "kind": "korch-history-check",
            "experiment": self.experiment,
            "newest": {"run_id": self.newest.run_id, "started_at": self.newest.started_at},
            "headline": self.headline,
            "nights": self.nights,
            "min_nights": self.min_nights,
            "checks": [c.to_json() for c in self.checks],
            "correctness": [c.to_json() for c in self.correctness],
            "not_comparable": {
                k: [{"run_id": r, "why": w} for r, w in v] for k, v in self.skipped.items()
            },
        }


def _comparable(exp: str, variant: str, newest: dict, other: dict) -> str | None:
    """Why ``other`` (a stored side) cannot be compared with ``newest``, or None."""
    a = ResultsFile(exp, variant, variant, provenance=other["provenance"])
    b = ResultsFile(exp, variant, variant, provenance=newest["provenance"])
    diffs = stats.comparability(a, b)
    if not diffs:
        return None
    return "; ".join(f"{d.label} {d.baseline!r} vs {d.candidate!r}" for d in diffs)


def _metrics_of(night: Night) -> tuple[Metric, ...]:
    """The metrics of the workload a night's results were measured with."""
    for side in night.sides.values():
        return metrics_of(side["provenance"])
    return metrics_of({})


def _headline_of(newest: Night, options: stats.StatsOptions) -> str:
    metrics = _metrics_of(newest)
    if options.headline:
        return stats.find(metrics, options.headline).key
    for side in newest.sides.values():
        workload = side["provenance"].get("workload") or {}
        named = workload.get("headline")
        if named:
            return stats.find(metrics, str(named)).key
        return get_workload(str(workload.get("name") or DEFAULT)).default_headline(workload)
    return stats.DEFAULT_HEADLINE


def check(
    store: Store,
    *,
    experiment: str | None = None,
    nights: int = DEFAULT_NIGHTS,
    min_nights: int = DEFAULT_MIN_NIGHTS,
    options: stats.StatsOptions | None = None,
) -> CheckResult:
    """The newest night of ``experiment`` (default: the newest night's experiment) against
    the nights before it; see the module's docstring for the rule."""
    options = options or stats.StatsOptions()
    if nights < 1 or min_nights < 1 or min_nights > nights:
        raise UserError(
            f"--nights {nights} and --min-nights {min_nights}: need 1 <= min-nights <= nights"
        )
    everything = store.nights(experiment)
    if not everything:
        where = f" of experiment {experiment!r}" if experiment else ""
        raise UserError(
            f"{store.path}: no nights{where} in the store",
            hint="add one with: korch history add RUNDIR",
        )
    if experiment is None:
        experiment = everything[-1].experiment
        everything = [n for n in everything if n.experiment == experiment]
    newest, earlier = everything[-1], everything[-2::-1]
    headline = _headline_of(newest, options)
    drafts: list[SeriesCheck] = []
    correctness: list[CorrectnessCheck] = []
    skipped: dict[str, list[tuple[str, str]]] = {}
    for (cell, variant), side in sorted(newest.sides.items()):
        used: list[Night] = []
        for n in earlier:
            other = n.sides.get((cell, variant))
            if other is None:
                continue
            why = _comparable(experiment, variant, side, other)
            if why:
                skipped.setdefault(f"{cell}/{variant}", []).append((n.run_id, why))
                continue
            used.append(n)
            if len(used) == nights:
                break
        correctness += _correctness(cell, variant, side, used)
        for m in _metrics_of(newest):
            sc = _check_series(store, newest, used, cell, variant, m, headline, options, min_nights)
            if sc is not None:
                drafts.append(sc)
    for family in ("headline", "secondary"):
        members = [i for i, d in enumerate(drafts) if d.family == family and d.p_value is not None]
        adjusted = stats.holm([drafts[i].p_value or 0.0 for i in members])
        for i, a in zip(members, adjusted, strict=True):
            drafts[i] = _decide(SeriesCheck(**{**drafts[i].__dict__, "p_adjusted": a}), options)
    return CheckResult(
        experiment=experiment,
        newest=newest,
        headline=headline,
        nights=nights,
        min_nights=min_nights,
        checks=tuple(drafts),
        skipped=skipped,
        correctness=tuple(correctness),
    )


def _check_series(
    store: Store,
    newest: Night,
    used: list[Night],
    cell: str,
    variant: str,
    m: Metric,
    headline: str,
    options: stats.StatsOptions,
    min_nights: int,
) -> SeriesCheck | None:
    metric = m.key
    c, c_boots = store.values(newest.run_id, cell, variant, metric)
    if c.size == 0:
        return None
    parts, codes = [], []
    for j, n in enumerate(used):
        v, _ = store.values(n.run_id, cell, variant, metric)
        if v.size:
            parts.append(v)
            codes.append(np.full(v.size, j, dtype=np.int64))
    b = np.concatenate(parts) if parts else np.zeros(0)
    b_codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    _, c_codes = np.unique(np.array(c_boots), return_inverse=True)
    common: dict[str, Any] = dict(
        cell=cell, variant=variant, metric=metric, better=m.better, spec=m,
        family="headline" if metric == headline else "secondary",
        baseline_nights=tuple(n.run_id for n in used),
        n_baseline=int(b.size), n_newest=int(c.size),
        baseline_median=float(np.median(b)) if b.size else None,
        newest_median=float(np.median(c)),
    )  # fmt: skip
    empty: dict[str, Any] = dict(
        ratio=None, ci_low=None, ci_high=None, p_value=None, p_adjusted=None, design_effect=None
    )
    if len(parts) < min_nights:
        return SeriesCheck(
            **common, **empty, verdict=Verdict.INCONCLUSIVE,
            reason=f"{len(parts)} comparable earlier night(s) with this metric;"
            f" at least {min_nights} are needed",
        )  # fmt: skip
    ratio = float(stats.median_ratio(common["newest_median"], common["baseline_median"]))
    seed = np.random.SeedSequence([options.seed, zlib.crc32(f"{cell}/{variant}/{metric}".encode())])
    rng = np.random.default_rng(seed)
    ratios = stats.median_ratio(
        stats.resampled_medians(c, stats.resample_counts(c_codes, options.resamples, rng)),
        stats.resampled_medians(b, stats.resample_counts(b_codes, options.resamples, rng)),
    )
    ratios = ratios[~np.isnan(ratios)]
    deff = stats.design_effect(c, c_codes, b, b_codes)
    tail = stats.expanded_tail(0.05, min(b.size, c.size) / deff)
    low, high = (float(x) for x in np.quantile(ratios, [tail, 1.0 - tail], method="inverted_cdf"))
    enough = b.size >= options.min_runs and c.size >= options.min_runs
    return SeriesCheck(
        **common, ratio=ratio, ci_low=low, ci_high=high,
        p_value=stats.mann_whitney_p(c, b, deff) if enough else None,
        p_adjusted=None, design_effect=deff, verdict=Verdict.INCONCLUSIVE,
        reason="" if enough else (
            f"too few runs: {b.size} (baseline nights) and {c.size} (newest night);"
            f" at least {options.min_runs} per side are needed"
        ),
    )  # fmt: skip


def _decide(sc: SeriesCheck, options: stats.StatsOptions) -> SeriesCheck:
    """The rule of :mod:`orchestrator.stats` (``korch report``) for one series."""

    def verdict(v: Verdict, reason: str) -> SeriesCheck:
        return SeriesCheck(**{**sc.__dict__, "verdict": v, "reason": reason})

    assert sc.p_adjusted is not None and sc.ratio is not None
    assert sc.ci_low is not None and sc.ci_high is not None
    p_text = "p < 0.001" if sc.p_adjusted < 0.001 else f"p = {sc.p_adjusted:.3g}"
    if sc.p_adjusted >= options.alpha:
        return verdict(Verdict.NO_CHANGE, f"Holm-adjusted {p_text} is not below {options.alpha:g}")
    if sc.ci_low <= 1.0 <= sc.ci_high:
        return verdict(
            Verdict.NO_CHANGE,
            f"Holm-adjusted {p_text}, but the 95% interval [{sc.ci_low:.3g}, {sc.ci_high:.3g}]"
            " of the ratio includes 1",
        )
    if abs(sc.ratio - 1.0) < options.min_effect:
        return verdict(
            Verdict.NO_CHANGE,
            f"significant ({p_text}) but the change {100 * (sc.ratio - 1):+.1f}% is smaller"
            f" than the minimum effect {100 * options.min_effect:g}%",
        )
    better = (sc.ratio < 1.0) == (sc.better == "lower")
    return verdict(
        Verdict.IMPROVED if better else Verdict.REGRESSED,
        f"median {100 * (sc.ratio - 1):+.1f}% against {len(sc.baseline_nights)} nights,"
        f" 95% interval of the ratio [{sc.ci_low:.3g}, {sc.ci_high:.3g}], Holm-adjusted {p_text}",
    )


# ---------------------------------------------------------------- trends


@dataclass(frozen=True)
class Trend:
    """One metric of one (cell, variant) over the nights: the median of each night's runs."""

    cell: str
    variant: str
    metric: str
    points: tuple[tuple[Night, float], ...]  # oldest first
    # the metric's definition, as the newest night's workload declares it
    spec: Metric | None = field(default=None, compare=False)

    def baseline(self, nights: int) -> float | None:
        """The median of the nightly medians of up to ``nights`` nights before the newest."""
        before = [v for _, v in self.points[:-1]][-nights:]
        return float(np.median(before)) if before else None


def trends(
    store: Store, experiment: str | None = None, metrics: Sequence[str] | None = None
) -> tuple[str, list[Night], list[Trend]]:
    """The experiment (default: the newest night's), its nights, and a trend per cell,
    variant and metric (default: the headline metric and the per-run mean)."""
    everything = store.nights(experiment)
    if not everything:
        raise UserError(
            f"{store.path}: no nights in the store", hint="add one with: korch history add RUNDIR"
        )
    experiment = experiment or everything[-1].experiment
    chosen = [n for n in everything if n.experiment == experiment]
    if metrics:
        known = _metrics_of(chosen[-1])
        keys = [stats.find(known, m).key for m in metrics]
    else:
        head = _headline_of(chosen[-1], stats.StatsOptions())
        second = [m.key for m in _metrics_of(chosen[-1]) if m.key == "mean_ms"]
        keys = list(dict.fromkeys([head, *second]))
    sides = sorted({k for n in chosen for k in n.sides})
    defined = {m.key: m for m in _metrics_of(chosen[-1])}
    out = []
    for cell, variant in sides:
        for key in keys:
            medians = store.medians(cell, variant, key)
            pts = tuple((n, medians[n.run_id]) for n in chosen if n.run_id in medians)
            if pts:
                out.append(Trend(cell, variant, key, pts, defined.get(key)))
    return experiment, chosen, out
