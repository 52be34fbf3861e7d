"""The CI workflow run here by a local executor (``tests/actions.py``): ci/github/korch.yml's
own steps, job by job, each in a fresh directory, files moving between jobs only as its
artifact steps declare. Plan; a build job per kernel source and configuration (both
variants); a bench job per shard of blocks, each booting every variant, on a machine without
the kernel source or the build cache; a report job. Compared with one ``korch run`` of the
same settings.

Two sets of boots never give the same numbers, so "the same comparison" is asserted as what
can honestly be the same: the same variants, metrics and comparability, the same verdict
class; results files with the same structure and provenance; and, fed the same results,
the workflow's report path writes exactly the comparison that ``korch run`` wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import build, stages
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK
from orchestrator.fsutil import cache_root
from orchestrator.results import ResultsFile
from tests.actions import Executor, JobRecord

REPO = Path(__file__).parents[2]
WORKFLOW = REPO / "ci" / "github" / "korch.yml"

SETTINGS = ["--runs", "1", "--duration", "2", "--blocks", "2", "--accel", "tcg"]
VARIANTS = ("mmap-lock", "per-vma")


def korch(*args: Any, env: dict[str, str] | None = None, expect: int = EXIT_OK) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", *map(str, args)],
        capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert res.returncode == expect, f"korch {args}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def download(artifact: Path, dest: Path) -> Path:
    """actions/download-artifact: the artifact's files under ``dest``."""
    shutil.copytree(artifact, dest, dirs_exist_ok=True)
    return dest


def comparison(path: Path) -> dict[str, Any]:
    return json.loads((path / "comparison.json").read_text())


def shape(c: dict[str, Any]) -> dict[str, Any]:
    """What two comparisons of different boots of the same plan must share.

    Unmap latencies exist only where the mapper's unmaps completed: on a starved host a 2 s
    run under mmap_lock can end before its first unmap (0 unmaps, so no unmap metrics)."""

    def observed(metrics: Any) -> list[str]:
        return sorted(m for m in metrics if not m.startswith("unmap_"))

    return {
        "experiment": c["experiment"],
        "baseline": c["baseline"],
        "headline": c["headline"],
        "verdict": c["verdict"],
        "comparable": c["comparable"],
        "emulated": c["emulated"],
        "candidates": [
            (
                k["candidate"],
                k["verdict"],
                k["comparable"],
                observed(m["metric"] for m in k["metrics"]),
            )
            for k in c["candidates"]
        ],
        "summaries": {v: observed(s["metrics"]) for v, s in c["summaries"].items()},
    }


