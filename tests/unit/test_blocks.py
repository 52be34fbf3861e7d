"""Runs as blocks: the balanced boot order, the plan's new fields and their old names, the
sequential loop (stop when decisive, at the block limit, on the time budget), resuming and
extending a run. The loop runs with fake boots: no QEMU here (tests/integration boots)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import build, cli, config, run, rundir
from orchestrator import checks as checks_mod
from orchestrator import plan as plans
from orchestrator.errors import (
    EXIT_GUEST,
    EXIT_OK,
    EXIT_USAGE,
    BootTimeout,
    ConfigError,
    GuestError,
    UserError,
)
from orchestrator.fsutil import write_json
from orchestrator.results import ResultsFile
from orchestrator.workloads.maps_contention import driver
from orchestrator.workloads.maps_contention import workload as maps_workload

EXPERIMENT = """\
schema: 1
name: demo
kernel:
  source: {path: linux}
  kconfig: [tinyconfig, qemu-guest]
variants:
  - name: base
  - name: cand
vm: {cpus: 2, memory: 512M}
workload: {runs: 2, blocks: 3, duration_s: 2}
"""


def plan_of(sides: tuple[str, ...], blocks: int = 6, seed: int = 1, **kw: Any) -> plans.Plan:
    fields: dict[str, Any] = dict(
        experiment="demo", experiment_file="exp.yaml", variants=sides,
        kernels={s: s for s in sides}, baseline=sides[0], blocks=blocks, runs=2,
        duration_s=1.0, params={"region_mb": 64, "busy_ms": 1, "procfile": "maps"}, cpus=2,
        memory="512M",
        accel="tcg", seed=1, aa=False, order_seed=seed,
    )  # fmt: skip
    fields.update(kw)
    return plans.Plan(**fields)


def exp_file(tmp_path: Path, text: str = EXPERIMENT) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "exp.yaml"
    f.write_text(text)
    return f


# ---------------------------------------------------------------- the order of a block


@pytest.mark.parametrize("sides", [("a", "b"), ("a", "b", "c")])
def test_block_order_is_balanced_within_each_chunk(sides: tuple[str, ...]) -> None:
    k = len(sides)
    for seed in range(1, 21):
        plan = plan_of(sides, blocks=5 * k, seed=seed)
        for chunk in range(5):
            orders = [plan.block_order(chunk * k + i + 1) for i in range(k)]
            assert all(sorted(o) == sorted(sides) for o in orders)
            # every side boots in every position exactly once per chunk, first included
            for position in range(k):
                assert Counter(o[position] for o in orders) == Counter(sides)


def test_block_order_is_drawn_from_the_seed() -> None:
    sides = ("a", "b", "c")
    first = [plan_of(sides, blocks=12, seed=7).block_order(b) for b in range(1, 13)]
    again = [plan_of(sides, blocks=12, seed=7).block_order(b) for b in range(1, 13)]
    assert first == again
    others = {
        tuple(plan_of(sides, blocks=12, seed=s).block_order(b) for b in range(1, 13))
        for s in range(1, 11)
    }
    assert len(others) > 1  # the seed matters
    # the first side does not always go first
    assert {plan_of(("a", "b"), seed=s).block_order(1)[0] for s in range(1, 11)} == {"a", "b"}


def test_more_blocks_leave_earlier_blocks_as_they_were() -> None:
    for sides in (("a", "b"), ("a", "b", "c")):
        short = plan_of(sides, blocks=5, seed=3)
        long = plan_of(sides, blocks=17, seed=3)
        assert long.schedule()[: len(short.schedule())] == short.schedule()
    plan = plan_of(("a", "b"), blocks=3)
    schedule = plan.schedule()
    assert len(schedule) == 6 and {b for _, b in schedule} == {1, 2, 3}
    assert [s for s, b in schedule if b == 2] == list(plan.block_order(2))
    assert plan_of(("solo",)).block_order(4) == ("solo",)
    with pytest.raises(ValueError):
        plan.block_order(0)


# ---------------------------------------------------------------- plans: new keys, old names


def test_korch_plan_writes_blocks_and_the_order_seed(tmp_path: Path, capsys) -> None:
    f = exp_file(tmp_path)
    rundir = tmp_path / "run"
    assert cli.main(["plan", str(f), "--out", str(rundir), "--blocks", "5"]) == EXIT_OK
    assert "5 block(s) (order seed 1) x 2 run(s)" in capsys.readouterr().out
    saved = json.loads((rundir / "run.json").read_text())["plan"]
    assert saved["blocks"] == 5 and saved["order_seed"] == 1 and "boots" not in saved
    assert saved["smallest_effect_pct"] == 5.0 and saved["until_decisive"] is False
    plan, _ = plans.load_plan(rundir)
    assert plan.workload()["blocks"] == 5 and "boots" not in plan.workload()
    assert plan.design() == {"blocks": 5, "runs": 2, "order_seed": 1, "sequential": None}
    # --boots is the old name of --blocks
    other = tmp_path / "old"
    assert cli.main(["plan", str(f), "--out", str(other), "--boots", "4"]) == EXIT_OK
    assert plans.load_plan(other)[0].blocks == 4
    assert "--boots" not in cli.parser().format_help()


def test_a_run_json_with_boots_still_loads(tmp_path: Path) -> None:
    f = exp_file(tmp_path)
    exp = config.load(f)
    plan = plans.make_plan(exp)
    # a plan as korch wrote it before blocks: "boots", none of the newer fields
    new_fields = ("order_seed", "smallest_effect_pct", "until_decisive", "max_blocks", "budget_s")
    old = {k: v for k, v in asdict(plan).items() if k not in new_fields}
    old["boots"] = old.pop("blocks")
    rundir = tmp_path / "run"
    write_json(rundir / "run.json", {"plan": old, "reproduce": "korch run", "created": "x"})
    loaded, reproduce = plans.load_plan(rundir)
    assert loaded.blocks == 3 and loaded.order_seed == 1 and reproduce == "korch run"
    assert loaded == plan
    # the same settings again in that directory are the same run
    run.Runner(exp, plan, rundir, build.NullProgress(), "korch run").prepare()


def test_experiment_keys_blocks_boots_and_smallest_effect(tmp_path: Path) -> None:
    w = config.load(exp_file(tmp_path)).workload
    assert w.blocks == 3 and w.smallest_effect_pct == 5.0
    old = config.load(exp_file(tmp_path, EXPERIMENT.replace("blocks: 3", "boots: 4"))).workload
    assert old.blocks == 4
    both = EXPERIMENT.replace("blocks: 3", "blocks: 3, boots: 4")
    with pytest.raises(ConfigError) as info:
        config.load(exp_file(tmp_path, both))
    (p,) = info.value.problems
    assert p.startswith(f"{tmp_path / 'exp.yaml'}:10: workload.boots: give either blocks or")
    effect = config.load(
        exp_file(tmp_path, EXPERIMENT.replace("blocks: 3", "blocks: 3, smallest_effect_pct: 2.5"))
    )
    assert effect.workload.smallest_effect_pct == 2.5
    assert plans.make_plan(effect).workload()["smallest_effect_pct"] == 2.5
    for bad, says in (
        ("0", "must be between 0 and 100 (percent) (got 0)"),
        ("100", "must be between 0 and 100 (percent) (got 100)"),
        ("five", "expected a number (percent), got a string ('five')"),
    ):
        text = EXPERIMENT.replace("blocks: 3", f"blocks: 3, smallest_effect_pct: {bad}")
        with pytest.raises(ConfigError) as info:
            config.load(exp_file(tmp_path, text))
        (p,) = info.value.problems
        assert f":10: workload.smallest_effect_pct: {says}" in p
    with pytest.raises(ConfigError) as info:
        config.load(exp_file(tmp_path, EXPERIMENT.replace("blocks: 3", "blocks: 0")))
    assert (
        ":10: workload.blocks: must be greater than 0 and at most 1000 (got 0)"
        in (info.value.problems[0])
    )


def test_the_default_experiment_spends_its_repetitions_on_boots() -> None:
    w = config.load_default().workload
    assert (w.runs, w.blocks) == (1, 16)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("90s", 90.0), ("1h", 3600.0), ("600", 600.0), ("2.5m", 150.0)],
)
def test_budget_durations(text: str, seconds: float) -> None:
    assert plans.parse_duration(text) == seconds
    assert plans.parse_duration(plans.format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-5m", "1d", "m", ""])
def test_bad_budgets_are_usage_errors(text: str) -> None:
    with pytest.raises(UserError, match="is not a duration") as info:
        plans.parse_duration(text)
    assert "30m" in (info.value.hint or "")


def test_sequential_options_are_checked_before_anything_runs(tmp_path: Path, capsys) -> None:
    f = str(exp_file(tmp_path))
    out = ["--out", str(tmp_path / "r")]
    assert cli.main(["run", f, "--budget", "soon", *out]) == EXIT_USAGE
    assert "--budget 'soon' is not a duration" in capsys.readouterr().err
    assert cli.main(["run", f, "--max-blocks", "4", *out]) == EXIT_USAGE
    assert "add --until-decisive" in capsys.readouterr().err
    assert cli.main(["run", f, "--until-decisive", "--max-blocks", "0", *out]) == EXIT_USAGE
    assert "--max-blocks must be a finite number greater than zero" in capsys.readouterr().err
    # NaN went into run.json as NaN (not JSON); absurd values would run for days
    assert cli.main(["plan", f, "--duration", "nan", *out]) == EXIT_USAGE
    assert "--duration must be a finite number greater than zero (got nan)" in (
        capsys.readouterr().err
    )
    assert cli.main(["plan", f, "--blocks", "100000", "--duration", "inf", *out]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--blocks must be at most 1000 (got 100000)" in err and "(got inf)" in err
    assert not (tmp_path / "r").exists()
    assert cli.main(["run", "--matrix", f, "--until-decisive", *out]) == EXIT_USAGE
    assert "drop --until-decisive" in capsys.readouterr().err
    exp = config.load(Path(f))
    args = cli.parser().parse_args(["run", f, "--until-decisive", "--max-blocks", "9"])
    plan = plans.plan_for(exp, cli._overrides(args))
    assert plan.until_decisive and plan.blocks == plan.max_blocks == plan.last_block == 9
    assert plan.design()["sequential"] == {"max_blocks": 9}
    args = cli.parser().parse_args(["run", f, "--budget", "30m"])
    assert plans.plan_for(exp, cli._overrides(args)).budget_s == 1800.0


# ---------------------------------------------------------------- the loop, with fake boots


ENV = {"accel": "tcg", "accel_reason": "test", "qemu_version": "q", "host_cpu": "c", "host": "h"}


class Clock:
    """time.monotonic for the loop: a fake boot takes ``boot_s`` seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_kernel() -> Any:
    meta = {"kernel_release": "7.2", "config_sha256": "c" * 64, "patches": []}
    return SimpleNamespace(metadata=meta, key="k", bzimage=Path("bzImage"), checks={})


