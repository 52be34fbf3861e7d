"""Nightly history: add (idempotent, one transaction), show, check, export; a SIGKILL during
an add leaves the store as it was."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from orchestrator import history, stats
from orchestrator.cli import main
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, UserError
from orchestrator.report import trend
from orchestrator.report.synthetic import provenance, synthetic_results
from orchestrator.results import ResultsFile
from orchestrator.stats import Verdict

VARIANTS = ("mmap-lock", "per-vma")


def night(
    i: int,
    *,
    scale: dict[str, float] | None = None,
    host_cpu: str | None = None,
    runs: int = 10,
    cell: dict[str, Any] | None = None,
) -> list[ResultsFile]:
    """Night ``i``: both variants, 2 boots of ``runs`` runs, each night shifted a little
    (a night-level factor, as a new kernel build and a new host day would)."""
    rng = np.random.default_rng(1000 + i)
    out = []
    for k, v in enumerate(VARIANTS):
        prov = provenance(v)
        prov.update(run_id=f"night-{i:02d}", planned_at=f"2026-11-{i:02d}T02:17:00Z")
        if host_cpu:
            prov["host_cpu"] = host_cpu
        if cell:
            prov["cell"] = cell
        factor = float(np.exp(rng.normal(0.0, 0.03))) * (scale or {}).get(v, 1.0)
        out.append(
            synthetic_results(
                v,
                baseline=VARIANTS[0],
                runs=runs,
                boots=2,
                seed=100 * i + k,
                scale=factor,
                boot_sd=0.02,
                ops=1500,
                prov=prov,
            )
        )
    return out


def fill(store: history.Store, nights: list[list[ResultsFile]]) -> None:
    for results in nights:
        store.add([history.side_of(r) for r in results], source="test")


@pytest.fixture
def store(tmp_path: Path) -> history.Store:
    s = history.Store(tmp_path / "h.sqlite")
    yield s
    s.close()


def test_an_interrupted_run_is_completed_by_a_later_add(store: history.Store) -> None:
    # adding an interrupted run kept its partial data for good: the add after --resume said
    # "already there" and stored nothing
    full = night(2)
    partial = []
    for r in night(2):
        r.runs = r.runs[:4]
        r.status = "interrupted"
        r.interruption = {"reason": "stopped by SIGTERM", "boot": None, "at": None}
        partial.append(r)
    (first,) = store.add([history.side_of(r) for r in partial], source="runs/n2")
    assert first.partial == ("default/mmap-lock", "default/per-vma")
    assert store.values("night-02", "default", "per-vma", "max_ms")[0].size == 4
    (again,) = store.add([history.side_of(r) for r in partial], source="runs/n2")
    assert again.added == () and again.present == first.added  # nothing new: no change
    (done,) = store.add([history.side_of(r) for r in full], source="runs/n2")
    assert done.replaced == done.added == ("default/mmap-lock", "default/per-vma")
    assert done.partial == ()
    assert store.values("night-02", "default", "per-vma", "max_ms")[0].size == 10
    (last,) = store.add([history.side_of(r) for r in full], source="runs/n2")
    assert last.added == () and last.replaced == ()  # a complete side is never changed
    assert store.integrity() == "ok"


def test_add_is_one_night_and_idempotent(store: history.Store) -> None:
    sides = [history.side_of(r) for r in night(1)]
    (first,) = store.add(sides, source="runs/n1")
    assert first.new_night and first.added == ("default/mmap-lock", "default/per-vma")
    assert first.values > 0
    (again,) = store.add(sides, source="runs/n1")
    assert not again.new_night and again.added == () and again.values == 0
    assert again.present == first.added
    (n,) = store.nights()
    assert n.run_id == "night-01" and n.started_at == "2026-11-01T02:17:00Z"
    assert set(n.sides) == {("default", "mmap-lock"), ("default", "per-vma")}
    assert n.provenance["host_cpu"] == "Synthetic CPU @ 3.0GHz"  # shared by both sides
    assert "kernel_version_string" not in n.provenance  # differs between the sides
    vals, boots = store.values("night-01", "default", "per-vma", "max_ms")
    assert vals.size == 10 and set(boots) == {"per-vma-1", "per-vma-2"}
    expected = stats.extract(night(1)[1]).values["max_ms"]
    assert np.allclose(vals, expected)
    assert store.integrity() == "ok"
    mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_sides_of_a_night_can_arrive_separately(store: history.Store) -> None:
    # the bench jobs of a workflow upload one variant each; adding them one by one is fine
    a, b = night(1)
    store.add([history.side_of(a)], source="bench-a")
    (o,) = store.add([history.side_of(a), history.side_of(b)], source="bench-a bench-b")
    assert (
        not o.new_night and o.added == ("default/per-vma",) and o.present == ("default/mmap-lock",)
    )


def test_results_without_a_run_id_are_refused() -> None:
    prov = provenance("x")
    del prov["run_id"]
    res = synthetic_results("x", baseline="x", runs=2, boots=1, ops=100, prov=prov)
    with pytest.raises(UserError, match="carry no run id"):
        history.side_of(res)


def test_a_failed_add_adds_nothing(store: history.Store) -> None:
    good = history.side_of(night(1)[0])
    other = history.side_of(night(2)[0])
    bad = history.Side(**{**other.__dict__, "experiment": "another"})
    bad = history.Side(**{**bad.__dict__, "run_id": good.run_id})
    with pytest.raises(UserError, match="several experiments"):
        store.add([good, bad], source="x")
    assert store.nights() == [] and store.integrity() == "ok"


def test_check_finds_the_regression_of_the_newest_night(store: history.Store) -> None:
    fill(store, [night(i) for i in range(1, 9)])
    calm = history.check(store)
    assert calm.newest.run_id == "night-08"
    heads = [c for c in calm.checks if c.family == "headline"]
    assert {(c.variant, c.metric) for c in heads} == {
        ("mmap-lock", "max_ms"),
        ("per-vma", "max_ms"),
    }
    assert all(len(c.baseline_nights) == 7 for c in heads)
    assert all(c.verdict != Verdict.REGRESSED for c in calm.checks), [
        (c.variant, c.metric, c.reason) for c in calm.checks if c.verdict == Verdict.REGRESSED
    ]
    assert calm.exit_code() == EXIT_OK

    fill(store, [night(9, scale={"per-vma": 2.0})])
    result = history.check(store)
    by = {(c.variant, c.metric): c for c in result.checks}
    slow = by[("per-vma", "max_ms")]
    assert slow.verdict == Verdict.REGRESSED, slow.reason
    assert slow.baseline_nights == tuple(f"night-{i:02d}" for i in range(8, 1, -1))
    assert slow.ratio is not None and 1.6 < slow.ratio < 2.4
    assert by[("mmap-lock", "max_ms")].verdict != Verdict.REGRESSED
    assert result.exit_code() == EXIT_REGRESSION
    assert result.exit_code("never") == EXIT_OK
    json.dumps(result.to_json())  # serialisable

    out = Console(record=True, width=200)
    trend.render_check(result, out)
    text = out.export_text()
    assert "per-vma" in text and "regressed" in text and "+" in text


def _with_check(results: list[ResultsFile], fails: dict[str, int]) -> list[ResultsFile]:
    """Each boot of each side ran proc/proc-maps-race; ``fails`` boots of a side failed."""
    for r in results:
        for n, boot in enumerate(r.boots):
            failed = n < fails.get(r.variant, 0)
            boot["checks"] = {
                "proc/proc-maps-race": {
                    "status": "fail" if failed else "pass",
                    "failed": ["maps.tearing"] if failed else [],
                }
            }
    return results


def test_a_selftest_that_starts_failing_in_the_newest_night_is_a_regression(
    store: history.Store,
) -> None:
    fill(store, [_with_check(night(i), {}) for i in range(1, 5)])
    calm = history.check(store)
    assert [k.reason for k in calm.correctness] == ["passes (2 of 2 boots passed)"] * 2
    assert not any(k.regressed for k in calm.correctness)

    fill(store, [_with_check(night(5), {"per-vma": 1})])
    result = history.check(store)
    by = {k.variant: k for k in result.correctness}
    torn = by["per-vma"]
    assert torn.regressed and torn.newest == {"pass": 1, "fail": 1}
    assert torn.earlier == ("night-04", "night-03", "night-02", "night-01")
    assert "passed with no failing boot in 4 earlier comparable night(s)" in torn.reason
    assert not by["mmap-lock"].regressed
    # a correctness regression fails the check even when every metric held
    assert all(c.verdict != Verdict.REGRESSED for c in result.checks)
    assert result.exit_code() == EXIT_REGRESSION and result.exit_code("never") == EXIT_OK
    assert result.to_json()["correctness"][1]["regressed"] is True
    out = Console(record=True, width=200)
    trend.render_check(result, out)
    assert "Correctness regression in per-vma: proc/proc-maps-race fails in 1 of 2" in (
        out.export_text()
    )
    # the store keeps the tallies: the export has them, and a failure that was there
    # before is not new
    exported = store.export()["nights"][-1]["sides"]
    assert {s["variant"]: s["checks"] for s in exported}["per-vma"] == {
        "proc/proc-maps-race": {"fail": 1, "pass": 1}
    }
    fill(store, [_with_check(night(6), {"per-vma": 2})])
    again = {k.variant: k for k in history.check(store).correctness}["per-vma"]
    assert not again.regressed and "failed before too (night night-05): not new" in again.reason


def test_check_needs_enough_comparable_nights(store: history.Store) -> None:
    fill(store, [night(1), night(2)])
    result = history.check(store)
    assert all(c.verdict == Verdict.INCONCLUSIVE for c in result.checks)
    assert "1 comparable earlier night(s)" in result.checks[0].reason
    assert result.exit_code() == EXIT_INCONCLUSIVE


def test_check_skips_nights_that_are_not_comparable(store: history.Store) -> None:
    # four nights on another CPU model, then four on the newest night's
    fill(store, [night(i, host_cpu="Other CPU") for i in range(1, 5)])
    fill(store, [night(i) for i in range(5, 9)])
    result = history.check(store, nights=7)
    head = next(c for c in result.checks if c.family == "headline" and c.variant == "per-vma")
    assert head.baseline_nights == ("night-07", "night-06", "night-05")
    skipped = result.skipped["default/per-vma"]
    assert [r for r, _ in skipped] == ["night-04", "night-03", "night-02", "night-01"]
    assert "host CPU model 'Other CPU' vs 'Synthetic CPU @ 3.0GHz'" in skipped[0][1]
    assert history.check(store, min_nights=4).exit_code() == EXIT_INCONCLUSIVE


def test_cells_are_checked_on_their_own(store: history.Store) -> None:
    two = {"id": "cpus-2", "settings": {"vm.cpus": 2}}
    four = {"id": "cpus-4", "settings": {"vm.cpus": 4}}
    for i in range(1, 6):
        fill(store, [night(i, cell=two) + night(i, cell=four)])
    fill(store, [night(6, cell=two) + night(6, cell=four, scale={"per-vma": 2.0})])
    result = history.check(store)
    regressed = {(c.cell, c.variant) for c in result.checks if c.verdict == Verdict.REGRESSED}
    assert ("cpus-4", "per-vma") in regressed
    assert not {k for k in regressed if k[0] == "cpus-2"}


def test_show_prints_trends_and_writes_charts(store: history.Store, tmp_path: Path) -> None:
    fill(store, [night(i) for i in range(1, 6)])
    experiment, nights, trends = history.trends(store)
    assert experiment == "synthetic" and len(nights) == 5
    assert {(t.variant, t.metric) for t in trends} == {
        (v, m) for v in VARIANTS for m in ("max_ms", "mean_ms")
    }
    assert all(len(t.points) == 5 for t in trends)
    out = Console(record=True, width=200)
    trend.render_trends(experiment, nights, trends, out, baseline=7)
    text = out.export_text()
    assert "5 nights" in text and any(ch in text for ch in trend.SPARKS)
    page = trend.render_html(experiment, nights, trends)
    assert page.count("<svg") == 2 and "night-05" in page
    assert trend.sparkline([1, 2, 3]) == "▁▅█" and trend.sparkline([2, 2]) == "▅▅"


def test_export_holds_every_value(store: history.Store) -> None:
    fill(store, [night(1), night(2)])
    data = store.export()
    assert data["kind"] == "korch-history" and data["schema"] == history.SCHEMA_VERSION
    assert [n["run_id"] for n in data["nights"]] == ["night-01", "night-02"]
    side = data["nights"][0]["sides"][1]
    assert side["variant"] == "per-vma" and len(side["values"]["max_ms"]) == 10
    total = sum(len(v) for n in data["nights"] for s in n["sides"] for v in s["values"].values())
    assert total == store.db.execute("SELECT count(*) FROM run_values").fetchone()[0]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    history.Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="history schema 99"):
        history.Store(path)


def write_run(root: Path, results: list[ResultsFile]) -> Path:
    for r in results:
        r.save(root / "results" / f"{r.variant}.json")
    return root


def test_cli_add_show_check_export(tmp_path: Path, capsys) -> None:
    db = tmp_path / "store" / "h.sqlite"
    for i in range(1, 6):
        rundir = write_run(tmp_path / f"n{i}", night(i, scale={"per-vma": 2.0} if i == 5 else None))
        assert main(["history", "--db", str(db), "add", str(rundir)]) == EXIT_OK
    assert "added default/mmap-lock, default/per-vma" in capsys.readouterr().out
    assert main(["history", "--db", str(db), "add", str(tmp_path / "n5")]) == EXIT_OK
    assert "added nothing; already there" in capsys.readouterr().out
    html = tmp_path / "trend.html"
    assert main(["history", "--db", str(db), "show", "--html", str(html)]) == EXIT_OK
    assert html.read_text().startswith("<!doctype html>")
    report = tmp_path / "check.json"
    code = main(["history", "--db", str(db), "check", "--nights", "4", "--json", str(report)])
    assert code == EXIT_REGRESSION
    assert json.loads(report.read_text())["newest"]["run_id"] == "night-05"
    out = tmp_path / "all.json"
    assert main(["history", "--db", str(db), "export", "--out", str(out)]) == EXIT_OK
    assert len(json.loads(out.read_text())["nights"]) == 5
    assert main(["history", "--db", str(tmp_path / "none.sqlite"), "show"]) == 64


def test_default_store_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KORCH_HISTORY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert history.default_db() == tmp_path / "korch" / "history.sqlite"
    monkeypatch.setenv("KORCH_HISTORY", str(tmp_path / "x.sqlite"))
    assert history.default_db() == tmp_path / "x.sqlite"


STALLED_ADD = textwrap.dedent(
    """
    import sys, time
    from orchestrator import history
    from orchestrator.cli import main

    inserted = history.Store._insert_values

    def insert_then_stall(self, db, side):
        count = inserted(self, db, side)
        print("inside the transaction", flush=True)
        time.sleep(120)  # killed here, rows written but not committed
        return count

    history.Store._insert_values = insert_then_stall
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigkill_during_add_leaves_the_store_consistent(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    fill_store = history.Store(db)
    fill(fill_store, [night(1)])
    fill_store.close()
    rundir = write_run(tmp_path / "n2", night(2))
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLED_ADD, "history", "--db", str(db), "add", str(rundir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).parents[2], env={**os.environ},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "inside the transaction", line + proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert Path(str(db) + "-wal").exists()  # the uncommitted rows were on disk

    with history.Store(db) as after:
        assert after.integrity() == "ok"
        assert [n.run_id for n in after.nights()] == ["night-01"]
        assert after.db.execute(
            "SELECT count(*) FROM run_values WHERE run_id = 'night-02'"
        ).fetchone() == (0,)
    # the add can simply be repeated
    assert main(["history", "--db", str(db), "add", str(rundir)]) == EXIT_OK
    with history.Store(db) as done:
        assert [n.run_id for n in done.nights()] == ["night-01", "night-02"]
        assert set(done.nights()[1].sides) == {("default", v) for v in VARIANTS}
        assert done.integrity() == "ok"


def test_a_store_the_machine_refuses_is_not_called_foreign(tmp_path: Path) -> None:
    # a store on a read-only or full file system said "not a korch history store": sqlite
    # could not open it, which says nothing about what it holds (a directory in the way is
    # a refusal of the same kind, and one that holds even for root)
    from orchestrator.errors import InfraError

    blocked = tmp_path / "h.sqlite"
    blocked.mkdir()
    with pytest.raises(InfraError, match="cannot open the history store") as info:
        history.Store(blocked)
    assert info.value.exit_code == 2
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a korch history store"):
        history.Store(garbage)
