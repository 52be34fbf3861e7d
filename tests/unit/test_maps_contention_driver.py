"""The driver: CPU placement, command lines, the run script, and real runs on the host."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.errors import ConfigError, SSHTimeout, UserError, WorkloadError
from orchestrator.workloads.fake import FakeRemote
from orchestrator.workloads.maps_contention import (
    Params,
    Placement,
    RunOutcome,
    Timing,
    compile_workload,
    parse_result,
    placement,
    run_script,
    run_workload,
)
from orchestrator.workloads.maps_contention.driver import (
    BUSYWAIT,
    MAPPER_PID,
    busywait_argv,
    cleanup_script,
    mapper_argv,
    parse_cpu_list,
    parse_script_output,
    scanner_argv,
)

SHORT = Timing(settle_s=0.2, hang_grace_s=1.0, helper_grace_s=1.0, ready_timeout_s=10.0)


def test_placement_four_and_more_is_the_method() -> None:
    for vcpus in (4, 8):
        assert placement(vcpus) == Placement(0, (2, 3), (2, 3), True, "the method's layout")


def test_placement_with_fewer_cpus_says_so() -> None:
    two = placement(2)
    assert (two.mapper_cpu, two.scanner_cpus, two.busy_cpus) == (0, (1, 1), (1, 1))
    assert not two.matches_method and "CPU 1" in two.note
    one = placement(1)
    assert (one.mapper_cpu, one.scanner_cpus, one.busy_cpus) == (0, (0, 0), (0, 0))
    assert not one.matches_method and "not comparable" in one.note
    three = placement(3)
    assert three.scanner_cpus == (1, 2) and not three.matches_method
    assert placement(8).cpus == frozenset({0, 2, 3})
    with pytest.raises(UserError):
        placement(0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region_mb": 100}, "not a power of two"),
        ({"region_mb": 0}, "outside"),
        ({"runs": 0}, "runs 0 is outside"),
        ({"duration_s": 0}, "duration_s 0 is outside"),
        ({"duration_s": "10"}, "must be a number"),
        ({"busy_ms": 2.5}, "must be a whole number"),
        ({"procfile": "status"}, "not one of maps, smaps"),
        ({"vcpus": True}, "must be a whole number"),
    ],
)
def test_params_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Params(**change)  # type: ignore[arg-type]


def test_params_report_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        Params(runs=0, region_mb=3)
    assert len(info.value.problems) == 2


def test_command_lines() -> None:
    params = Params(duration_s=10, region_mb=128, busy_ms=2)
    assert mapper_argv("/b", params, 0, 7, "/w", 91.0) == [
        "/b/maps-mapper",
        "--duration-s",
        "10",
        "--region-mb",
        "128",
        "--gate",
        "/w/gate",
        "--ready",
        "/w/ready",
        "--gate-timeout-s",
        "91",
        "--seed",
        "7",
        "--cpu",
        "0",
    ]
    assert mapper_argv("/b", Params(duration_s=2.5), 0, 1, "/w", 1)[2] == "2.5"
    assert scanner_argv("/b", "42", "smaps", 3) == [
        "/b/maps-scanner",
        "--pid",
        "42",
        "--file",
        "smaps",
        "--cpu",
        "3",
        "--nice",
        "15",
    ]
    assert busywait_argv("/b", "42", 4, 2) == [
        "/b/maps-busywait",
        "--pid",
        "42",
        "--busy-ms",
        "4",
        "--sleep-ms",
        "1",
        "--cpu",
        "2",
    ]


def test_script_is_pure_and_follows_the_method() -> None:
    params = Params(duration_s=10, busy_ms=2, procfile="smaps")
    script = run_script(params, placement(4), seed=5, bin_dir="/b", work_dir="/w/run-0")
    assert script == run_script(params, placement(4), seed=5, bin_dir="/b", work_dir="/w/run-0")
    assert '/b/maps-scanner --pid "$m" --file smaps --cpu 2 --nice 15' in script
    assert '/b/maps-scanner --pid "$m" --file smaps --cpu 3 --nice 15' in script
    assert '/b/maps-busywait --pid "$m" --busy-ms 2 --sleep-ms 1 --cpu 3' in script
    assert "--seed 5 --cpu 0" in script
    # order: mapper, scanners, settle 1 s, busy waiters, open the gate, then the 5 s watchdog
    order = [
        script.index("maps-mapper"),
        script.index("maps-scanner"),
        script.index("sleep 1\n"),
        script.index("maps-busywait"),
        script.index('rm -f "$d/gate"'),
        script.index('watchdog 15 "$d/hang"'),
    ]
    assert order == sorted(order)
    assert re.search(r"@\w+@", script) is None and MAPPER_PID not in script


def test_script_quotes_odd_paths() -> None:
    script = run_script(Params(), placement(4), seed=1, bin_dir="/my bin", work_dir="/w x/r")
    assert "d='/w x/r'" in script
    assert "'/my bin/maps-mapper'" in script


@pytest.mark.parametrize("shell", [["sh", "-n", "-c"], ["busybox", "sh", "-n", "-c"]])
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_script_syntax(shell: list[str], vcpus: int) -> None:
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} is not installed")
    script = run_script(Params(vcpus=vcpus), placement(vcpus), seed=1, bin_dir="/b", work_dir="/w")
    process.run([*shell, script], timeout=10)


def test_parse_script_output() -> None:
    out = (
        "korch-status mapper_rc=0 hang=0 helpers_killed=0 scanner_rc=0,0 busy_rc=0,0"
        " scanner_passes=12,,13 busy_periods=3,4\n"
        '{"schema":1}\n'
    )
    status = parse_script_output(out, "run 1")
    assert status.mapper_rc == 0 and not status.hang and not status.helpers_killed
    assert status.scanner_passes == (12, None, 13)
    assert status.busy_periods == (3, 4)
    assert status.mapper_output == '{"schema":1}'
    with pytest.raises(WorkloadError, match="no status line"):
        parse_script_output("sh: oops\n", "run 1")
    with pytest.raises(WorkloadError, match="lacks 'hang'"):
        parse_script_output("korch-status mapper_rc=0\n", "run 1")
    with pytest.raises(WorkloadError, match="malformed"):
        parse_script_output(out.replace("mapper_rc=0", "mapper_rc=x"), "run 1")
    with pytest.raises(WorkloadError, match="malformed"):
        parse_script_output(out.replace("busy_periods=3,4", "busy_periods=3,\u00b2"), "run 1")
    with pytest.raises(WorkloadError, match="not one number"):
        parse_script_output(out.replace("mapper_rc=0", "mapper_rc=0,1"), "run 1")


def test_parse_cpu_list_and_cleanup() -> None:
    assert parse_cpu_list("0-3,6\n") == frozenset({0, 1, 2, 3, 6})
    assert parse_cpu_list("0") == frozenset({0})
    with pytest.raises(ValueError):
        parse_cpu_list("zero")
    assert "kill -9 $(cat /w/pids)" in cleanup_script("/w")


# Real runs on the host through FakeRemote.


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    return compile_workload(tmp_path_factory.getbasetemp() / "korch-cache")


def guest_shell() -> tuple[str, ...]:
    """The guest's busybox ash if the host has it, else the host's sh."""
    return ("busybox", "sh", "-c") if shutil.which("busybox") else ("sh", "-c")


def host_vcpus() -> int:
    return min(4, len(os.sched_getaffinity(0)))


def leftovers(marker: Path) -> list[str]:
    """Processes whose command line mentions ``marker`` (the test's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_end_to_end_on_the_host(programs: dict[str, Path], tmp_path: Path) -> None:
    seen: list[RunOutcome] = []
    params = Params(runs=1, duration_s=2, region_mb=8, vcpus=host_vcpus(), seed=11)
    result = run_workload(
        FakeRemote(guest_shell()),
        params,
        binaries=programs,
        guest_dir=str(tmp_path / "guest"),
        on_run=seen.append,
    )
    assert result.placement == placement(params.vcpus)
    assert result.hangs == 0 and len(result.runs) == 1 and seen == list(result.runs)
    run = result.runs[0]
    assert run.seed == 11 and not run.hang
    record = run.record
    assert record is not None
    assert record.maps > 0 and record.unmaps > 0
    assert record.max_ms >= record.mean_ms > 0
    assert record.map.hist.count + record.unmap.hist.count == record.operations
    assert record.seed == 11 and record.cpu == 0
    # it ran its 2 s and stopped before the driver would call it hung; how late it stops
    # on a busy host is the host's business (seen: 4.2 s with both cores loaded)
    assert 2.0 <= record.elapsed_s < params.duration_s + Timing().hang_grace_s
    assert len(run.scanner_passes) == 2 and all(p and p > 0 for p in run.scanner_passes)
    assert len(run.busy_periods) == 2 and all(p and p > 0 for p in run.busy_periods)
    # the results file's record is the mapper line again
    record_json = result.to_json()["runs"][0]["record"]
    assert parse_result(json.dumps(record_json), "saved") == record
    assert not (tmp_path / "guest" / "run-0").exists()
    assert leftovers(tmp_path) == []


def test_the_timed_window_waits_for_busy_waiters_slow_to_start(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    # A loaded host can hold a new process between fork and exec for seconds (seen once in
    # a full-suite run beside two guests and two busy loops: both busy waiters counted 0
    # periods). A busy waiter that reaches its own program 2.5 s late stands in for it: the
    # gate must stay shut until it runs, so it spins through the mapper's whole window.
    slow = tmp_path / "slow" / BUSYWAIT
    slow.parent.mkdir()
    slow.write_text(f'#!/bin/sh\nsleep 2.5\nexec {programs[BUSYWAIT]} "$@"\n')
    slow.chmod(0o755)
    params = Params(runs=1, duration_s=1, region_mb=8, vcpus=host_vcpus(), seed=5)
    result = run_workload(
        FakeRemote(guest_shell()),
        params,
        binaries={**programs, BUSYWAIT: slow},
        guest_dir=str(tmp_path / "guest"),
    )
    (run,) = result.runs
    assert not run.hang and run.record is not None
    # 1 s of 2 ms spins and 1 ms sleeps is some 300 periods; before the wait it was 0
    assert len(run.busy_periods) == 2 and all(p and p >= 20 for p in run.busy_periods), run
    assert leftovers(tmp_path) == []


def fake_bin(tmp_path: Path, programs: dict[str, Path], mapper_body: str) -> Path:
    """A program directory with the real helpers and a shell script standing in for the mapper."""
    bin_dir = tmp_path / "guest" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("maps-scanner", "maps-busywait"):
        shutil.copy(programs[name], bin_dir / name)
    mapper = bin_dir / "maps-mapper"
    mapper.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --ready ] && : > "$2"; shift; done\n' + mapper_body
    )
    mapper.chmod(mapper.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_a_mapper_that_outlives_its_deadline_is_a_hang(
    programs: dict[str, Path], tmp_path: Path
) -> None:
    fake_bin(tmp_path, programs, "exec sleep 60\n")
    params = Params(runs=2, duration_s=0.5, vcpus=host_vcpus())
    result = run_workload(
        FakeRemote(guest_shell()), params, guest_dir=str(tmp_path / "guest"), timing=SHORT
    )
    assert result.hangs == 2
    assert all(r.record is None and "killed" in r.note for r in result.runs)
    assert leftovers(tmp_path) == []


def test_a_failing_mapper_is_a_workload_error(programs: dict[str, Path], tmp_path: Path) -> None:
    fake_bin(tmp_path, programs, 'echo "maps-mapper: mmap of one page failed" >&2\nexit 70\n')
    with pytest.raises(WorkloadError) as info:
        run_workload(
            FakeRemote(guest_shell()),
            Params(runs=1, duration_s=0.5, vcpus=host_vcpus()),
            guest_dir=str(tmp_path / "guest"),
            timing=SHORT,
        )
    assert "run 1/1: the mapper exited with 70" in str(info.value)
    assert "mmap of one page failed" in str(info.value)


def test_mapper_garbage_is_a_workload_error(programs: dict[str, Path], tmp_path: Path) -> None:
    fake_bin(tmp_path, programs, "echo 'half a line {\"schema\":1,'\n")
    with pytest.raises(WorkloadError, match="mapper result") as info:
        run_workload(
            FakeRemote(guest_shell()),
            Params(runs=1, duration_s=0.5, vcpus=host_vcpus()),
            guest_dir=str(tmp_path / "guest"),
            timing=SHORT,
        )
    assert "half a line" in str(info.value)


class StuckGuest(FakeRemote):
    """The run script never returns (a process that SIGKILL cannot end)."""

    def run(self, cmd: str, timeout: float) -> tuple[int, str, str]:
        if "korch-status" in cmd:
            self.commands.append(cmd)
            raise SSHTimeout(f"timed out after {timeout} s")
        return super().run(cmd, timeout)


def test_an_unkillable_run_is_a_hang_and_cleaned_up(tmp_path: Path) -> None:
    remote = StuckGuest()
    result = run_workload(remote, Params(runs=1, vcpus=1), guest_dir=str(tmp_path), timing=SHORT)
    assert result.hangs == 1 and result.runs[0].record is None
    assert "did not finish" in result.runs[0].note
    assert remote.commands[-1] == cleanup_script(f"{tmp_path}/run-0")


class OneCpuGuest(FakeRemote):
    def run(self, cmd: str, timeout: float) -> tuple[int, str, str]:
        if "cpu/online" in cmd:
            return 0, "0\n", ""
        return super().run(cmd, timeout)


def test_too_few_guest_cpus_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="needs CPU 2, 3"):
        run_workload(OneCpuGuest(), Params(vcpus=4), guest_dir=str(tmp_path))