class Bench:
    """Runners whose guest image, accelerator and boots are fakes: a boot records itself in
    :attr:`boots`, appends its missing runs and takes ``boot_s`` on the run module's clock."""

    def __init__(self, monkeypatch, tmp_path: Path, plan: plans.Plan, boot_s: float = 10.0):
        self.exp = config.load(exp_file(tmp_path))
        self.rundir = tmp_path / "run"
        self.clock = Clock()
        self.boots: list[tuple[str, int, int]] = []
        self.fail_at: str | None = None
        self.timeouts: dict[str, int] = {}  # boot id -> how many attempts time out
        self.failures: dict[str, list[BaseException]] = {}  # boot id -> its attempts' errors
        self.plan = plan
        bench = self

        def environment(self: run.Runner, builds: Any, img: Any, side: Any = None) -> Any:
            self.env = dict(ENV)
            return None

        def one_boot(self: run.Runner, res, kernel, img, decision, block, position) -> None:
            this = plans.boot_id(res.variant, block)
            if this == bench.fail_at:
                raise run.Interrupted("stopped by SIGTERM")
            bench.boots.append((res.variant, block, position))
            attempt = 1 + sum(1 for b in res.boots if b["id"] == this)
            if bench.timeouts.get(this, 0) >= attempt:
                res.boots.append(
                    {"id": this, "attempt": attempt, "block": block, "error": "timed out"}
                )
                raise BootTimeout("the guest did not reach its ready marker within 60 s (tcg)")
            if len(bench.failures.get(this, [])) >= attempt:
                exc = bench.failures[this][attempt - 1]
                res.boots.append({"id": this, "attempt": attempt, "block": block, "error": "x"})
                raise exc
            res.boots.append({"id": this, "attempt": attempt, "block": block})
            for i in range(self.runs_done(res, this), self.plan.runs):
                res.runs.append({"boot": this, "block": block, "attempt": attempt, "index": i})
            bench.clock.now += boot_s

        monkeypatch.setattr(run.Runner, "guest_image", lambda self: None)
        monkeypatch.setattr(run.Runner, "environment", environment)
        monkeypatch.setattr(run.Runner, "one_boot", one_boot)
        # the run module's clock only
        clock = SimpleNamespace(monotonic=self.clock, strftime=time.strftime, gmtime=time.gmtime)
        monkeypatch.setattr(run, "time", clock)

    def runner(self, on_block: Any = None) -> run.Runner:
        r = run.Runner(self.exp, self.plan, self.rundir, build.NullProgress(), "korch run")
        r.prepare()
        r.on_block = on_block
        return r

    def run(self, on_block: Any = None) -> dict[str, ResultsFile]:
        kernels = {s: fake_kernel() for s in self.plan.variants}
        return self.runner(on_block).bench(kernels)

    def blocks_booted(self) -> list[int]:
        return sorted({b for _, b, _ in self.boots})


