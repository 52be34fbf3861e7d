"""The CI workflow simulated here: plan, a build job per kernel source and configuration, a
bench job per shard of blocks (each booting every variant), a report job; each job in its
own run directory, the artifacts handed on as directory copies, the bench jobs without the
kernel source or the build cache. Compared with one ``korch run`` of the same settings.

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
from orchestrator.results import ResultsFile

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
    """What two comparisons of different boots of the same plan must share."""
    return {
        "experiment": c["experiment"],
        "baseline": c["baseline"],
        "headline": c["headline"],
        "verdict": c["verdict"],
        "comparable": c["comparable"],
        "emulated": c["emulated"],
        "candidates": [
            (k["candidate"], k["verdict"], k["comparable"], [m["metric"] for m in k["metrics"]])
            for k in c["candidates"]
        ],
        "summaries": {v: sorted(s["metrics"]) for v, s in c["summaries"].items()},
    }


def test_workflow_stages_match_a_single_run(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    # -- plan job
    plan_job = tmp_path / "plan-job" / "run"
    korch("plan", "--out", plan_job, *SETTINGS, "--shards", "2")
    builds = stages.matrix_from_json(korch("matrix", plan_job, "--stage", "build"))["include"]
    benches = stages.matrix_from_json(korch("matrix", plan_job))["include"]
    # one build job for both variants (one configuration); a bench job per shard
    assert [e["variants"] for e in builds] == [" ".join(VARIANTS)]
    assert [(e["shard"], e["dir"]) for e in benches] == [("1", "shards/1"), ("2", "shards/2")]
    plan_artifact = plan_job

    # -- build job: every variant of the kernel, from the plan artifact alone
    rundir = download(plan_artifact, tmp_path / "build-job" / "run")
    korch("build", "--resume", rundir, *[a for v in VARIANTS for a in ("--variant", v)])
    assert sorted(p.name for p in (rundir / "build").iterdir()) == list(VARIANTS)
    build_artifact = rundir / "build"

    # -- bench jobs: the plan and every kernel, on machines without source or build cache
    fresh_cache = tmp_path / "bench-machine-cache"
    bench_artifacts = []
    for entry in benches:
        rundir = download(plan_artifact, tmp_path / f"bench-{entry['shard']}" / "run")
        download(build_artifact, rundir / "build")
        korch(
            "bench", rundir, "--cell", entry["cell"], "--shard", entry["shard"],
            env={"KORCH_CACHE": str(fresh_cache)},
        )  # fmt: skip
        shard_dir = rundir / entry["dir"]
        upload = tmp_path / "report-job" / "bench" / f"korch-bench-{entry['cell']}-{entry['shard']}"
        shutil.copytree(shard_dir, upload, ignore=shutil.ignore_patterns("build"))
        bench_artifacts.append(upload)
        # each shard booted every variant, in its own blocks only
        block = int(entry["shard"])
        for v in VARIANTS:
            res = ResultsFile.load(upload / "results" / f"{v}.json")
            # (a boot that stalled and was booted once more is a second attempt, same block)
            assert {b["block"] for b in res.boots} == {block}, (v, res.boots)
            assert res.provenance["shard"] == {"index": block, "of": 2, "blocks": [block, block]}
    assert not {"git", "trees", "builds", "objdirs"} & {p.name for p in fresh_cache.iterdir()}
    # the second shard ran on another runner, with another CPU model (as hosted runners do)
    for v in VARIANTS:
        path = bench_artifacts[1] / "results" / f"{v}.json"
        moved = ResultsFile.load(path)
        moved.provenance.update(host="runner-2", host_cpu="Another CPU @ 2.0GHz")
        moved.save(path)

    # -- report job
    report_dir = tmp_path / "report-job" / "report"
    # two runs a side are too few for a verdict: inconclusive, as for korch run below
    korch("report", *bench_artifacts, "--out", report_dir, expect=EXIT_INCONCLUSIVE)

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
