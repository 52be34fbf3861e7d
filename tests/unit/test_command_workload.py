"""The command workload: its keys checked with file and line, metrics read from JSON lines
and regular expressions, runs on the host through the fake remote (hang, failure, missing
metric), and a comparison and every report of its results without maps-contention's
columns."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator import config
from orchestrator.errors import ConfigError, UserError, WorkloadError
from orchestrator.report import ReportOptions, write_reports
from orchestrator.report.synthetic import provenance
from orchestrator.results import ResultsFile
from orchestrator.stats import Verdict, compare
from orchestrator.workloads.api import Outcome, Session
from orchestrator.workloads.command.workload import WORKLOAD, build_metric, read_metrics
from orchestrator.workloads.fake import FakeRemote

HEAD = """\
schema: 1
name: demo
kernel:
  source: {tarball: linux.tar.xz}
  kconfig: [tinyconfig, qemu-guest]
variants:
  - name: base
  - name: cand
baseline: base
vm: {cpus: 2, memory: 512M, accel: tcg}
"""

WORKLOAD_OK = """\
workload:
  name: command
  runs: 2
  blocks: 4
  run: ./bench --loops 10
  files: [bench]
  timeout_s: 30
  env: {LOOPS: 10}
  metrics:
    read_us: {unit: us, kind: latency}
    reads_per_s: {unit: reads/s, kind: throughput, regex: 'reads per second: ([0-9.]+)'}
    errors: {unit: errors, kind: count, json: errs}
  headline: reads_per_s