def sequential(blocks: int = 8, **kw: Any) -> plans.Plan:
    return plan_of(("base", "cand"), blocks=blocks, until_decisive=True, max_blocks=blocks, **kw)


def test_the_loop_boots_each_block_in_its_order(monkeypatch, tmp_path: Path) -> None:
    plan = plan_of(("base", "cand"), blocks=4, seed=5)
    bench = Bench(monkeypatch, tmp_path, plan)
    results = bench.run()
    expected = [(s, b, p) for b in range(1, 5) for p, s in enumerate(plan.block_order(b))]
    assert bench.boots == expected
    for res in results.values():
        assert res.status == "complete" and len(res.runs) == 8
        design = res.provenance["design"]
        assert design == {
            "blocks": 4, "runs": 2, "order_seed": 5, "sequential": None, "blocks_run": 4,
            "stop": "ran the 4 planned blocks",
        }  # fmt: skip
        assert res.provenance["workload"]["blocks"] == 4
    # a finished run resumed: nothing to boot
    bench.boots.clear()
    bench.run()
    assert bench.boots == []


def test_the_loop_stops_when_the_callback_says_so(monkeypatch, tmp_path: Path) -> None:
    bench = Bench(monkeypatch, tmp_path, sequential(8))
    seen: list[tuple[int, int]] = []

    def on_block(block: int, results: dict[str, ResultsFile]) -> str | None:
        # called after complete blocks only, with every side's runs so far
        seen.append((block, min(len(r.runs) for r in results.values())))
        return f"decisive after {block} blocks" if block == 3 else None

    results = bench.run(on_block)
    assert seen == [(1, 2), (2, 4), (3, 6)]
    assert bench.blocks_booted() == [1, 2, 3]
    for res in results.values():
        design = res.provenance["design"]
        assert design["sequential"] == {"max_blocks": 8}
        assert design["blocks_run"] == 3 and design["stop"] == "decisive after 3 blocks"
        assert res.status == "complete"
    # a plain resume of a run that stopped by its rule boots nothing more
    bench.boots.clear()
    again = bench.run(lambda block, results: None)
    assert bench.boots == []
    assert next(iter(again.values())).provenance["design"]["stop"] == "decisive after 3 blocks"


