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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.report.synthetic import synthetic_results
from tests import faults

REPO = Path(__file__).resolve().parents[2]

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


def sharded_rundir(d: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "plan", experiment(d), "--out", str(d / "run"),
         "--blocks", "4", "--shards", "2"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return str(d / "run")


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
    Case("--shards on one machine",
         lambda d: ["run", experiment(d), "--shards", "2", "--out", str(d / "r")], 64,
         lambda d: "--shards splits the bench stage into jobs"),
    Case("a bench job of a sharded plan without --shard",
         lambda d: ["bench", sharded_rundir(d)], 64,
         lambda d: "name one with --shard"),
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
    Case("bisect of the baseline",
         lambda d: ["bisect", experiment(d), "--variant", "a", "--out", str(d / "b")], 64,
         lambda d: "'a' is the baseline"),
    Case("bisect of a variant without patches",
         lambda d: ["bisect", experiment(d), "--variant", "b", "--out", str(d / "b")], 64,
         lambda d: "variant 'b' adds no patch to search"),
    Case("bisect with rounds too short to decide",
         lambda d: ["bisect", experiment(d), "--variant", "b", "--max-blocks", "4", "--out", str(d / "b")], 64,
         lambda d: "--max-blocks 4: a round of at most 4 blocks can never decide"),
    Case("a history store the machine cannot open",
         lambda d: ["history", "--db", str((d / "h.sqlite", (d / "h.sqlite").mkdir())[0]), "show"], 2,
         lambda d: "cannot open the history store"),
]  # fmt: skip


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
    faults.record(res.returncode, said, case.says(tmp_path) in said)
    assert "Traceback" not in said, said
    assert res.returncode == case.exit_code, said
    assert case.says(tmp_path) in said, said


def _private_mounts() -> str | None:
    """Why a private mount namespace with a small tmpfs cannot be made here, or None."""
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return (
            f"no private tmpfs for a full disk (root in a mount namespace): {probe.stderr.strip()}"
        )
    return None


@pytest.mark.skipif(_private_mounts() is not None, reason=str(_private_mounts()))
def test_a_report_onto_a_full_disk_leaves_nothing_half_written(tmp_path: Path) -> None:
    """``korch report --out`` on a file system that fills: exit 2 naming the device error,
    and every file that is there is whole (written to a temporary name, then renamed).
    The small tmpfs lives in a mount namespace of its own, so nothing outside sees it; what
    it held is copied out before the namespace ends."""
    pair = results_pair(tmp_path)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    script = (
        'mount -t tmpfs -o size=24k tmpfs "$DISK" || exit 99; "$@"; rc=$?;'
        ' cp -a "$DISK/." "$KEPT/"; exit $rc'
    )
    env = dict(os.environ, HOME=str(tmp_path / "home"), DISK=str(disk), KEPT=str(kept))
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, "-m", "orchestrator", "report", *pair, "--out", str(disk / "r")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = res.stdout + res.stderr
    written = sorted(p.name for p in (kept / "r").iterdir()) if (kept / "r").is_dir() else []
    half = [n for n in written if n.endswith(".tmp")]
    faults.record(res.returncode, said, "No space left on device" in said and str(disk) in said)
    assert res.returncode == 2, said
    assert "Traceback" not in said, said
    assert "No space left on device" in said and str(disk) in said, said
    assert half == [], written
    if "comparison.json" in written:  # what is there is whole
        json.loads((kept / "r" / "comparison.json").read_text())