"""


def load(tmp_path: Path, text: str) -> config.Experiment:
    (tmp_path / "bench").write_text("#!/bin/sh\n")
    f = tmp_path / "exp.yaml"
    f.write_text(text)
    return config.load(f)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_a_command_experiment_is_read_with_its_metrics(tmp_path: Path) -> None:
    exp = load(tmp_path, HEAD + WORKLOAD_OK)
    w = exp.workload
    assert w.name == "command" and w.runs == 2 and w.blocks == 4
    assert w.headline == "reads_per_s"
    assert w.params["run"] == "./bench --loops 10"
    assert w.params["files"] == [str((tmp_path / "bench").resolve())]
    assert w.params["env"] == {"LOOPS": "10"}
    metrics = {m.key: m for m in WORKLOAD.metrics(w.params)}
    assert list(metrics) == ["read_us", "reads_per_s", "errors"]
    assert metrics["read_us"].better == "lower" and metrics["read_us"].worst() == 30e6
    assert metrics["reads_per_s"].better == "higher" and metrics["reads_per_s"].worst() == 0
    assert metrics["errors"].kind == "count" and metrics["errors"].log_offset == 1.0
    # the files land where the command runs
    files = WORKLOAD.guest_files(w.params, None, "/opt/korch")
    assert files == {"/opt/korch/command/bench": (tmp_path / "bench").resolve()}


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ("workload: {name: command, metrics: {x: {unit: s}}}\n",
         ":11: workload.run: required key is missing"),
        ("workload: {name: command, run: x}\n", ":11: workload.metrics: required key is missing"),
        ("workload:\n  name: command\n  run: x\n  metrics: {x: {unit: s, regex: '(a'}}\n",
         ":14: workload.metrics.x.regex: not a regular expression"),
        ("workload:\n  name: command\n  run: x\n  metrics: {x: {unit: s, regex: '(a)(b)'}}\n",
         ":14: workload.metrics.x.regex: needs a group named x, (?P<x>...), or exactly one group"),
        ("workload:\n  name: command\n  run: x\n  metrics: {x: {unit: s, kind: speed}}\n",
         ":14: workload.metrics.x.kind: must be one of latency, share, throughput, count,"
         " pass/fail (got 'speed')"),
        ("workload:\n  name: command\n  run: x\n  metrics: {x: {kind: count}}\n",
         ":14: workload.metrics.x.unit: required key is missing"),
        ("workload:\n  name: command\n  run: x\n  metrics: {Bad-Name: {unit: s}}\n",
         ":14: workload.metrics.Bad-Name: a metric's name is lower case"),
        ("workload:\n  name: command\n  run: x\n  files: [nowhere]\n  metrics: {x: {unit: s}}\n",
         ":14: workload.files[0]: "),
        ("workload:\n  name: command\n  run: x\n  metrics: {x: {unit: s}}\n  headline: y\n",
         ":15: workload.headline: must be a metric command reports: x, hang_rate (got 'y')"),
        ("workload:\n  name: command\n  run: x\n  region_mb: 64\n  metrics: {x: {unit: s}}\n",
         ":14: workload.region_mb: unknown key"),
        ("workload: {name: fio}\n",
         ":11: workload.name: must be one of maps-contention, command, kselftest (got 'fio')"),
    ],
)  # fmt: skip
def test_command_keys_are_checked_with_file_and_line(
    tmp_path: Path, workload: str, expected: str
) -> None:
    found = problems(tmp_path, HEAD + workload)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "exp.yaml")) for p in found)


def test_a_matrix_may_not_vary_what_a_command_lacks(tmp_path: Path) -> None:
    text = HEAD + WORKLOAD_OK + "matrix:\n  workload: {procfile: [maps, smaps]}\n"
    (p,) = problems(tmp_path, text)
    assert "matrix.workload: unknown key" in p or "matrix.workload.procfile: unknown key" in p


SPECS: dict[str, dict[str, Any]] = {
    "read_us": {"unit": "us"},
    "reads_per_s": {"unit": "reads/s", "kind": "throughput", "regex": r"reads per second: (\S+)"},
    "ok": {"unit": "", "kind": "pass/fail", "json": "passed"},
}


def test_metrics_come_from_json_lines_and_regexes_the_last_one_counting() -> None:
    out = (
        'warming up\n{"read_us": 9.0}\n{"read_us": 4.5, "passed": true}\n'
        "reads per second: 100\nreads per second: 222.5\n{not json}\n"
    )
    values, missing = read_metrics(out, SPECS)
    assert values == {"read_us": 4.5, "reads_per_s": 222.5, "ok": 0.0} and missing == []
    values, missing = read_metrics('{"passed": false}\n', SPECS)
    assert values == {"ok": 1000.0} and missing == ["read_us", "reads_per_s"]
    named = {"x": {"unit": "s", "regex": r"took (?P<x>[0-9.]+) s, (\d+) tries"}}
    assert read_metrics("took 1.25 s, 3 tries", named) == ({"x": 1.25}, [])


def test_a_pass_fail_metric_counts_failures_per_mille() -> None:
    m = build_metric("ok", {"unit": "", "kind": "pass/fail"}, 60)
    assert m.unit == "‰ failed" and m.better == "lower" and m.worst() == 1000.0


def _session(
    tmp_path: Path, params: dict[str, Any], runs: int = 2
) -> tuple[Session, list[Outcome]]:
    got: list[Outcome] = []
    guest = tmp_path / "guest"
    (guest / "command").mkdir(parents=True, exist_ok=True)
    for host, where in WORKLOAD.guest_files(params, None, str(guest)).items():
        shutil.copy(where, host)
    return (
        Session(
            remote=FakeRemote(),
            params=params,
            runs=runs,
            first_index=3,
            duration_s=5,
            vcpus=2,
            seed=7,
            guest_dir=str(guest),
            on_run=got.append,
            save_dir=tmp_path / "boot",
        ),
        got,
    )


def _params(tmp_path: Path, script: str, timeout_s: float = 30) -> dict[str, Any]:
    bench = tmp_path / "bench"
    bench.write_text("#!/bin/sh\n" + script)
    bench.chmod(0o755)
    return {
        "run": "./bench",
        "files": [str(bench)],
        "timeout_s": timeout_s,
        "env": {"GREETING": "hello world"},
        "metrics": {"read_us": {"unit": "us"}, "seed": {"unit": "", "kind": "count"}},
    }


def test_runs_give_records_with_the_run_seed_and_env(tmp_path: Path) -> None:
    params = _params(
        tmp_path,
        'echo "{\\"read_us\\": $KORCH_RUN.5, \\"seed\\": $KORCH_SEED}"; echo "$GREETING" >&2\n',
    )
    session, got = _session(tmp_path, params)
    WORKLOAD.run(session)
    assert [o.index for o in got] == [3, 4] and [o.seed for o in got] == [7, 8]
    assert [o.record["metrics"] for o in got if o.record] == [
        {"read_us": 3.5, "seed": 7.0},
        {"read_us": 4.5, "seed": 8.0},
    ]
    assert not any(o.hang for o in got)
    kept = (tmp_path / "boot" / "command" / "run-4.out").read_text()
    assert "hello world" in kept and '"read_us": 3.5' in kept


def _left(tmp_path: Path) -> list[str]:
    """Processes still working in the fake guest's command directory."""
    from tests.faults import processes_of

    return list(processes_of(tmp_path / "guest").values())


