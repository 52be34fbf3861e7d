"""Shards of blocks: the plan splits its blocks into bench jobs, each job boots every variant
on its own machine, and the report merges the jobs, pairing the variants within a block."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator import rundir, stages
from orchestrator.cli import main
from orchestrator.errors import EXIT_OK, EXIT_USAGE, UserError
from orchestrator.plan import Plan
from orchestrator.report.synthetic import provenance, synthetic_results
from orchestrator.results import ResultsFile
from orchestrator.stats import StatsOptions, compare
from tests.unit.test_blocks import EXPERIMENT as BLOCKS_EXPERIMENT

# the experiment of the block tests, with 8 blocks of 1 run
EXPERIMENT = BLOCKS_EXPERIMENT.replace("runs: 2, blocks: 3", "runs: 1, blocks: 8")
assert EXPERIMENT != BLOCKS_EXPERIMENT


def plan(blocks: int, shards: int, sides: int = 2) -> Plan:
    names = tuple(f"v{i}" for i in range(sides))
    return Plan(
        experiment="demo", experiment_file="x", variants=names, kernels={n: n for n in names},
        baseline=names[0], blocks=blocks, runs=1, duration_s=1.0, cpus=2, memory="1G", accel="tcg", seed=1, aa=False, shards=shards,
    )  # fmt: skip


@pytest.mark.parametrize("sides", [2, 3])
@pytest.mark.parametrize("shards", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("blocks", [5, 6, 8, 16, 17])
def test_shards_cover_every_block_once(blocks: int, shards: int, sides: int) -> None:
    if shards > blocks:
        return
    p = plan(blocks, shards, sides)
    ranges = [p.shard_blocks(s) for s in range(1, shards + 1)]
    assert [b for r in ranges for b in r] == list(range(1, blocks + 1))
    assert all(len(r) >= 1 for r in ranges)
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 2 * sides  # as even as whole chunks allow
    if blocks >= shards * sides:  # whole chunks: each side first equally often per shard
        for r in ranges[:-1]:
            if r.start % sides != 1 % sides:
                continue
            assert len(r) % sides == 0
            firsts = [p.block_order(b)[0] for b in r]
            assert all(firsts.count(v) == len(r) // sides for v in p.variants)
    one = replace(p, shard=2 if shards > 1 else 1)
    assert list(one.own_blocks) == list(ranges[1 if shards > 1 else 0])


def test_plan_with_shards_writes_a_run_directory_per_shard(tmp_path: Path, capsys) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT)
    rundir = tmp_path / "run"
    assert main(["plan", str(exp), "--out", str(rundir), "--shards", "2"]) == EXIT_OK
    top = json.loads((rundir / "run.json").read_text())
    for s, blocks in ((1, [1, 4]), (2, [5, 8])):
        info = json.loads((rundir / "shards" / str(s) / "run.json").read_text())
        assert info["run_id"] == top["run_id"]
        assert info["shard"] == {"index": s, "of": 2, "blocks": blocks}
        assert info["plan"]["shard"] == s and info["plan"]["shards"] == 2
    capsys.readouterr()
    assert main(["matrix", str(rundir)]) == EXIT_OK
    entries = stages.matrix_from_json(capsys.readouterr().out)["include"]
    assert [(e["shard"], e["dir"]) for e in entries] == [("1", "shards/1"), ("2", "shards/2")]
    assert main(["matrix", str(rundir), "--stage", "build"]) == EXIT_OK
    # base and cand share a configuration: one build job builds both
    assert [e["variants"] for e in stages.matrix_from_json(capsys.readouterr().out)["include"]] == [
        "base cand"
    ]
    # a bench job must say which shard it runs
    with pytest.raises(UserError, match="name one with --shard"):
        stages.bench_dir(rundir, None, None)
    with pytest.raises(UserError, match="there is no shard 3"):
        stages.bench_dir(rundir, None, 3)
    assert stages.bench_dir(rundir, None, 2) == rundir / "shards" / "2"


def test_shards_beyond_the_blocks_or_with_until_decisive_are_refused(
    tmp_path: Path, capsys
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT)
    assert main(["plan", str(exp), "--out", str(tmp_path / "r"), "--shards", "9"]) == EXIT_USAGE
    assert "--shards 9 is more than the 8 blocks" in capsys.readouterr().err


def shard_file(
    variant: str, shard: int, of: int, host: str, cpu: str, scale: float, seed: int,
    blocks: int = 6, run_id: str = "run-1",
) -> ResultsFile:  # fmt: skip
    """One bench job's results of ``variant``: blocks (shard-1)*blocks+1.. on ``host``."""
    r = synthetic_results(
        variant, baseline="base", runs=blocks, boots=blocks, seed=seed, scale=scale,
        boot_sd=0.05, ops=300,
    )  # fmt: skip
    offset = (shard - 1) * blocks
    for b in r.boots:
        b["block"] += offset
        b["id"] = f"{variant}-{b['block']}"
    for row in r.runs:
        row["block"] += offset
        row["boot"] = f"{variant}-{row['block']}"
    r.provenance = dict(
        provenance(variant), host=host, host_cpu=cpu, run_id=run_id,
        shard={"index": shard, "of": of, "blocks": [offset + 1, offset + blocks]},
    )  # fmt: skip
    return r