def test_the_loop_stops_at_the_block_limit(monkeypatch, tmp_path: Path) -> None:
    bench = Bench(monkeypatch, tmp_path, sequential(4))
    calls: list[int] = []
    results = bench.run(lambda block, results: calls.append(block))
    assert calls == [1, 2, 3, 4] and bench.blocks_booted() == [1, 2, 3, 4]
    design = results["cand"].provenance["design"]
    assert design["blocks_run"] == 4 and "most blocks allowed (4)" in design["stop"]
    # max_blocks below the plan's blocks bounds the loop
    bounded = plan_of(("base", "cand"), blocks=6, until_decisive=True, max_blocks=2)
    other = Bench(monkeypatch, tmp_path / "x", bounded)
    other.run(lambda block, results: None)
    assert other.blocks_booted() == [1, 2]


def test_the_loop_stops_before_a_block_would_break_the_budget(monkeypatch, tmp_path: Path) -> None:
    # two boots of 10 s a block: after 3 blocks (60 s) a fourth would end at 80 s > 65 s
    bench = Bench(monkeypatch, tmp_path, sequential(10, budget_s=65.0))
    results = bench.run(lambda block, results: None)
    assert bench.blocks_booted() == [1, 2, 3]
    design = results["base"].provenance["design"]
    assert design["blocks_run"] == 3
    assert design["stop"].startswith("time budget: block 4 would end past 65s")
    # without --until-decisive a budget bounds a fixed run the same way
    fixed = Bench(monkeypatch, tmp_path / "fixed", plan_of(("base", "cand"), budget_s=45.0))
    fixed.run()
    assert fixed.blocks_booted() == [1, 2]