@pytest.fixture
def guest_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's busybox applets first on PATH (its timeout kills only the process it
    started, where coreutils' kills the whole group), and busybox's shell."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (the README's system packages have it)")
    tools = tmp_path / "applets"
    tools.mkdir()
    for name in ("env", "setsid", "sleep", "timeout", "sh", "cat", "rm", "mkdir"):
        (tools / name).symlink_to(busybox)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")


@pytest.mark.usefixtures("guest_tools")
def test_a_command_past_its_timeout_is_a_hung_run_and_all_of_it_is_killed(
    tmp_path: Path,
) -> None:
    # the benchmark's own children must not outlive the run into the next one
    params = _params(tmp_path, "sleep 30 & sleep 30\n", timeout_s=1)
    session, got = _session(tmp_path, params, runs=1)
    session = Session(**{**session.__dict__, "remote": FakeRemote(("busybox", "sh", "-c"))})
    WORKLOAD.run(session)
    (o,) = got
    assert o.hang and o.record is None and "after 1 s" in o.note
    assert _left(tmp_path) == []


def test_what_a_finished_command_left_running_is_killed(tmp_path: Path) -> None:
    params = _params(tmp_path, 'sleep 30 >/dev/null 2>&1 &\necho \'{"read_us": 1, "seed": 2}\'\n')
    session, got = _session(tmp_path, params, runs=1)
    WORKLOAD.run(session)
    assert [o.record["metrics"] for o in got if o.record] == [{"read_us": 1.0, "seed": 2.0}]
    assert _left(tmp_path) == []


def test_a_failing_command_is_an_error_naming_the_run(tmp_path: Path) -> None:
    params = _params(tmp_path, "echo 'no such device' >&2; exit 3\n")
    session, got = _session(tmp_path, params)
    with pytest.raises(WorkloadError) as info:
        WORKLOAD.run(session)
    assert "command run 4 ('./bench'): the command exited with 3" in info.value.message
    assert "no such device" in info.value.message and got == []


def test_output_without_a_metric_is_an_error_that_says_what_to_print(tmp_path: Path) -> None:
    params = _params(tmp_path, 'echo "{\\"read_us\\": 1}"\n')
    session, _ = _session(tmp_path, params)
    with pytest.raises(WorkloadError) as info:
        WORKLOAD.run(session)
    assert "its output gives no value for seed" in info.value.message
    assert '{"seed": 1.5}' in (info.value.hint or "")


def _results(variant: str, values: list[float], hung: int = 0) -> ResultsFile:
    work = {
        "name": "command", "runs": 1, "blocks": len(values), "duration_s": 10,
        "run": "./bench", "files": [], "timeout_s": 60.0, "env": {},
        "metrics": {"read_us": {"unit": "us", "digits": 2},
                    "reads_per_s": {"unit": "reads/s", "kind": "throughput"}},
        "headline": None, "smallest_effect_pct": 5.0,
    }  # fmt: skip
    rf = ResultsFile("demo", variant, "base", provenance=provenance(variant, workload=work))
    for b, v in enumerate(values, start=1):
        boot = f"{variant}-{b}"
        rf.boots.append({"id": boot, "attempt": 1, "block": b})
        record = {"metrics": {"read_us": v, "reads_per_s": 1e6 / v}, "seconds": 1.0}
        rf.runs.append({"boot": boot, "block": b, "index": 0, "hang": b <= hung,
                        "record": None if b <= hung else record})  # fmt: skip
    return rf


