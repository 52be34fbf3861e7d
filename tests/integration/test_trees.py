"""Other kernel trees: the shipped fragments on Linux 6.12 and 7.3, and a cross-tree run.

The default experiment's 7.2 is covered by test_build.py. Each tree here is a cold build
(minutes) the first time, then cached like any other. Linux 6.12 comes from Debian 13's
main suite (trixie), 7.3 from trixie-backports, both through the machine's apt sources.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import build
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK
from orchestrator.results import ResultsFile

# (package, suite, release prefix, fragment symbols the tree does not define)
TREES = [
    ("linux-source-6.12", "trixie", "6.12", []),
    ("linux-source-7.3", "trixie-backports", "7.3", ["CONFIG_PROC_SYSCTL"]),
]


def korch(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def experiment(path: Path, package: str, suite: str) -> Path:
    path.write_text(
        "schema: 1\n"
        f"name: tree-{package}\n"
        "kernel:\n"
        f"  source: {{debian: {package}, suite: {suite}}}\n"
        "  kconfig: [tinyconfig, qemu-guest, maps-contention]\n"
        "variants:\n"
        "  - name: stock\n"
        "vm: {cpus: 2, memory: 1G, accel: tcg}\n"
    )
    return path


@pytest.mark.parametrize(("package", "suite", "release", "undefined"), TREES)
def test_the_shipped_fragments_build_and_boot(
    package: str, suite: str, release: str, undefined: list[str], tmp_path: Path
) -> None:
    exp = experiment(tmp_path / "exp.yaml", package, suite)
    built = korch("build", str(exp), "--out", str(tmp_path / "run"))
    assert built.returncode == EXIT_OK, built.stderr[-3000:]
    for sym in undefined:
        assert f"does not define {sym} (from qemu-guest)" in built.stderr
    if not undefined:
        assert "does not define" not in built.stderr
    meta = json.loads((tmp_path / "run" / "build" / "stock" / "metadata.json").read_text())
    assert meta["kernel_release"].startswith(release)
    booted = korch(
        "boot", str(exp), "--workdir", str(tmp_path / "boot"), "--", "uname -r", timeout=600
    )
    assert booted.returncode == EXIT_OK, booted.stderr[-3000:]
    assert booted.stdout.strip() == meta["kernel_release"]


def test_a_cross_tree_run_end_to_end(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    # Linux 6.12 reads maps under mmap_lock (before the per-VMA series), 7.2 under per-VMA
    # locks: one experiment, two trees
    exp = tmp_path / "cross.yaml"
    exp.write_text(
        "schema: 1\n"
        "name: cross-tree\n"
        "kernel:\n"
        "  source: {debian: linux-source-7.2, suite: trixie-backports}\n"
        "  kconfig: [tinyconfig, qemu-guest, maps-contention]\n"
        "variants:\n"
        "  - name: linux-6.12\n"
        "    source: {debian: linux-source-6.12, suite: trixie}\n"
        "  - name: linux-7.2\n"
        "baseline: linux-6.12\n"
        "vm: {cpus: 4, memory: 1G, accel: tcg}\n"
        "workload: {name: maps-contention, runs: 1, blocks: 2, duration_s: 3,"
        " headline: above_1ms}\n"
    )
    rundir = tmp_path / "run"
    res = korch("run", str(exp), "--out", str(rundir))
    # two blocks are too few for a verdict
    assert res.returncode == EXIT_INCONCLUSIVE, res.stdout[-2000:] + res.stderr[-3000:]
    old = ResultsFile.load(rundir / "results" / "linux-6.12.json")
    new = ResultsFile.load(rundir / "results" / "linux-7.2.json")
    assert old.provenance["kernel_release"].startswith("6.12")
    assert new.provenance["kernel_release"].startswith("7.2")
    assert old.provenance["kernel_source"] == "debian:linux-source-6.12 from trixie"
    assert new.provenance["kernel_source"] == "debian:linux-source-7.2 from trixie-backports"
    # 7.2 is the default experiment's per-vma kernel: same tree, same .config, cached
    assert new.provenance["build_key"] == default_builds["per-vma"].key
    summary = (rundir / "summary.md").read_text()
    assert "Cross-tree comparison: 'linux-6.12' is built from debian:linux-source-6.12" in summary
    assert "Their .config files differ in" in summary
    comparison = json.loads((rundir / "comparison.json").read_text())
    assert any(w.startswith("Cross-tree comparison") for w in comparison["warnings"])