def test_an_interrupted_run_resumes_where_it_stopped(monkeypatch, tmp_path: Path) -> None:
    plan = plan_of(("base", "cand"), blocks=3, seed=4)
    bench = Bench(monkeypatch, tmp_path, plan)
    second = plan.block_order(2)[1]
    bench.fail_at = plans.boot_id(second, 2)
    with pytest.raises(run.Interrupted):
        bench.run()
    for side in plan.variants:
        res = ResultsFile.load(bench.rundir / "results" / f"{side}.json")
        assert res.status == "interrupted"
        assert res.interruption and res.interruption["boot"] == bench.fail_at
        assert res.provenance["design"]["blocks_run"] == 1
        assert res.provenance["design"]["stop"] is None
    bench.fail_at = None
    bench.boots.clear()
    bench.run()
    assert bench.boots == [
        (second, 2, 1),
        *[(s, 3, p) for p, s in enumerate(plan.block_order(3))],
    ]


def test_a_run_is_extended_with_more_blocks(monkeypatch, tmp_path: Path) -> None:
    plan = plan_of(("base", "cand"), blocks=2, seed=9, experiment_file=str(tmp_path / "exp.yaml"))
    bench = Bench(monkeypatch, tmp_path, plan)
    bench.run()
    before = json.loads((bench.rundir / "run.json").read_text())
    with pytest.raises(UserError, match="fewer than the 2 blocks"):
        plans.extend_run(bench.rundir, plan, 1)
    args = cli.parser().parse_args(["run", "--resume", str(bench.rundir), "--blocks", "4"])
    args.argv = ["run"]
    _, longer, _, reproduce = run.plan_from_request(cli._run_request(args))
    assert longer.blocks == 4 and reproduce.endswith("--blocks 4")
    after = json.loads((bench.rundir / "run.json").read_text())
    assert after["run_id"] == before["run_id"] and after["plan"]["blocks"] == 4
    assert after["extended"][0]["blocks"] == [2, 4]
    assert plans.load_plan(bench.rundir)[0] == longer
    bench.plan = longer
    bench.boots.clear()
    results = bench.run()
    assert bench.blocks_booted() == [3, 4]
    assert [b["id"] for b in results["base"].boots] == [f"base-{b}" for b in range(1, 5)]
    assert results["base"].provenance["design"]["blocks_run"] == 4
    # blocks added after looking make the run sequential: the report uses the level that
    # holds over every look
    assert results["base"].provenance["design"]["sequential"] == {"max_blocks": 4}
    # other settings stay refused with --resume
    args = cli.parser().parse_args(["run", "--resume", str(bench.rundir), "--until-decisive"])
    args.argv = ["run"]
    with pytest.raises(UserError, match="drop --until-decisive"):
        run.plan_from_request(cli._run_request(args))