def test_a_comparison_of_command_results_uses_the_declared_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = list(rng.lognormal(np.log(10.0), 0.05, 12))
    slower = [v * 1.5 for v in rng.lognormal(np.log(10.0), 0.05, 12)]
    comparison = compare([_results("base", base), _results("cand", slower, hung=1)])
    assert comparison.workload == "command"
    assert [m.key for m in comparison.metrics] == ["read_us", "reads_per_s", "hang_rate"]
    # no headline declared: the first metric the command reports
    assert comparison.headline == "read_us"
    (c,) = comparison.candidates
    assert c.verdict == Verdict.REGRESSED
    rate = c.metric("reads_per_s")
    assert rate is not None and rate.verdict == Verdict.REGRESSED and rate.ratio < 1
    # a hung run counts as the worst value: the timeout, in the metric's unit
    assert comparison.metric_def("read_us").worst() == 60e6
    assert math.isclose(comparison.summary("cand").hangs, 1)

    rundir = tmp_path / "r"
    rundir.mkdir()
    res = [_results("base", base), _results("cand", slower, hung=1)]
    write_reports(rundir, res, ReportOptions())
    md = (rundir / "summary.md").read_text()
    assert "read_us (us)" in md and "median read_us (us)" in md
    assert "maxima" not in md and "op p99" not in md
    data = json.loads((rundir / "comparison.json").read_text())
    assert data["workload"] == "command"
    assert data["metrics"]["reads_per_s"] == {
        "label": "reads_per_s", "unit": "reads/s", "better": "higher",
        "description": "per run, reads_per_s as the command printed it", "kind": "throughput",
    }  # fmt: skip
    page = (rundir / "report.html").read_text()
    assert "read_us (us)" in page and "Per-run maxima" not in page
    assert "read_us" in (rundir / "junit.xml").read_text()


def test_a_file_gone_since_the_plan_is_named_before_a_boot(tmp_path: Path) -> None:
    params = {"files": [str(tmp_path / "gone")], "metrics": {}}
    with pytest.raises(UserError) as info:
        WORKLOAD.guest_files(params, None, "/opt/korch")
    assert f"workload.files: {tmp_path / 'gone'} no longer exists" in info.value.message


def _judge(kind: str, base: list[float], cand: list[float]) -> Any:
    from orchestrator.stats.boots import BootValues
    from orchestrator.stats.verdicts import compare_metric, decide

    m = build_metric("x", {"unit": "", "kind": kind}, 60)
    blocks = np.arange(1, len(base) + 1)
    units = tuple(f"block {b}" for b in blocks)
    mc = compare_metric(
        m, "headline", BootValues(units, blocks, np.array(base)),
        BootValues(units, blocks, np.array(cand)), paired=True, level=0.05,
    )  # fmt: skip
    return decide(mc, 0.05)


def test_discrete_ties_never_make_two_sides_equivalent() -> None:
    # 16 blocks of one pass/fail run a side: two failures on each side, in other blocks;
    # the rank interval collapses to [0, 0] on the 12 tied blocks
    base = [1000.0, 1000.0] + [0.0] * 14
    cand = [0.0, 0.0, 1000.0, 1000.0] + [0.0] * 12
    mc = _judge("pass/fail", base, cand)
    assert (mc.ci_low, mc.ci_high) == (1.0, 1.0)
    assert mc.verdict == Verdict.INCONCLUSIVE and "12 of 16 blocks tie exactly" in mc.reason
    # the same numbers as a latency are continuous data that happen to tie: unchanged rule
    assert _judge("latency", base, cand).verdict == Verdict.EQUIVALENT
    # both sides passing in every block: nothing differs, and equivalent says so
    assert _judge("pass/fail", [0.0] * 16, [0.0] * 16).verdict == Verdict.EQUIVALENT