def test_shards_on_different_machines_pair_within_blocks() -> None:
    """Shard 2's machine is 30% slower for both variants; the candidate halves latency.
    The blocks pair within their machine, so the comparison is paired and comparable, the
    verdict is the halving's, and the report shows each shard's own estimate."""
    files = []
    for shard, (host, cpu, slow) in enumerate((("a", "CPU A", 1.0), ("b", "CPU B", 1.3)), 1):
        files.append(shard_file("base", shard, 2, host, cpu, slow, seed=10 * shard))
        files.append(shard_file("cand", shard, 2, host, cpu, 0.5 * slow, seed=10 * shard + 1))
    merged, warnings = rundir.merge_shards(files)
    assert warnings == []
    assert [r.variant for r in merged] == ["base", "cand"]
    base = merged[0]
    assert [s["index"] for s in base.provenance["shards"]] == [1, 2]
    assert base.provenance["host_cpu"] == "CPU A; CPU B"
    assert {b["host"] for b in base.boots if b["block"] <= 6} == {"a"}
    comparison = compare(merged, StatsOptions(baseline="base"))
    cand = comparison.candidates[0]
    head = cand.headline
    assert head is not None and head.method == "paired" and head.blocks == 12
    assert cand.comparable and str(cand.verdict) == "improved"
    assert [(s.shard, s.blocks, s.host_cpu, s.n) for s in cand.strata] == [
        (1, (1, 6), "CPU A", 6),
        (2, (7, 12), "CPU B", 6),
    ]
    assert all(s.ratio is not None and s.ratio < 1 for s in cand.strata)


def test_a_missing_shard_is_said_and_its_blocks_left_out() -> None:
    files = [
        shard_file("base", 1, 2, "a", "CPU A", 1.0, seed=1),
        shard_file("cand", 1, 2, "a", "CPU A", 1.0, seed=2),
    ]
    merged, warnings = rundir.merge_shards(files)
    assert any("shard(s) 2 of 2" in w and "base" in w for w in warnings)
    head = compare(merged, StatsOptions(baseline="base")).candidates[0].headline
    assert head is not None and head.method == "paired" and head.blocks == 6


def test_results_of_one_variant_per_machine_are_not_paired() -> None:
    """The old layout: each variant benched on its own runner. Matching block numbers from
    two machines are not pairs: the comparison falls back to unpaired and says so."""
    base = synthetic_results("base", baseline="base", runs=8, boots=8, seed=1)
    cand = synthetic_results("cand", baseline="base", runs=8, boots=8, seed=2)
    base.provenance = dict(base.provenance, host="a", run_id="r")
    cand.provenance = dict(cand.provenance, host="b", run_id="r")
    head = compare([base, cand], StatsOptions(baseline="base")).candidates[0].headline
    assert head is not None and head.method == "unpaired"


def test_shards_that_clash_are_refused() -> None:
    one = shard_file("base", 1, 2, "a", "CPU A", 1.0, seed=1)
    again = shard_file("base", 1, 2, "b", "CPU B", 1.0, seed=2)
    with pytest.raises(UserError, match="hold shard 1"):
        rundir.merge_shards([one, again])
    other = shard_file("base", 2, 2, "b", "CPU B", 1.0, seed=2, run_id="run-2")
    with pytest.raises(UserError, match="different planned runs"):
        rundir.merge_shards([one, other])


def test_history_files_a_nights_shards_per_cpu_model(tmp_path: Path) -> None:
    """Shards on two CPU models are two strata of the night, each with its own blocks;
    shards on one model are one side with every block."""
    from orchestrator.history import load_sides

    dirs = []
    layout = ((1, "a", "CPU A"), (2, "b", "CPU B"), (3, "c", "CPU A"))
    for shard, host, cpu in layout:
        d = tmp_path / f"korch-bench-default-{shard}" / "results"
        d.mkdir(parents=True)
        for v, seed in (("base", 1), ("cand", 2)):
            shard_file(v, shard, 3, host, cpu, 1.0, seed=seed + 10 * shard).save(d / f"{v}.json")
        dirs.append(d.parent)
    sides = load_sides(dirs)
    found = sorted((s.cell, s.variant, len(s.boots)) for s in sides)
    assert found == [
        ("default@CPU A", "base", 12), ("default@CPU A", "cand", 12),
        ("default@CPU B", "base", 6), ("default@CPU B", "cand", 6),
    ]  # fmt: skip
    assert {s.run_id for s in sides} == {"run-1"}


def test_the_reports_of_a_sharded_run_go_to_its_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert stages.common_run_dir([run / "shards" / "1", run / "shards" / "2"]) == run.resolve()
    cells = [run / "cells" / c / "shards" / s for c in ("a", "b") for s in ("1", "2")]
    assert stages.common_run_dir(cells) == run.resolve()
    # artifacts downloaded side by side name no run directory: the report needs --out
    assert stages.common_run_dir([tmp_path / "bench-1", tmp_path / "bench-2"]) is None
