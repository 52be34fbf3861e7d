"""Stage commands and the CI matrix: experiment matrices, korch plan / matrix, exported
builds, per-cell reports. (The stages end to end, with real kernels: tests/integration.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import build, config, run, stages
from orchestrator import plan as plans
from orchestrator.cli import main
from orchestrator.errors import (
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    ConfigError,
    UserError,
)
from orchestrator.fsutil import sha256_file, write_json
from orchestrator.report import ReportOptions
from orchestrator.report.synthetic import provenance, synthetic_results
from orchestrator.stats import StatsOptions

REPO = Path(__file__).parents[2]

EXPERIMENT = """\
schema: 1
name: demo
kernel:
  source: {path: linux}
  kconfig: [tinyconfig, qemu-guest]
variants:
  - name: base
  - name: cand
    kconfig: [maps-contention]
vm: {cpus: 2, memory: 512M}
workload: {runs: 3, blocks: 1, duration_s: 2}
"""
MATRIX = "matrix:\n  vm: {cpus: [2, 4]}\n  workload: {procfile: [maps, smaps]}\n"


def experiment(tmp_path: Path, extra: str = "") -> config.Experiment:
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT + extra)
    return config.load(path)


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        experiment(tmp_path, extra)
    return info.value.problems


# ---------------------------------------------------------------- the experiment's matrix


def test_matrix_section_and_cells(tmp_path: Path) -> None:
    exp = experiment(tmp_path, MATRIX)
    assert exp.matrix == (("vm.cpus", (2, 4)), ("workload.procfile", ("maps", "smaps")))
    got = stages.cells(exp)
    assert [c.id for c in got] == [
        "cpus-2_procfile-maps",
        "cpus-2_procfile-smaps",
        "cpus-4_procfile-maps",
        "cpus-4_procfile-smaps",
    ]
    assert got[1].settings == {"vm.cpus": 2, "workload.procfile": "smaps"}
    plan = stages.cell_plan(plans.make_plan(exp), got[3])
    assert plan.cpus == 4 and plan.params["procfile"] == "smaps" and plan.runs == 3
    assert got[0].dir(tmp_path) == tmp_path / "cells" / "cpus-2_procfile-maps"
    assert stages.cells(experiment(tmp_path)) == [stages.Cell("default", {})]
    assert stages.Cell("default", {}).dir(tmp_path) == tmp_path


def test_matrix_section_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    (p,) = problems(tmp_path, "matrix:\n  vm: {accel: [kvm, tcg]}\n")
    assert p.startswith(f"{f}:13: matrix.vm.accel: unknown key (expected one of: cpus, memory)")
    (p,) = problems(tmp_path, "matrix:\n  vm: {cpus: 4}\n")
    assert p == f"{f}:13: matrix.vm.cpus: expected a non-empty list, got an integer (4)"
    (p,) = problems(tmp_path, "matrix:\n  workload:\n    region_mb: [64, 100]\n")
    assert p == f"{f}:14: matrix.workload.region_mb[1]: must be a power of two (got 100)"
    (p,) = problems(tmp_path, "matrix:\n  vm: {memory: [1G, 1G]}\n")
    assert p == f"{f}:13: matrix.vm.memory: a value is listed twice"
    (p,) = problems(tmp_path, "matrix:\n  kernel: {cpus: [1]}\n")
    assert "matrix.kernel: unknown key (expected one of: vm, workload)" in p
    cpus = ", ".join(str(i) for i in range(1, 130))
    many = f"matrix:\n  vm: {{cpus: [{cpus}]}}\n"
    (p,) = problems(tmp_path, many)
    assert "129 cells x 2 variants = 258 jobs" in p


# ---------------------------------------------------------------- korch matrix


def test_matrix_of_the_default_experiment_round_trips(capsys) -> None:
    assert main(["matrix"]) == EXIT_OK
    text = capsys.readouterr().out
    assert text.count("\n") == 1  # one line, for $GITHUB_OUTPUT
    matrix = stages.matrix_from_json(text)
    entries = matrix["include"]
    # one bench job: it boots both variants, block by block
    assert [(e["cell"], e["shard"], e["dir"]) for e in entries] == [("default", "1", ".")]
    assert {e["kernel"] for e in entries} == {"linux-source-7.2"}
    assert stages.matrix_to_json(matrix) + "\n" == text
    assert main(["matrix", "--stage", "build"]) == EXIT_OK
    built = stages.matrix_from_json(capsys.readouterr().out)["include"]
    # both variants share the experiment's fragments: one build job builds them both
    assert [sorted(e) for e in built] == [["config", "kernel", "variants"]]
    assert built[0]["variants"] == "mmap-lock per-vma"


def test_matrix_json_is_checked() -> None:
    with pytest.raises(UserError, match="not valid JSON"):
        stages.matrix_from_json("{")
    with pytest.raises(UserError, match='one key, "include"'):
        stages.matrix_from_json('{"include": [], "exclude": []}')
    with pytest.raises(UserError, match="matrix entry 0"):
        stages.matrix_from_json('{"include": [{"kernel": "k", "variants": 1, "config": "c"}]}')


def test_plan_writes_cells_and_matrix_reads_them(tmp_path: Path, capsys) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(EXPERIMENT + MATRIX)
    rundir = tmp_path / "run"
    argv = ["plan", str(exp_file), "--out", str(rundir), "--runs", "2", "--accel", "tcg"]
    assert main(argv) == EXIT_OK
    assert "4 matrix cells" in capsys.readouterr().out
    info = json.loads((rundir / "run.json").read_text())
    assert info["plan"]["runs"] == 2 and info["plan"]["accel"] == "tcg"
    assert info["experiment_sha256"] == sha256_file(exp_file)
    assert info["reproduce"].startswith("korch run --matrix ")
    assert list(info["cells"]) == [c.id for c in stages.cells(config.load(exp_file))]
    cell = json.loads((rundir / "cells" / "cpus-4_procfile-smaps" / "run.json").read_text())
    assert cell["run_id"] == info["run_id"] and cell["created"] == info["created"]
    assert cell["plan"]["cpus"] == 4 and cell["plan"]["params"]["procfile"] == "smaps"
    assert cell["plan"]["runs"] == 2
    assert cell["cell"] == {
        "id": "cpus-4_procfile-smaps",
        "settings": {"vm.cpus": 4, "workload.procfile": "smaps"},
    }
    assert (rundir / "experiment.yaml").read_text() == exp_file.read_text()

    assert main(argv) == EXIT_OK  # planning again with the same settings changes nothing
    assert json.loads((rundir / "run.json").read_text())["created"] == info["created"]
    assert main([*argv[:-1], "kvm"]) == EXIT_USAGE
    assert "already holds a run with other settings" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["matrix", str(rundir)]) == EXIT_OK
    entries = stages.matrix_from_json(capsys.readouterr().out)["include"]
    # one bench job per cell (no shards): each boots every variant, block by block
    assert len(entries) == 4
    assert entries[-1] == {
        "kernel": "linux",
        "cell": "cpus-4_procfile-smaps",
        "shard": "1",
        "dir": "cells/cpus-4_procfile-smaps",
    }
    assert main(["matrix", str(rundir), "--stage", "build"]) == EXIT_OK
    builds = stages.matrix_from_json(capsys.readouterr().out)["include"]
    # cand has its own fragment: its configuration differs from base's, so two build jobs
    exp = config.load(exp_file)
    assert builds == [
        {"kernel": "linux", "config": stages.config_id(exp, "base"), "variants": "base"},
        {"kernel": "linux", "config": stages.config_id(exp, "cand"), "variants": "cand"},
    ]


def test_plan_needs_out(capsys) -> None:
    assert main(["plan"]) == EXIT_USAGE
    assert "needs --out RUNDIR" in capsys.readouterr().err


def test_aa_plan_for_the_stages(tmp_path: Path, capsys) -> None:
    """korch plan --aa: RUNDIR itself is the A/A run (no RUNDIR/aa), the baseline on both
    sides with one kernel, so one build job builds it and each bench job boots it twice a
    block; the later stage commands need no flag, the plan says it."""
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(EXPERIMENT)
    rundir = tmp_path / "run"
    argv = ["plan", str(exp_file), "--out", str(rundir), "--aa", "--shards", "2", "--blocks", "4"]
    assert main(argv) == EXIT_OK
    assert "variants base, base-aa" in capsys.readouterr().out
    assert not (rundir / "aa").exists()
    info = json.loads((rundir / "run.json").read_text())
    assert info["plan"]["aa"] is True
    assert info["plan"]["kernels"] == {"base": "base", "base-aa": "base"}
    shard = json.loads((rundir / "shards" / "2" / "run.json").read_text())
    assert shard["plan"]["aa"] is True and shard["shard"]["blocks"] == [3, 4]  # blocks count from 1
    assert main(["matrix", str(rundir), "--stage", "build"]) == EXIT_OK
    (build,) = stages.matrix_from_json(capsys.readouterr().out)["include"]
    assert build["variants"] == "base"  # cand is not built
    assert main(["matrix", str(rundir)]) == EXIT_OK
    benches = stages.matrix_from_json(capsys.readouterr().out)["include"]
    assert [(e["shard"], e["dir"]) for e in benches] == [("1", "shards/1"), ("2", "shards/2")]
    # a bench job of the A/A plan looks for the one kernel both sides boot
    assert main(["bench", str(rundir), "--shard", "1"]) == EXIT_USAGE
    assert "no exported build here" in capsys.readouterr().err


def test_stage_commands_check_their_arguments(tmp_path: Path, capsys) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(EXPERIMENT + MATRIX)
    rundir = tmp_path / "run"
    assert main(["plan", str(exp_file), "--out", str(rundir)]) == EXIT_OK
    capsys.readouterr()
    assert main(["build", str(exp_file), "--resume", str(rundir)]) == EXIT_USAGE
    assert "drop EXPERIMENT" in capsys.readouterr().err
    assert main(["bench", str(rundir), "--variant", "base"]) == EXIT_USAGE
    assert "has 4 matrix cells; name one with --cell" in capsys.readouterr().err
    assert main(["bench", str(rundir), "--cell", "cpus-8"]) == EXIT_USAGE
    assert "no cell 'cpus-8'" in capsys.readouterr().err
    cell = ["--cell", "cpus-2_procfile-maps"]
    assert main(["bench", str(rundir), "--variant", "other", *cell]) == EXIT_USAGE
    assert "has no variant 'other'" in capsys.readouterr().err
    # a bench job needs the build job's kernels in RUNDIR/build
    assert main(["bench", str(rundir), "--variant", "base", *cell]) == EXIT_USAGE
    assert "no exported build here" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nothing")]) == EXIT_USAGE
    assert "holds no korch run" in capsys.readouterr().err
    assert main(["run", "--matrix", "--aa", str(exp_file)]) == EXIT_USAGE


def test_the_build_stage_needs_the_planned_experiment(tmp_path: Path) -> None:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(EXPERIMENT)
    rundir = tmp_path / "run"
    exp = config.load(exp_file)
    stages.plan_stage(exp, plans.make_plan(exp), rundir, "korch plan")
    plan, _ = plans.load_plan(rundir)
    assert run.load_experiment(rundir, plan).name == "demo"
    exp_file.write_text(EXPERIMENT.replace("cpus: 2", "cpus: 3"))
    with pytest.raises(UserError, match="changed since the run"):
        run.load_experiment(rundir, plan)
    exp_file.unlink()
    with pytest.raises(UserError, match="is gone"):
        run.load_experiment(rundir, plan)
    # booting needs only the vm settings: the copy in the run directory does
    assert run.load_bench_experiment(rundir, plan).vm.cpus == 2


def test_the_default_experiment_is_found_from_another_install(tmp_path: Path) -> None:
    exp = config.load_default()
    rundir = tmp_path / "run"
    stages.plan_stage(exp, plans.make_plan(exp), rundir, "korch plan")
    info = json.loads((rundir / "run.json").read_text())
    info["plan"]["experiment_file"] = "/elsewhere/site-packages/maps-contention.yaml"
    write_json(rundir / "run.json", info)
    plan, _ = plans.load_plan(rundir)
    assert run.load_experiment(rundir, plan).path == config.default_experiment_path()


# ---------------------------------------------------------------- exported builds


def exported(tmp_path: Path) -> Path:
    d = tmp_path / "build" / "v"
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"kernel")
    meta = {
        "variant": "v", "key": "k" * 64, "kernel_release": "7.2.0", "config_sha256": "c" * 64,
        "hashes": {"bzImage": sha256_file(d / "bzImage")},
    }  # fmt: skip
    write_json(d / "metadata.json", meta)
    return d


def test_load_exported_build(tmp_path: Path) -> None:
    d = exported(tmp_path)
    b = build.load_exported(d)
    assert b.variant == "v" and b.bzimage == d / "bzImage" and b.key == "k" * 64
    assert b.metadata["kernel_release"] == "7.2.0"
    (d / "bzImage").write_bytes(b"truncated")
    with pytest.raises(UserError, match="sha256 differs"):
        build.load_exported(d)
    (d / "bzImage").unlink()
    with pytest.raises(UserError, match="bzImage is missing"):
        build.load_exported(d)
    (d / "metadata.json").write_text("{}")
    with pytest.raises(UserError, match="missing variant, key"):
        build.load_exported(d)
    with pytest.raises(UserError, match="no exported build"):
        build.load_exported(tmp_path / "nothing")


# ---------------------------------------------------------------- reports per cell


def cell_results(cell: str, scale: float) -> list:
    out = []
    for i, (v, s) in enumerate((("base", 1.0), ("cand", scale))):
        prov = provenance(v)
        prov["cell"] = {"id": cell, "settings": {}}
        out.append(
            synthetic_results(
                v,
                baseline="base",
                runs=16,
                boots=8,
                seed=11 + i,
                scale=s,
                ops=1000,
                tail=0.02,
                prov=prov,
            )
        )
    return out


def test_report_compares_each_cell_on_its_own(tmp_path: Path, capsys) -> None:
    for cell, scale in (("cpus-2", 1.0), ("cpus-4", 2.0)):
        for r in cell_results(cell, scale):
            # one directory per bench job, as the workflow's artifacts arrive
            r.save(tmp_path / "bench" / f"{cell}-{r.variant}" / "results" / f"{r.variant}.json")
    inputs = sorted((tmp_path / "bench").iterdir())
    out = tmp_path / "report"
    options = ReportOptions(stats=StatsOptions(resamples=200))
    code, written = stages.report_stage(inputs, out, options)
    assert code == EXIT_REGRESSION
    assert written == [out / "cells" / "cpus-2", out / "cells" / "cpus-4"]
    two = json.loads((out / "cells" / "cpus-2" / "comparison.json").read_text())
    four = json.loads((out / "cells" / "cpus-4" / "comparison.json").read_text())
    assert two["verdict"] != "regressed" and four["verdict"] == "regressed"
    # through the CLI: several run directories need --out
    assert main(["report", *map(str, inputs)]) == EXIT_USAGE
    assert "--out" in capsys.readouterr().err
    assert main(["report", *map(str, inputs), "--out", str(out)]) == 1


def test_combined_exit_codes() -> None:
    assert stages.combine_exit_codes([EXIT_OK, EXIT_INCONCLUSIVE]) == EXIT_INCONCLUSIVE
    assert stages.combine_exit_codes([EXIT_INCONCLUSIVE, EXIT_REGRESSION]) == EXIT_REGRESSION
    assert stages.combine_exit_codes([EXIT_OK]) == EXIT_OK


def test_stage_reproduce_command() -> None:
    assert stages.stage_reproduce(["plan", "x.yaml", "--out", "r", "--runs", "2"]) == (
        "korch run --matrix x.yaml --out r --runs 2"
    )


def test_guest_packages_are_a_subset_of_the_full_list() -> None:
    def names(path: Path) -> set[str]:
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return {line for line in lines if line}

    full = names(REPO / "ci" / "debian-packages.txt")
    guest = names(REPO / "ci" / "guest-packages.txt")
    # build-essential brings the compiler and the C library's static archive
    assert guest - full <= {"gcc", "libc6-dev"} and "build-essential" in full
    assert {"qemu-system-x86", "busybox-static", "dropbear-bin"} <= guest


def test_variants_of_two_trees_build_in_two_jobs(tmp_path: Path, capsys) -> None:
    text = (
        config.default_experiment_path()
        .read_text()
        .replace(
            "    description: stock Linux 7.2",
            "    source: {debian: linux-source-6.12, suite: trixie}\n    description: Linux 6.12",
        )
    )
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "maps-under-mmap-lock.patch").write_text("x")
    f = tmp_path / "cross.yaml"
    f.write_text(text)
    assert main(["matrix", str(f), "--stage", "build"]) == EXIT_OK
    built = stages.matrix_from_json(capsys.readouterr().out)["include"]
    assert [(e["kernel"], e["variants"]) for e in built] == [
        ("linux-source-7.2", "mmap-lock"),
        ("linux-source-6.12", "per-vma"),
    ]
    assert main(["matrix", str(f)]) == EXIT_OK
    bench = stages.matrix_from_json(capsys.readouterr().out)["include"]
    assert {e["kernel"] for e in bench} == {"linux-source-7.2+linux-source-6.12"}


def test_the_plan_lists_the_guest_packages_a_bench_job_installs(tmp_path: Path) -> None:
    # korch.yml's bench job passes RUNDIR/guest-packages.txt to ci/install-deps.sh
    exp_file = tmp_path / "e.yaml"
    exp_file.write_text(EXPERIMENT + "guest: {packages: [ccache]}\n")
    rundir = tmp_path / "r"
    assert main(["plan", str(exp_file), "--out", str(rundir)]) == EXIT_OK
    listed = (rundir / "guest-packages.txt").read_text().splitlines()
    assert listed[0].startswith("#") and listed[1:] == ["ccache"]
    workflow = (REPO / "ci" / "github" / "korch.yml").read_text()
    assert 'install-deps.sh "$RUNDIR/guest-packages.txt"' in workflow
