"""The two workloads beyond maps-contention, each written as an experiment file alone and run
end to end in TCG guests: a user's own static C benchmark as a command workload (the
example in docs/examples/command), and the kselftest workload catching a patch that tears
/proc/pid/maps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator import build, vm
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_REGRESSION
from orchestrator.results import ResultsFile
from tests import faults

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "command"
DATA = Path(__file__).parent / "data" / "workloads"
TEST = "proc/proc-maps-race"
SPLIT = "proc_maps_race.maps.test_maps_tearing_from_split"


def _korch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_a_users_static_benchmark_runs_as_a_command_workload(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    # the example as a user runs it: build the program beside the experiment, then korch run
    exp = tmp_path / "maps-read.yaml"
    patch = ROOT / "orchestrator" / "experiments" / "patches" / "maps-under-mmap-lock.patch"
    exp.write_text(
        (EXAMPLE / "maps-read.yaml")
        .read_text()
        .replace("../../../orchestrator/experiments/patches/maps-under-mmap-lock.patch", str(patch))
    )
    subprocess.run(
        ["gcc", "-O2", "-static", "-o", str(tmp_path / "maps-read"), str(EXAMPLE / "maps-read.c")],
        check=True,
    )
    rundir = tmp_path / "run"
    res = _korch("run", str(exp), "--blocks", "2", "--accel", "tcg", "--out", str(rundir))
    out = res.stdout + res.stderr
    # two blocks can never decide (the smallest p of 2 paired blocks is 0.5)
    assert res.returncode == EXIT_INCONCLUSIVE, out
    assert "read_us (us)  [headline]" in out and "reads_per_s (reads/s)" in out

    for variant in ("mmap-lock", "per-vma"):
        results = ResultsFile.load(rundir / "results" / f"{variant}.json")
        assert results.provenance["workload"]["name"] == "command"
        assert len(results.runs) == 2 and not any(r["hang"] for r in results.runs)
        for run in results.runs:
            metrics = run["record"]["metrics"]
            assert set(metrics) == {"read_us", "reads_per_s"}
            assert metrics["read_us"] > 0 and metrics["reads_per_s"] > 0
        kept = (rundir / "boot" / f"{variant}-1" / "command" / "run-1.out").read_text()
        assert '"vmas": ' in kept and "reads per second: " in kept

    comparison = json.loads((rundir / "comparison.json").read_text())
    assert comparison["workload"] == "command" and comparison["headline"] == "read_us"
    assert comparison["metrics"]["read_us"]["unit"] == "us"
    assert comparison["metrics"]["reads_per_s"]["better"] == "higher"
    assert set(comparison["metrics"]) == {"read_us", "reads_per_s", "hang_rate"}
    md = (rundir / "summary.md").read_text()
    assert "**read_us (us)**" in md and "maxima" not in md
    assert "read_us (us)" in (rundir / "report.html").read_text()
    assert not vm.live_pids()


def test_the_kselftest_workload_finds_a_patch_that_tears_maps(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    rundir = tmp_path / "run"
    res = _korch("run", str(DATA / "kselftest-skip-a-vma.yaml"), "--out", str(rundir))
    out = res.stdout + res.stderr
    assert res.returncode == EXIT_REGRESSION, out
    assert "Correctness regression in skip-a-vma: proc/proc-maps-race passes" in out

    base = ResultsFile.load(rundir / "results" / "per-vma.json")
    cand = ResultsFile.load(rundir / "results" / "skip-a-vma.json")
    assert base.boots[0]["checks"][TEST]["status"] == "pass"
    assert cand.boots[0]["checks"][TEST]["status"] == "fail"
    assert cand.boots[0]["checks"][TEST]["failed"] == [SPLIT]
    ((b,), (c,)) = (base.runs, cand.runs)
    assert b["record"]["failed_tests"] == 0 and c["record"]["failed_tests"] == 1
    assert b["record"]["tests"] == {TEST: "pass"} and c["record"]["tests"] == {TEST: "fail"}
    assert 0 < b["record"]["seconds"] < c["record"]["seconds"]  # the failing case waits 30 s
    log = rundir / "boot" / "skip-a-vma-1" / "kselftest" / "run-1" / "proc-proc-maps-race.log"
    assert f"not ok 1 {SPLIT}" in log.read_text()

    comparison = json.loads((rundir / "comparison.json").read_text())
    assert comparison["workload"] == "kselftest" and comparison["headline"] == "seconds"
    (gate,) = comparison["checks"]
    assert gate["test"] == TEST and gate["regressed"] is True
    md = (rundir / "summary.md").read_text()
    assert "Correctness regression in skip-a-vma" in md and "tests' wall time (s)" in md
    assert not vm.live_pids()


def test_a_command_that_fails_in_the_guest_is_named_and_its_earlier_run_kept(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    patch = ROOT / "orchestrator" / "experiments" / "patches" / "maps-under-mmap-lock.patch"
    bench = tmp_path / "bench"
    # the first run measures, the second fails as a broken benchmark does
    bench.write_text(
        "#!/bin/sh\n"
        'if [ "$KORCH_RUN" = 0 ]; then echo \'{"x_us": 5}\'; exit 0; fi\n'
        "echo 'bench: cannot open /dev/nothing' >&2; exit 3\n"
    )
    bench.chmod(0o755)
    exp = tmp_path / "e.yaml"
    text = (EXAMPLE / "maps-read.yaml").read_text().split("\nworkload:")[0]
    text = text.replace(
        "../../../orchestrator/experiments/patches/maps-under-mmap-lock.patch", str(patch)
    )
    exp.write_text(
        text + "\nworkload: {name: command, run: ./bench, files: [bench], runs: 2, blocks: 1,"
        " metrics: {x_us: {unit: us}}}\n"
    )
    rundir = tmp_path / "run"
    res = _korch("run", str(exp), "--accel", "tcg", "--out", str(rundir))
    said = res.stdout + res.stderr
    expected = ("command run 2 ('./bench'): the command exited with 3", "cannot open /dev/nothing")
    clear = all(t in said for t in expected)
    left = faults.processes_of(tmp_path)
    # the side that booted first (the block's order is drawn) ran one run, then failed
    (first,) = [r for r in map(ResultsFile.load, (rundir / "results").glob("*.json")) if r.boots]
    kept = [r["record"] for r in first.runs]
    faults.record(res.returncode, said, clear, left=len(left), lost=1 - len(kept))
    assert res.returncode == EXIT_INFRA and clear, said
    assert first.status == "interrupted" and kept == [
        {"metrics": {"x_us": 5.0}, "seconds": kept[0]["seconds"]}
    ]
    assert not left and not vm.live_pids()