# ---------------------------------------------------------------- what one boot records


class FakeGuest:
    """A booted guest for Runner.one_boot: it answers /proc/version and nothing else."""

    boot_s = 1.5
    proc = None  # no QEMU: no host share is recorded

    def __init__(self, *args: Any, **kw: Any) -> None:
        pass

    def __enter__(self) -> FakeGuest:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, cmd: str, timeout: float) -> Any:
        return SimpleNamespace(stdout="Linux version 7.2 (fake)\n")


def test_boots_and_runs_record_their_block_position_and_attempt(
    monkeypatch, tmp_path: Path
) -> None:
    """The real one_boot, with a fake guest and workload."""

    def workload(remote: Any, params: driver.Params, **kw: Any) -> driver.WorkloadResult:
        outcomes = []
        for i in range(params.runs):
            outcome = driver.RunOutcome(index=i, seed=params.seed + i, record=None)
            kw["on_run"](outcome)
            outcomes.append(outcome)
        return driver.WorkloadResult(params, driver.placement(params.vcpus), tuple(outcomes))

    monkeypatch.setattr(run.vm, "Guest", FakeGuest)
    monkeypatch.setattr(maps_workload.driver, "run_workload", workload)
    plan = plan_of(("base", "cand"), blocks=2)
    rundir = tmp_path / "run"
    runner = run.Runner(config.load(exp_file(tmp_path)), plan, rundir, build.NullProgress(), "")
    runner.env = dict(ENV)
    res = runner.results_for("cand", fake_kernel())
    runner.one_boot(res, fake_kernel(), None, None, 2, 1)  # type: ignore[arg-type]
    res.runs.pop()  # as if the boot died after its first run
    runner.one_boot(res, fake_kernel(), None, None, 2, 1)  # type: ignore[arg-type]
    assert [(b["id"], b["attempt"], b["block"], b["position"]) for b in res.boots] == [
        ("cand-2", 1, 2, 1),
        ("cand-2", 2, 2, 1),
    ]
    assert [(r["boot"], r["block"], r["attempt"], r["index"]) for r in res.runs] == [
        ("cand-2", 2, 1, 0),
        ("cand-2", 2, 2, 1),
    ]
    # run i of block b has the same seed on every side
    assert [r["seed"] for r in res.runs] == [3, 4]
    saved = ResultsFile.load(rundir / "results" / "cand.json")
    assert saved.runs == res.runs


