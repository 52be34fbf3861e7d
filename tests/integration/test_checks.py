"""Correctness checks for real: proc-maps-race built from each variant's 7.2 tree, run in
TCG guests after the timed runs, and a patch that makes maps readers miss a VMA reported as
a regression (exit 1) in every report format."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator import build, vm
from orchestrator.errors import EXIT_REGRESSION
from orchestrator.results import ResultsFile
from tests import faults

DATA = Path(__file__).parent / "data" / "checks"
TEST = "proc/proc-maps-race"
SPLIT = "proc_maps_race.maps.test_maps_tearing_from_split"


def test_a_patch_that_tears_maps_is_a_correctness_regression(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    rundir = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(DATA / "skip-a-vma.yaml"),
         "--out", str(rundir)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    out = res.stdout + res.stderr
    # one block is far too few for a performance verdict; the check alone decides
    assert res.returncode == EXIT_REGRESSION, out
    assert "Correctness regression in skip-a-vma: proc/proc-maps-race passes" in out

    base = ResultsFile.load(rundir / "results" / "per-vma.json")
    cand = ResultsFile.load(rundir / "results" / "skip-a-vma.json")
    (b,) = base.boots
    (c,) = cand.boots
    assert b["checks"][TEST]["status"] == "pass", b["checks"]
    assert c["checks"][TEST]["status"] == "fail", c["checks"]
    assert c["checks"][TEST]["failed"] == [SPLIT]
    assert base.provenance["checks"][0]["test"] == TEST
    log = rundir / "boot" / "skip-a-vma-1" / "checks" / "proc-proc-maps-race.log"
    assert f"not ok 1 {SPLIT}" in log.read_text()
    # each variant's program was built from its own tree and travels with its kernel
    for variant in ("per-vma", "skip-a-vma"):
        assert (rundir / "build" / variant / "checks" / TEST).is_file()

    comparison = json.loads((rundir / "comparison.json").read_text())
    (gate,) = comparison["checks"]
    assert gate["test"] == TEST and gate["regressed"] is True
    assert gate["baseline"]["pass"] == 1
    (cc,) = gate["candidates"]
    assert cc["verdict"] == "regressed" and cc["results"]["failed_tests"] == {SPLIT: 1}
    # the performance verdict itself stays what the timings say
    assert comparison["candidates"][0]["verdict"] == "inconclusive"
    junit = ET.parse(rundir / "junit.xml").getroot()
    failures = [f.get("type") for f in junit.iter("failure")]
    assert failures == ["correctness"]
    assert "Correctness regression in skip-a-vma" in (rundir / "summary.md").read_text()
    assert 'id="check-regressed"' in (rundir / "report.html").read_text()
    assert not vm.live_pids()


def _experiment(tmp_path: Path, checks: str, patch: str | None = None) -> Path:
    text = (DATA / "skip-a-vma.yaml").read_text().split("\nchecks:")[0]
    if patch is not None:
        (tmp_path / "broken.patch").write_text(patch)
        text = text.replace("maps-skip-a-vma.patch", str(tmp_path / "broken.patch"))
    else:
        text = text.replace("maps-skip-a-vma.patch", str(DATA / "maps-skip-a-vma.patch"))
    path = tmp_path / "e.yaml"
    path.write_text(text + "\nchecks: " + checks + "\n")
    return path


def _build_fault(exp: Path, *expected: str) -> tuple[int, str]:
    """``korch build exp``, counted in the fault tally; its exit code and output. The message
    must hold every ``expected`` text."""
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "build", str(exp)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    said = res.stdout + res.stderr
    clear = all(text in said for text in expected)
    faults.record(res.returncode, said, clear)
    assert clear, said
    return res.returncode, said


def test_a_check_the_tree_does_not_have_is_named_with_the_closest(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    code, said = _build_fault(
        _experiment(tmp_path, "[proc/proc-maps-rac]"),
        "check proc/proc-maps-rac: variant per-vma (debian:linux-source-7.2",
        "did you mean proc/proc-maps-race",
    )
    assert code == 64, said
    assert "Traceback" not in said


# a patch that breaks the selftest's own source: the build of its check fails, named
BROKEN_TEST = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: korch <korch@localhost>
Subject: [PATCH] selftests/proc: break proc-maps-race on purpose

---
diff --git a/tools/testing/selftests/proc/proc-maps-race.c b/tools/testing/selftests/proc/proc-maps-race.c
--- a/tools/testing/selftests/proc/proc-maps-race.c
+++ b/tools/testing/selftests/proc/proc-maps-race.c
@@ -24,6 +24,7 @@
  */
 #define _GNU_SOURCE
 #include "kselftest_harness.h"
+#error korch: this selftest is broken on purpose
 #include <errno.h>
 #include <fcntl.h>
 #include <pthread.h>
"""


def test_a_patch_that_breaks_the_selftest_fails_the_build_of_its_check(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    code, said = _build_fault(
        _experiment(tmp_path, "[proc/proc-maps-race]", BROKEN_TEST),
        "check proc/proc-maps-race: building it from variant skip-a-vma",
        "this selftest is broken on purpose",
    )
    assert code == 2, said
    # nothing half-built is left in the cache under a final name
    cache = default_builds["per-vma"].dir.parents[1]
    assert not list((cache / "checks").glob("*.tmp"))
