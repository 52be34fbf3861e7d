"""korch bisect end to end: real prefix builds of Linux 7.2, real TCG boots, real reports.

The series are tests/integration/data/bisect: on the default experiment's baseline (maps
read under mmap_lock), four patches of which the third goes back to per-VMA locks and the
others change comments; on stock 7.2, two comment-only patches. Runs are 3 s and rounds at
most 12 blocks to keep the suite's time; ``ci/bench/attribution.py --real`` runs the
experiments' own settings and repeats.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator import build
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK

DATA = Path(__file__).resolve().parent / "data" / "bisect"
FAST = ["--duration", "3", "--accel", "tcg"]


def korch(*args: str, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def boots(out: Path) -> set[str]:
    return {p.name for p in out.glob("rounds/*/boot/*") if p.name != "kvm-probe"}


def test_bisect_names_the_patch_that_moved_it(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    out = tmp_path / "bisect"
    args = ["bisect", str(DATA / "move.yaml"), "--max-blocks", "12", *FAST, "--out", str(out)]
    done = korch(*args)
    # the series lowers the share of slow operations: improved, exit 0
    assert done.returncode == EXIT_OK, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out / "bisect.json").read_text())
    assert state["range"] == {
        "variant": "series", "kept": 1, "patches": 4, "series": state["range"]["series"]
    }  # fmt: skip
    # patches 1 and 2 move lines of mm/mmap.c (its warnings record lines): new images;
    # patch 4 moves lines of fs/proc/task_mmu.c only: the same image as prefix 3
    assert state["effective"] == [0, 1, 2, 3]
    assert state["images"][4] == state["images"][3]
    # prefix 0 is the baseline variant's kernel, built once for both
    assert state["kernels"]["0"]["build_key"] == default_builds["mmap-lock"].key
    assert state["answer"]["kind"] == "named" and state["answer"]["named"] == [3]
    first = state["rounds"][0]
    assert first["points"] == [0, 1, 2, 3] and first["gate"]["rejected"]
    assert first["gate"]["ratio"] < 0.5
    step = first["steps"][first["chosen"][0]]
    assert (step["from"], step["to"], step["rejected"]) == (2, 3, True)
    assert first["blocks"] <= 12
    md = (out / "bisect.md").read_text()
    assert "Patch 3 of 4, 0003-fs-proc-task_mmu-read-proc-pid-maps-under-per-VMA-lo.patch" in md
    assert "same as prefix 3" in md
    assert '<svg id="bisect-steps"' in (out / "bisect.html").read_text()
    assert "Patch 3 of 4" in done.stdout
    # each round is an ordinary run directory the report command reads
    assert (out / "rounds" / "1" / "results" / "series.3.json").exists()

    # the same command again resumes: nothing is booted twice, the answer stands
    before = boots(out)
    again = korch(*args)
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert boots(out) == before
    assert json.loads((out / "bisect.json").read_text())["answer"]["named"] == [3]


def test_bisect_of_comment_only_patches_names_none(
    default_builds: dict[str, build.Build], tmp_path: Path
) -> None:
    out = tmp_path / "bisect"
    done = korch(
        "bisect", str(DATA / "comments.yaml"), "--max-blocks", "8", *FAST, "--out", str(out)
    )
    state = json.loads((out / "bisect.json").read_text())
    # the second patch leaves the image as the first made it: one kernel, not booted twice
    assert state["effective"] == [0, 1]
    assert state["answer"]["named"] == []
    assert state["answer"]["kind"] in ("no decisive change", "equivalent")
    expected = EXIT_INCONCLUSIVE if state["answer"]["kind"] == "no decisive change" else EXIT_OK
    assert done.returncode == expected, done.stdout[-3000:] + done.stderr[-3000:]
    assert state["rounds"][0]["points"] == [0, 1]
    md = (out / "bisect.md").read_text()
    assert "No patch" in md
    # every boot ran the experiment's check, built from its prefix's own tree
    checks = state["checks"]["proc/proc-maps-race"]
    assert set(checks) == {"0", "1"} and all(set(c) == {"pass"} for c in checks.values())
    assert "proc/proc-maps-race failed in no boot of the prefixes booted (0, 1)." in md