def test_a_block_hung_on_both_sides_ties_for_an_unbounded_metric() -> None:
    # a count's hung run is +inf (no finite worst): both sides of block 1 hung
    rng = np.random.default_rng(3)
    base = list(rng.lognormal(np.log(10.0), 0.1, 12))
    cand = [5 * v for v in rng.lognormal(np.log(10.0), 0.1, 12)]
    base[0] = cand[0] = math.inf
    mc = _judge("count", base, cand)
    assert mc.verdict == Verdict.REGRESSED, mc.reason
    assert mc.ratio is not None and 3 < mc.ratio < 7


def test_sides_whose_commands_report_other_metrics_compare_what_they_share() -> None:
    base = _results("base", [10.0] * 8)
    cand = _results("cand", [12.0] * 8)
    del cand.provenance["workload"]["metrics"]["reads_per_s"]
    for run in cand.runs:
        del run["record"]["metrics"]["reads_per_s"]
    comparison = compare([base, cand])
    (c,) = comparison.candidates
    assert [mc.metric for mc in c.metrics] == ["read_us", "hang_rate"]
    assert "'cand' does not measure reads_per_s, which the baseline does" in " ".join(
        comparison.warnings
    )
    # the experiments differ: korch says so instead of calling a verdict
    assert not comparison.comparable


def test_the_hang_rate_and_unpaired_discrete_values_are_never_equivalent_by_ties() -> None:
    from orchestrator.metrics import hang_rate
    from orchestrator.stats.boots import BootValues
    from orchestrator.stats.verdicts import compare_metric, decide

    def judge(m: Any, base: list[float], cand: list[float], paired: bool) -> Any:
        blocks = np.arange(1, len(base) + 1)
        units = tuple(f"b{b}" for b in blocks)
        mc = compare_metric(
            m, "exploratory", BootValues(units, blocks, np.array(base)),
            BootValues(units, blocks, np.array(cand)), paired=paired, level=0.05,
        )  # fmt: skip
        return decide(mc, 0.05)

    # one run a boot: a boot's hang rate is 0 or 1000 per mille; the candidate hung once
    hung = judge(hang_rate(), [0.0] * 12, [1000.0] + [0.0] * 11, paired=True)
    assert hung.verdict == Verdict.INCONCLUSIVE and "11 of 12 blocks tie" in hung.reason
    count = build_metric("x", {"unit": "", "kind": "count"}, 60)
    base, cand = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    loose = judge(count, base * 2, cand * 2, paired=False)
    assert loose.verdict == Verdict.INCONCLUSIVE and "pairs of boots tie" in loose.reason
    assert judge(hang_rate(), [0.0] * 12, [0.0] * 12, paired=True).verdict == Verdict.EQUIVALENT


def test_a_command_metric_named_max_ms_does_not_bring_the_maps_tables(tmp_path: Path) -> None:
    base, cand = _results("base", [10.0] * 8), _results("cand", [11.0] * 8)
    for r in (base, cand):
        specs = r.provenance["workload"]["metrics"]
        specs["max_ms"] = specs.pop("read_us")
        for run in r.runs:
            if run["record"]:
                run["record"]["metrics"]["max_ms"] = run["record"]["metrics"].pop("read_us")
    write_reports(tmp_path, [base, cand], ReportOptions())
    md = (tmp_path / "summary.md").read_text()
    assert "max_ms (us)" in md and "median of maxima" not in md and "op p99" not in md
    assert "Per-run maxima" not in (tmp_path / "report.html").read_text()


def test_a_comparison_without_an_estimate_says_why() -> None:
    # every block hung on exactly one side, each side at +inf: no finite difference at all
    mc = _judge("count", [math.inf, 1.0] * 4, [1.0, math.inf] * 4)
    assert mc.verdict == Verdict.INCONCLUSIVE and mc.reason
