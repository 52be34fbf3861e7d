"""The kselftest workload: its tests are read like checks, built with the checks (the
experiment's selftests), run per run on the host through the fake remote; a boot keeps the
worst result of its runs for the correctness gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError, WorkloadError
from orchestrator.workloads.api import Outcome, Session
from orchestrator.workloads.fake import FakeRemote
from orchestrator.workloads.kselftest.workload import WORKLOAD

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


def load(tmp_path: Path, text: str) -> config.Experiment:
    f = tmp_path / "exp.yaml"
    f.write_text(text)
    return config.load(f)


def test_the_tests_are_selftests_built_with_the_checks(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        HEAD + "workload:\n  name: kselftest\n  tests:\n    - proc/proc-pid-vm\n"
        "    - {test: proc/proc-maps-race, env: {DURATION: 1}, timeout_s: 90}\n"
        "checks: [proc/proc-pid-vm, mm/soft-dirty]\n",
    )
    assert exp.workload.headline is None
    assert [t.test for t in exp.selftests] == [
        "proc/proc-pid-vm",
        "mm/soft-dirty",
        "proc/proc-maps-race",
    ]
    keys = [m.key for m in WORKLOAD.metrics({"tests": exp.workload.params["tests"]})]
    assert keys == ["seconds", "failed_tests"]
    assert WORKLOAD.default_headline(exp.workload.params) == "seconds"
    assert [m.discrete for m in WORKLOAD.metrics(exp.workload.params)] == [False, True]


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ("workload: {name: kselftest}\n", ":11: workload.tests: required key is missing"),
        ("workload: {name: kselftest, tests: []}\n", ":11: workload.tests: needs at least one"),
        ("workload: {name: kselftest, tests: [../x]}\n", ":11: workload.tests[0]: expected"),
        ("workload: {name: kselftest, tests: [proc/a, proc/a]}\n",
         ":11: workload.tests[1]: proc/a is listed twice"),
    ],
)  # fmt: skip
def test_kselftest_keys_are_checked_with_file_and_line(
    tmp_path: Path, workload: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, HEAD + workload)
    assert any(expected in p for p in info.value.problems), info.value.problems


def _program(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / "built" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def _session(
    tmp_path: Path, programs: dict[str, Path], runs: int
) -> tuple[Session, list[Any], dict[str, Any]]:
    outcomes: list[Outcome] = []
    gate: dict[str, Any] = {}
    params = {"tests": [{"test": t, "timeout_s": 30} for t in programs]}
    session = Session(
        remote=FakeRemote(),
        params=params,
        runs=runs,
        first_index=0,
        duration_s=1,
        vcpus=2,
        seed=1,
        guest_dir=str(tmp_path / "guest"),
        on_run=outcomes.append,
        selftests=programs,
        save_dir=tmp_path / "boot",
        on_check=lambda test, result: gate.__setitem__(test, result.status),
    )
    return session, outcomes, gate


def test_runs_record_time_and_failures_and_the_boot_keeps_the_worst(tmp_path: Path) -> None:
    state = tmp_path / "ran-once"
    flaky = _program(
        tmp_path,
        "flaky",
        f"if [ -e {state} ]; then echo 'not ok 1 torn read'; exit 1; fi\n"
        f"touch {state}; echo 'ok 1 torn read'\n",
    )
    steady = _program(tmp_path, "steady", "echo '1..1'; echo 'ok 1 fine'\n")
    session, outcomes, gate = _session(tmp_path, {"proc/flaky": flaky, "proc/steady": steady}, 2)
    WORKLOAD.run(session)
    records = [o.record for o in outcomes]
    assert [r["failed_tests"] for r in records if r] == [0, 1]
    assert [r["tests"] for r in records if r] == [
        {"proc/flaky": "pass", "proc/steady": "pass"},
        {"proc/flaky": "fail", "proc/steady": "pass"},
    ]
    assert all(r is not None and r["seconds"] >= 0 for r in records)
    # the gate sees the boot's worst result: one failing run fails the boot
    assert gate == {"proc/flaky": "fail", "proc/steady": "pass"}
    assert "not ok 1 torn read" in (tmp_path / "boot/kselftest/run-2/proc-flaky.log").read_text()
    values = WORKLOAD.extract([r for r in records if r], ["run 1", "run 2"]).values
    assert list(values["failed_tests"]) == [0.0, 1.0]


def test_a_test_not_built_for_the_kernel_is_an_error(tmp_path: Path) -> None:
    session, outcomes, _ = _session(tmp_path, {}, 1)
    session = Session(**{**session.__dict__, "params": {"tests": [{"test": "proc/x"}]}})
    with pytest.raises(WorkloadError) as info:
        WORKLOAD.run(session)
    assert "proc/x was not built for this kernel" in info.value.message and outcomes == []