def test_workflow_stages_match_a_single_run(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    # the build jobs' actions/cache restores what a warm cache holds: this session's
    # kernel source and built kernels (the cache keys name the kernel and configuration)
    pre = tmp_path / "pre"
    korch("plan", "--out", pre, *SETTINGS)
    (entry,) = stages.matrix_from_json(korch("matrix", pre, "--stage", "build"))["include"]
    cache = cache_root()

    def between_jobs(job: JobRecord, ex: Executor) -> None:
        # the second shard ran on another runner, with another CPU model (as hosted
        # runners do): its uploaded results say so
        if job.job == "bench" and job.matrix["shard"] == "2":
            for v in VARIANTS:
                path = ex.artifacts / "korch-bench-default-2" / "results" / f"{v}.json"
                moved = ResultsFile.load(path)
                moved.provenance.update(host="runner-2", host_cpu="Another CPU @ 2.0GHz")
                moved.save(path)

    ex = Executor(
        WORKFLOW, REPO, tmp_path / "actions",
        inputs={"shards": "2", "runs": "1", "blocks": "2", "duration": "2"},
        env={"KORCH_ACCEL": "tcg"},  # this machine's guests run under TCG only
        setup={"Install korch": f'echo "{Path(sys.executable).parent}" >> "$GITHUB_PATH"'},
        skip={"Enable KVM": "the guests run under TCG here"},
        after_job=between_jobs,
    )  # fmt: skip
    ex.seed_cache(
        f"korch-sources-{entry['kernel']}-warm",
        {f".korch-cache/{d}": cache / d for d in ("git", "trees", "sources")},
    )
    ex.seed_cache(
        f"korch-ccache-{entry['kernel']}-{entry['config']}-warm",
        {f".korch-cache/{d}": cache / d for d in ("ccache", "builds", "configs")},
    )
    run = ex.run()
    print(run.describe())
    results = {job: run.result(job) for job in ("plan", "build", "bench")}
    assert results == dict.fromkeys(results, "success"), run.describe()
    (plan_job,) = run.jobs["plan"]
    (build_job,) = run.jobs["build"]
    # the plan job's outputs are the matrices the later jobs expanded
    assert len(json.loads(plan_job.outputs["benches"])["include"]) == 2

    # one build job for both variants (one configuration); a bench job per shard
    assert build_job.matrix["variants"] == " ".join(VARIANTS)
    assert build_job.step("Restore ccache and built kernels").how == "actions/cache/restore"
    built = ex.artifacts / f"korch-build-{entry['kernel']}-{entry['config']}"
    assert sorted(p.name for p in built.iterdir()) == list(VARIANTS)
    benches = run.jobs["bench"]
    assert [(b.matrix["shard"], b.matrix["dir"]) for b in benches] == [
        ("1", "shards/1"),
        ("2", "shards/2"),
    ]
    bench_artifacts = []
    for job in benches:
        shard = int(job.matrix["shard"])
        upload = ex.artifacts / f"korch-bench-default-{shard}"
        bench_artifacts.append(upload)
        assert not (upload / "build").exists()  # the kernels are the build job's artifact
        # each shard booted every variant, in its own blocks only
        for v in VARIANTS:
            res = ResultsFile.load(upload / "results" / f"{v}.json")
            # (a boot that stalled and was booted once more is a second attempt, same block)
            assert {b["block"] for b in res.boots} == {shard}, (v, res.boots)
            # the correctness check's program came with the build job's kernels
            assert res.boots[-1]["checks"]["proc/proc-maps-race"]["status"] == "pass", res.boots
            assert res.provenance["shard"] == {"index": shard, "of": 2, "blocks": [shard, shard]}
        # on a machine without the kernel source or the build cache
        machine = {p.name for p in (job.workspace / ".korch-cache").iterdir()}
        assert not {"git", "trees", "builds", "objdirs"} & machine, machine

    # -- the report job: two runs a side are too few for a verdict, so korch report exits
    # 3 (inconclusive), as korch run does below, and the job's last step fails with it
    (report_job,) = run.jobs["report"]
    assert report_job.result == "failure"
    last = report_job.steps[-1]
    assert (last.name, last.code) == ("Fail per korch's exit codes", EXIT_INCONCLUSIVE)
    assert "korch report exited with 3, korch history check with 0" in last.log
    assert report_job.step("File tonight's run and check it against earlier nights").how == (
        "if: false"
    )
    assert "by shard" in report_job.summary and "inconclusive" in report_job.summary
    report_dir = ex.artifacts / "korch-report"
    assert (report_dir / "report.html").is_file()

    # -- the same settings through korch run, on one machine
    single = tmp_path / "single"
    korch("run", *SETTINGS, "--out", single, expect=EXIT_INCONCLUSIVE)

    staged, direct = comparison(report_dir), comparison(single)
    assert shape(staged) == shape(direct)
    assert staged["verdict"] == "inconclusive" and staged["comparable"]
    # paired within blocks although the shards ran on different CPU models; one
    # estimate per shard next to the pooled one
    head = next(m for m in staged["candidates"][0]["metrics"] if m["family"] == "headline")
    assert head["method"] == "paired" and head["blocks"] == 2
    strata = staged["candidates"][0]["strata"]
    assert [(s["shard"], s["host_cpu"], s["n"]) for s in strata] == [
        (
            1,
            ResultsFile.load(bench_artifacts[0] / "results" / "per-vma.json").provenance[
                "host_cpu"
            ],
            1,
        ),
        (2, "Another CPU @ 2.0GHz", 1),
    ]
    assert "by shard" in (report_dir / "summary.md").read_text()

    # results files: same structure and provenance, from the same kernels and plan
    run_ids = set()
    for v in VARIANTS:
        s = ResultsFile.load(bench_artifacts[0] / "results" / f"{v}.json")
        d = ResultsFile.load(single / "results" / f"{v}.json")
        assert s.to_json().keys() == d.to_json().keys()
        assert s.provenance.keys() - {"shard"} == d.provenance.keys()
        for key in ("kernel_release", "config_sha256", "build_key", "patches", "workload"):
            assert s.provenance[key] == d.provenance[key], key
        for key in ("accel", "vcpus", "memory", "qemu_version", "host_cpu"):
            assert s.provenance[key] == d.provenance[key], key
        assert s.status == d.status == "complete"
        assert [(r["boot"], r["index"], r["seed"]) for r in s.runs] == [
            (r["boot"], r["index"], r["seed"]) for r in d.runs if r["block"] == 1
        ]
        assert s.provenance["reproduce"].startswith("korch run --matrix")
        run_ids.add(s.provenance["run_id"])
    assert len(run_ids) == 1  # every job's results belong to the one planned run

    # fed the same results, the workflow's report path gives exactly korch run's comparison
    for v in VARIANTS:
        dest = tmp_path / "same" / "korch-bench-default-1" / "results" / f"{v}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(single / "results" / f"{v}.json", dest)
    same = tmp_path / "same-report"
    korch("report", *sorted((tmp_path / "same").iterdir()), "--out", same, expect=EXIT_INCONCLUSIVE)
    assert comparison(same) == direct


def test_aa_through_the_stages(default_builds: dict[str, build.Build], tmp_path: Path) -> None:
    """korch plan --aa: the stages run an A/A comparison as korch run --aa does, the baseline
    built once and booted as both sides of every block, in every shard."""
    rundir = tmp_path / "run"
    korch("plan", "--out", rundir, *SETTINGS, "--shards", "2", "--aa")
    (entry,) = stages.matrix_from_json(korch("matrix", rundir, "--stage", "build"))["include"]
    assert entry["variants"] == "mmap-lock"
    korch("build", "--resume", rundir, "--variant", "mmap-lock")
    assert [p.name for p in (rundir / "build").iterdir()] == ["mmap-lock"]
    for shard in ("1", "2"):
        korch("bench", rundir, "--shard", shard)
        base, twin = (
            ResultsFile.load(rundir / "shards" / shard / "results" / f"{side}.json")
            for side in ("mmap-lock", "mmap-lock-aa")
        )
        assert base.provenance["build_key"] == twin.provenance["build_key"]
        assert {b["block"] for b in base.boots} == {b["block"] for b in twin.boots} == {int(shard)}
    report = tmp_path / "report"
    korch("report", rundir, "--out", report, expect=EXIT_INCONCLUSIVE)
    c = comparison(report)
    assert c["baseline"] == "mmap-lock"
    assert [k["candidate"] for k in c["candidates"]] == ["mmap-lock-aa"]
    head = next(m for m in c["candidates"][0]["metrics"] if m["family"] == "headline")
    assert head["method"] == "paired" and head["blocks"] == 2


@pytest.fixture
def matrix_experiment(tmp_path: Path, default_experiment) -> Path:
    """The default experiment with a matrix of two vCPU counts."""
    src = Path(default_experiment.path)
    shutil.copytree(src.parent / "patches", tmp_path / "exp" / "patches")
    exp = tmp_path / "exp" / "matrix.yaml"
    exp.write_text(src.read_text() + "matrix:\n  vm: {cpus: [1, 2]}\n")
    return exp


def test_run_matrix_runs_every_cell(
    default_builds: dict[str, build.Build], matrix_experiment: Path, tmp_path: Path
) -> None:
    rundir = tmp_path / "run"
    out = korch(
        "run", "--matrix", matrix_experiment, *SETTINGS, "--out", rundir, expect=EXIT_INCONCLUSIVE
    )
    assert "matrix: 2 cells: cpus-1, cpus-2" in out
    for cell, cpus in (("cpus-1", 1), ("cpus-2", 2)):
        where = rundir / "cells" / cell
        c = comparison(where)
        assert c["comparable"] and [k["candidate"] for k in c["candidates"]] == ["per-vma"]
        for v in VARIANTS:
            res = ResultsFile.load(where / "results" / f"{v}.json")
            assert res.provenance["vcpus"] == cpus and len(res.runs) == 2
            assert res.provenance["cell"] == {"id": cell, "settings": {"vm.cpus": cpus}}
    # the kernels are built once and shared by the cells
    assert sorted(p.name for p in (rundir / "build").iterdir()) == list(VARIANTS)
    # korch report of the matrix run directory reports every cell again
    korch("report", rundir, expect=EXIT_INCONCLUSIVE)
    assert (rundir / "cells" / "cpus-2" / "report.html").is_file()
    # and the nightly history takes the whole run as one night with four sides
    db = tmp_path / "h.sqlite"
    korch("history", "--db", db, "add", rundir)
    exported = json.loads(korch("history", "--db", db, "export"))
    (night,) = exported["nights"]
    assert {(s["cell"], s["variant"]) for s in night["sides"]} == {
        (c, v) for c in ("cpus-1", "cpus-2") for v in VARIANTS
    }