def test_a_resumed_boot_whose_checks_were_cut_short_runs_only_the_missing_checks(
    monkeypatch, tmp_path: Path
) -> None:
    """A run stopped after a boot's timed runs but before its checks: --resume boots it
    again for the checks it lacks, runs no workload, and the gate sees each check once."""

    def no_workload(*args: Any, **kw: Any) -> None:
        raise AssertionError("the boot's runs were complete: no workload to run")

    ran: list[list[str]] = []

    def fake_checks(remote: Any, specs: Any, binaries: Any, save_dir: Any, on_check: Any) -> None:
        ran.append([spec.test for spec in specs])
        for spec in specs:
            on_check(spec.test, checks_mod.CheckResult("pass", 0, 1.0, passed=1))

    monkeypatch.setattr(run.vm, "Guest", FakeGuest)
    monkeypatch.setattr(maps_workload.driver, "run_workload", no_workload)
    monkeypatch.setattr(run.checks, "run_checks", fake_checks)
    text = EXPERIMENT + "checks: [proc/a, proc/b]\n"
    plan = plan_of(("base", "cand"), blocks=1)
    runner = run.Runner(
        config.load(exp_file(tmp_path, text)), plan, tmp_path / "run", build.NullProgress(), ""
    )
    runner.env = dict(ENV)
    kernel = fake_kernel()
    kernel.checks = {"proc/a": Path("a"), "proc/b": Path("b")}
    res = runner.results_for("cand", kernel)
    # the earlier session: both runs done, proc/a done, then SIGKILL
    passed = checks_mod.CheckResult("pass", 0, 1.0, passed=1).to_json()
    # proc/b's entry was being written when the run died: it holds no result
    entry = {"proc/a": passed, "proc/b": {}}
    res.boots.append({"id": "cand-1", "attempt": 1, "block": 1, "checks": entry})
    res.runs += [{"boot": "cand-1", "attempt": 1, "block": 1, "index": i} for i in range(2)]
    assert runner.checks_missing(res, "cand-1", kernel) == ["proc/b"]
    assert not runner.boot_done(res, "cand-1", kernel)

    runner.one_boot(res, kernel, None, None, 1, 0)  # type: ignore[arg-type]
    assert ran == [["proc/b"]] and len(res.runs) == 2
    assert res.boots[1]["attempt"] == 2 and list(res.boots[1]["checks"]) == ["proc/b"]
    assert runner.boot_done(res, "cand-1", kernel)
    # a check the kernel has no program for is not waited for
    kernel.checks = {"proc/a": Path("a")}
    assert runner.checks_missing(res, "cand-1", kernel) == []


def test_a_run_json_of_the_older_layout_resumes_as_the_same_plan(tmp_path: Path) -> None:
    # before workloads declared their parameters, the plan held maps-contention's own
    exp = config.load(exp_file(tmp_path))
    fresh = plans.make_plan(exp)
    old = asdict(fresh)
    params = old.pop("params")
    del old["workload_name"]
    old.update(params)
    assert set(params) == {"region_mb", "busy_ms", "procfile"}
    saved = json.loads(json.dumps(old))
    assert plans.plan_from_json(saved) == fresh
    assert plans.plan_from_json(json.loads(json.dumps(asdict(fresh)))) == fresh


def test_a_run_directory_is_held_by_one_korch(monkeypatch, tmp_path: Path) -> None:
    # two `korch run --resume DIR` at once both booted the missing boots and the last
    # writer's results won: the second now stops before it boots anything
    plan = plan_of(("base", "cand"), blocks=2, seed=3, experiment_file=str(tmp_path / "exp.yaml"))
    bench = Bench(monkeypatch, tmp_path, plan)
    runner = bench.runner()
    kernels = {s: fake_kernel() for s in plan.variants}
    held = pytest.raises(UserError, match=rf"another korch \(pid {os.getpid()}\) is running")
    with rundir.RunDir(bench.rundir).lock(), held:
        runner.bench(kernels)
    assert bench.boots == []
    # released when its holder is done: the run goes ahead
    runner.bench(kernels)
    assert len(bench.boots) == 4


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (UserError("workload.region_mb: too large"), False),  # resuming fails the same way
        (OSError(28, "No space left on device"), True),  # the runs so far are kept
        (run.Interrupted("stopped by SIGTERM"), True),
    ],
)
def test_the_resume_hint_only_where_resuming_helps(
    monkeypatch, tmp_path: Path, error: BaseException, hint: bool
) -> None:
    import io

    from rich.console import Console

    rundir = tmp_path / "r"

    def execute(self: run.Runner) -> None:
        self.prepare()
        (rundir / "results").mkdir(parents=True, exist_ok=True)
        (rundir / "results" / "base.json").write_text("{}")
        raise error

    monkeypatch.setattr(run.Runner, "execute", execute)
    args = cli.parser().parse_args(["run", str(exp_file(tmp_path)), "--out", str(rundir)])
    args.argv = ["run", "--out", str(rundir)]
    out = io.StringIO()
    with pytest.raises(type(error)):
        run.main(cli._run_request(args), Console(file=out, width=200))
    assert ("finish with: korch run --resume" in out.getvalue()) == hint


