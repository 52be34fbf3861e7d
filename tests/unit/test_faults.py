"""Bad input and refusing machines, as a user meets them: the command line, end to end.

Each case runs ``korch`` as a user would (a subprocess) and must end with a clear message
and the exit code of its class, never a traceback and never 1 (CI's "regression"). The
module prints a tally at the end: cases tried, clear errors, tracebacks, exit codes by
class. The cases that need real kernels and guests (signals at each stage, panics, a full
disk during a build) live in tests/integration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.report.synthetic import synthetic_results

REPO = Path(__file__).resolve().parents[2]
CLASSES = {0: "ok", 1: "regression", 2: "infrastructure", 3: "inconclusive", 64: "usage", 70: "bug"}
TALLY: Counter[str] = Counter()

EXPERIMENT = """\
schema: 1
name: demo
kernel: {source: {path: linux}, kconfig: [tinyconfig, qemu-guest]}
variants: [{name: a}, {name: b}]
"""


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], list[str]]
    exit_code: int
    says: Callable[[Path], str]  # what the message must name
    env: Callable[[Path], dict[str, str]] | None = None


def results_pair(d: Path, **change: object) -> list[str]:
    """Two synthetic results files in ``d`` (the first with ``change`` applied)."""
    out = []
    for n, v in enumerate(("a", "b")):
        r = synthetic_results(v, baseline="a", runs=6, boots=6, seed=n, ops=200)
        obj = r.to_json()
        if n == 0:
            obj.update(change)
        path = d / f"{v}.json"
        path.write_text(json.dumps(obj))
        out.append(str(path))
    return out


def experiment(d: Path, extra: str = "") -> str:
    path = d / "exp.yaml"
    path.write_text(EXPERIMENT + extra)
    return str(path)


def damaged_rundir(d: Path) -> str:
    (d / "run").mkdir()
    (d / "run" / "run.json").write_text("{bad")
    return str(d / "run")


CASES = [
    Case("results with variant null",
         lambda d: ["report", *results_pair(d, variant=None), "--out", str(d / "o")], 64,
         lambda d: "variant is None"),
    Case("results with provenance 'x'",
         lambda d: ["report", *results_pair(d, provenance="x"), "--out", str(d / "o")], 64,
         lambda d: "provenance is 'x'"),
    Case("results whose runs are not a list",
         lambda d: ["report", *results_pair(d, runs="x"), "--out", str(d / "o")], 64,
         lambda d: "runs is 'x'"),
    Case("results that are not JSON",
         lambda d: ["report", str((d / "x.json", (d / "x.json").write_text("{"))[0]), "--out", str(d / "o")], 64,
         lambda d: "x.json:1"),
    Case("report --out naming a file",
         lambda d: ["report", *results_pair(d), "--out", str((d / "f", (d / "f").write_text(""))[0])], 2,
         lambda d: str(d / "f")),
    Case("step summary on a full device",
         lambda d: ["report", *results_pair(d), "--out", str(d / "o"), "--github-summary"], 2,
         lambda d: "No space left on device", env=lambda d: {"GITHUB_STEP_SUMMARY": "/dev/full"}),
    Case("a single variant to compare",
         lambda d: ["report", results_pair(d)[0], "--out", str(d / "o")], 64,
         lambda d: "at least two variants"),
    Case("run --resume on a damaged run.json",
         lambda d: ["run", "--resume", damaged_rundir(d)], 64,
         lambda d: "run.json: not valid JSON"),
    Case("run --resume on a directory without a run",
         lambda d: ["run", "--resume", str(d)], 64,
         lambda d: "holds no korch run"),
    Case("--duration nan",
         lambda d: ["plan", experiment(d), "--out", str(d / "r"), "--duration", "nan"], 64,
         lambda d: "--duration must be a finite number"),
    Case("--blocks beyond reason",
         lambda d: ["plan", experiment(d), "--out", str(d / "r"), "--blocks", "100000"], 64,
         lambda d: "--blocks must be at most 1000"),
    Case("--budget that is not a duration",
         lambda d: ["run", experiment(d), "--until-decisive", "--budget", "soon", "--out", str(d / "r")], 64,
         lambda d: "--budget 'soon' is not a duration"),
    Case("a 20M guest",
         lambda d: ["validate", experiment(d, "vm: {memory: 20M}\n")], 64,
         lambda d: "exp.yaml:5: vm.memory: must be at least 256M"),
    Case("a region larger than the guest",
         lambda d: ["validate", experiment(d, "vm: {memory: 256M}\nworkload: {region_mb: 256}\n")], 64,
         lambda d: "workload.region_mb: a region of 256 MB does not fit"),
    Case("an infinite duration",
         lambda d: ["validate", experiment(d, "workload: {duration_s: .inf}\n")], 64,
         lambda d: "workload.duration_s: must be a finite number"),
    Case("an unknown variant to boot",
         lambda d: ["boot", experiment(d), "--variant", "nope", "--", "true"], 64,
         lambda d: "nope"),
    Case("a history store the machine cannot open",
         lambda d: ["history", "--db", str((d / "h.sqlite", (d / "h.sqlite").mkdir())[0]), "show"], 2,
         lambda d: "cannot open the history store"),
]  # fmt: skip


def summary() -> str:
    """The tally line (printed by tests/conftest.py at the end of the session)."""
    classes = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items()) if k.startswith("exit "))
    return (
        f"fault cases: {TALLY['tried']} tried, {TALLY['clear']} clear errors,"
        f" {TALLY['traceback']} tracebacks, {TALLY['crash as 1']} exit 1; by class: {classes}"
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_fault_gets_a_clear_error_and_its_class(case: Case, tmp_path: Path) -> None:
    env = dict(os.environ, **(case.env(tmp_path) if case.env else {}))
    env["HOME"] = str(tmp_path / "home")  # no user's history or cache
    env.pop("KORCH_CACHE", None)
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", *case.argv(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    said = res.stdout + res.stderr
    TALLY["tried"] += 1
    TALLY[f"exit {res.returncode} ({CLASSES.get(res.returncode, '?')})"] += 1
    TALLY["traceback"] += "Traceback" in said
    TALLY["crash as 1"] += res.returncode == 1
    clear = "Traceback" not in said and case.says(tmp_path) in said
    TALLY["clear"] += clear
    assert "Traceback" not in said, said
    assert res.returncode == case.exit_code, said
    assert case.says(tmp_path) in said, said
