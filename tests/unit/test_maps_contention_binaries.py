"""Compiling the guest programs (real gcc) and running them on the host."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator import process
from orchestrator.errors import CommandError
from orchestrator.workloads.maps_contention import binaries, compile_workload, parse_result

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return compile_workload(tmp_path_factory.getbasetemp() / "korch-cache")


def test_compiles_three_static_programs(programs: dict[str, Path]) -> None:
    assert set(programs) == {"maps-mapper", "maps-scanner", "maps-busywait"}
    for path in programs.values():
        assert os.access(path, os.X_OK)
        # static: no program interpreter, so the guest needs no shared libraries
        assert b"ld-linux" not in path.read_bytes()[:4096]
    metadata = json.loads((next(iter(programs.values())).parent / "metadata.json").read_text())
    assert "gcc" in metadata["inputs"]["gcc_version"].lower()
    assert metadata["inputs"]["cflags"] == list(binaries.CFLAGS)


def test_second_call_compiles_nothing(
    programs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object) -> list[str]:
        raise AssertionError("compiled again")

    monkeypatch.setattr(binaries, "_compile_one", refuse)
    assert compile_workload(tmp_path_factory.getbasetemp() / "korch-cache") == programs


def test_compiler_error_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "c"
    shutil.copytree(binaries.SOURCE_DIR, sources)
    (sources / "scanner.c").write_text("int main(void) { return undeclared_thing; }\n")
    monkeypatch.setattr(binaries, "SOURCE_DIR", sources)
    with pytest.raises(CommandError) as info:
        compile_workload(tmp_path / "cache")
    text = str(info.value)
    assert "maps-scanner" in text and "scanner.c" in text
    assert "undeclared_thing" in text  # gcc's own message is quoted
    # nothing half-built is left in the cache
    assert not any(p.name == "maps-scanner" for p in (tmp_path / "cache").rglob("*"))


def test_mapper_runs_on_the_host(programs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    process.run(
        [str(programs["maps-mapper"]), "--duration-s", "1", "--region-mb", "8", "--seed", "3"],
        stdout_file=out,
        timeout=30,
    )
    record = parse_result(out.read_text(), "host mapper")
    assert record.maps > 0 and record.unmaps > 0
    assert record.max_ms >= record.mean_ms > 0
    assert record.map.hist.count == record.maps
    assert record.unmap.hist.count == record.unmaps
    assert record.region_mb == 8 and record.seed == 3 and record.cpu == -1
    # it ran its second and stopped; on a busy host the end can come late, so the upper
    # bound is the command's own timeout, not a guess at the host's load
    assert 1.0 <= record.elapsed_s < 30


@pytest.mark.parametrize(
    ("program", "args", "message"),
    [
        ("maps-mapper", ["--duration-s", "1", "--region-mb", "3"], "not a power of two"),
        ("maps-mapper", ["--duration-s", "0", "--region-mb", "4"], "out of range"),
        ("maps-mapper", ["--duration-s", "x", "--region-mb", "4"], "not a number"),
        ("maps-mapper", ["--region-mb", "4"], "--duration-s is required"),
        ("maps-mapper", ["--bogus"], "unrecognized option"),
        ("maps-scanner", [], "--pid is required"),
        ("maps-scanner", ["--pid", "1", "--file", "status"], "neither maps nor smaps"),
        ("maps-busywait", ["--pid", "1", "--busy-ms", "0"], "out of range"),
        ("maps-busywait", ["--pid", "1", "extra"], "unexpected argument"),
    ],
)
def test_usage_errors_exit_64(
    programs: dict[str, Path], program: str, args: list[str], message: str
) -> None:
    result = process.run([str(programs[program]), *args], check=False, timeout=10)
    assert result.returncode == 64
    assert message in result.output
    assert "usage:" in result.output


def test_pinning_to_a_missing_cpu_fails_clearly(programs: dict[str, Path]) -> None:
    result = process.run(
        [str(programs["maps-scanner"]), "--pid", "1", "--cpu", "4095"], check=False, timeout=10
    )
    assert result.returncode == 70
    assert "cannot pin to CPU 4095" in result.output


def test_helpers_exit_when_the_target_is_gone(programs: dict[str, Path]) -> None:
    # PID 2^22 + 1 exceeds the kernel's PID limit, so it names no process
    for program in ("maps-scanner", "maps-busywait"):
        result = process.run([str(programs[program]), "--pid", "4194305"], timeout=10)
        assert result.output.strip() == "0"