def test_a_boot_that_times_out_is_booted_once_more(monkeypatch, tmp_path: Path) -> None:
    # under TCG on a loaded host a boot can stall for a minute where every vCPU must meet;
    # the same kernel boots in seconds the next time, and the stalled boot measured nothing
    plan = plan_of(("base", "cand"), blocks=2, seed=7)
    bench = Bench(monkeypatch, tmp_path, plan)
    bench.timeouts = {plans.boot_id("cand", 1): 1}
    results = bench.run()
    cand = results["cand"]
    assert cand.status == "complete" and len(cand.runs) == 2 * plan.runs
    tries = [b for b in cand.boots if b["id"] == "cand-1"]
    assert [(b["attempt"], b.get("error")) for b in tries] == [(1, "timed out"), (2, None)]
    # a kernel that really does not boot fails the second attempt too: the run stops
    bench = Bench(monkeypatch, tmp_path / "again", plan)
    bench.timeouts = {plans.boot_id("cand", 1): 2}
    with pytest.raises(BootTimeout):
        bench.run()


def _stall(starved: str | None) -> GuestError:
    return GuestError(
        "guest RCU stall (console line 9): rcu: INFO: rcu_preempt detected stalls",
        kind="rcu-stall",
        line="rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        console_tail="",
        host_starved=starved,
    )


STARVED = "All QSes seen, last rcu_preempt kthread activity 27311 (4294960000-4294932689)"


def test_an_rcu_stall_from_a_starving_host_is_booted_once_more(monkeypatch, tmp_path: Path) -> None:
    # with two other guests and both cores busy, the host left a guest's vCPUs unscheduled
    # past the 21 s stall timeout: the stall report shows RCU's own kthread kept from running
    plan = plan_of(("base", "cand"), blocks=2, seed=7)
    bench = Bench(monkeypatch, tmp_path, plan)
    bench.failures = {plans.boot_id("base", 2): [_stall(STARVED)]}
    results = bench.run()
    base = results["base"]
    assert base.status == "complete" and len(base.runs) == 2 * plan.runs
    assert [b["attempt"] for b in base.boots if b["id"] == "base-2"] == [1, 2]
    assert [b for b, n, _ in bench.boots if b == "base" and n == 2] == ["base", "base"]
    # it happens again on the second boot: the run stops, with the guest's exit code
    bench = Bench(monkeypatch, tmp_path / "twice", plan)
    bench.failures = {plans.boot_id("base", 2): [_stall(STARVED), _stall(STARVED)]}
    with pytest.raises(GuestError) as info:
        bench.run()
    assert info.value.exit_code == EXIT_GUEST


def test_an_rcu_stall_of_the_kernel_itself_stops_the_run(monkeypatch, tmp_path: Path) -> None:
    # a CPU stuck in the kernel under test: no second boot, the run stops at once
    plan = plan_of(("base", "cand"), blocks=2, seed=7)
    bench = Bench(monkeypatch, tmp_path, plan)
    bench.failures = {plans.boot_id("cand", 1): [_stall(None)]}
    with pytest.raises(GuestError):
        bench.run()
    assert [b for b, n, _ in bench.boots if b == "cand"] == ["cand"]  # no second boot
    saved = json.loads((tmp_path / "run" / "results" / "cand.json").read_text())
    assert [b["attempt"] for b in saved["boots"] if b["id"] == "cand-1"] == [1]


def test_host_trouble_names_what_is_worth_one_more_boot() -> None:
    assert run.host_trouble(BootTimeout("did not reach its ready marker within 60 s\nconsole"))
    assert "All QSes seen" in (run.host_trouble(_stall(STARVED)) or "")
    assert run.host_trouble(_stall(None)) is None
    assert run.host_trouble(UserError("bad")) is None
