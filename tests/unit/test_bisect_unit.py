"""korch bisect's parts that need no kernel: the range, the prefixes, the reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import bisect, config
from orchestrator.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, UserError
from orchestrator.report import bisect as report
from orchestrator.stats import attribution as attr

DATA = Path(__file__).resolve().parents[1] / "integration" / "data" / "bisect"


def test_the_range_is_what_the_variant_adds_to_the_baseline() -> None:
    exp = config.load(DATA / "move.yaml")
    v, kept, n = bisect.series_range(exp, "series")
    assert (v.name, kept, n) == ("series", 1, 4)
    exp = config.load(DATA / "comments.yaml")
    assert bisect.series_range(exp, "comments")[1:] == (0, 2)


def test_prefixes_are_variants_that_cut_the_series() -> None:
    exp = config.load(DATA / "move.yaml")
    v, kept, n = bisect.series_range(exp, "series")
    pexp = bisect.prefix_experiment(exp, v, kept, n)
    assert [x.name for x in pexp.variants] == [f"series.{k}" for k in range(5)]
    assert pexp.baseline == "series.0"
    assert [x.series.first for x in pexp.variants] == [1, 2, 3, 4, 5]
    assert "the first 3 patch(es) of" in pexp.variants[2].series.describe()
    assert all(config.NAME_RE.match(x.name) for x in pexp.variants)


def test_bisecting_the_baseline_or_a_variant_without_patches_is_refused(tmp_path: Path) -> None:
    exp = config.load(DATA / "move.yaml")
    with pytest.raises(UserError, match="'mmap-lock' is the baseline") as e:
        bisect.series_range(exp, "mmap-lock")
    assert "--variant series" in str(e.value)
    default = config.load_default()  # per-vma has no patches; the baseline has one
    with pytest.raises(UserError, match="adds no patch to search"):
        bisect.series_range(default, "per-vma")


def state(kind: str, chosen: list[int], gate_ratio: float = 0.1) -> dict:
    def step(a: int, b: int, ratio: float, rejected: bool) -> dict:
        low, high = (ratio * 0.8, ratio * 1.2) if rejected else (0.9, 1.1)
        return {
            "from": a,
            "to": b,
            "blocks": 9,
            "ratio": ratio,
            "low": low,
            "high": high,
            "p": 0.002 if rejected else 0.5,
            "level": 0.004,
            "rejected": rejected,
        }

    steps = [step(0, 1, 1.0, False), step(1, 2, 1.0, False), step(2, 3, 0.1, True)]
    return {
        "settings": {
            "headline": "above_1ms",
            "max_blocks": 12,
            "runs": 1,
            "duration_s": 3.0,
            "alpha": 0.05,
            "smallest_effect_pct": 5.0,
        },
        "range": {"variant": "series", "kept": 1, "patches": 4, "series": "x"},
        "patches": [
            {"number": k, "file": f"000{k}-p.patch", "subject": f"<b>subject {k}</b>"}
            for k in range(1, 5)
        ],
        "images": ["a", "b", "c", "d", "d"],
        "effective": [0, 1, 2, 3],
        "rounds": [
            {
                "index": 1,
                "points": [0, 1, 2, 3],
                "gate": step(0, 3, gate_ratio, True),
                "blocks": 9,
                "outcome": kind,
                "why": "because",
                "steps": steps,
                "rests": [None, None, step(0, 3, 1.0, False)],
                "contrasts": [None, None, step(2, 3, 0.1, True)],
                "chosen": chosen,
            }
        ],
        "answer": {"kind": kind, "why": "because", "named": [3], "boots": 36},
        "values": {
            "0": [250.0 + i for i in range(9)],
            "1": [251.0] * 9,
            "2": [249.0] * 9,
            "3": [25.0 + i for i in range(9)],
        },
        "reproduce": "korch bisect move.yaml --out x",
    }


def test_the_report_names_the_patch_with_its_evidence(tmp_path: Path) -> None:
    s = state(attr.NAMED, [2])
    lines = report.answer_lines(s)
    assert lines[0].startswith("The whole series (4 patches) changed above_1ms by -90.0%")
    assert 'Patch 3 of 4, 0003-p.patch ("<b>subject 3</b>"), moved above_1ms by -90.0%' in lines[1]
    assert "prefix 2 → 3, 9 blocks" in lines[1]
    assert lines[2] == (
        "The rest of prefixes 0..3: +0.0% [-10.0%, +10.0%], shown smaller than the patch's change."
    )
    # without the contrast's evidence the answer says other patches may move it too
    s["rounds"][0]["contrasts"] = [None, None, None]
    assert "so other patches may move it too" in report.answer_lines(s)[2]
    s["rounds"][0]["contrasts"] = [None, None, {**s["rounds"][0]["steps"][2]}]
    rows = report.prefix_rows(s)
    assert [r["same_image_as"] for r in rows] == [None, None, None, None, 3]
    assert rows[4]["median"] == rows[3]["median"] == 29.0 and rows[4]["boots"] == 0
    md = report.render_markdown(s)
    assert "&lt;b&gt;subject 3&lt;/b&gt;" in md and "<b>" not in md  # inert Markdown
    assert "| 4 | `0004-p.patch` |" in md and "same as prefix 3" in md
    chart = report.text_chart(rows, "‰")
    assert len(chart) == 1 + 5 + 1 and "(log scale)" in chart[0]
    # the whole series' interval is left of the baseline's on the chart
    assert chart[4].index("●") < chart[1].index("●")
    assert chart[5].count("○") == 1
    html = report.render_html(s)
    assert '<svg id="bisect-steps"' in html and "&lt;b&gt;subject 3" in html
    written = report.write(tmp_path, s)
    assert [p.name for p in written] == ["bisect.json", "bisect.md", "bisect.html"]
    console = Console(record=True, width=200)
    report.render_terminal(s, console)
    assert "Patch 3 of 4" in console.export_text()


def test_the_report_of_a_series_that_moved_nothing() -> None:
    s = state(attr.NO_CHANGE, [], gate_ratio=1.0)
    s["rounds"][0]["gate"]["rejected"] = False
    lines = report.answer_lines(s)
    assert any("No patch is named" in line for line in lines)
    assert not any(line.startswith("Patch ") for line in lines)
    s = state(attr.NO_IMAGE_CHANGE, [])
    s["rounds"] = []
    assert report.answer_lines(s) == [
        "No patch moved above_1ms: all 5 prefixes build the same kernel image."
    ]


def test_exit_codes_follow_the_series_verdict() -> None:
    assert bisect.exit_code(state(attr.NAMED, [2], 0.1), "lower") == EXIT_OK
    assert bisect.exit_code(state(attr.NAMED, [2], 3.0), "lower") == EXIT_REGRESSION
    assert bisect.exit_code(state(attr.NAMED, [2], 0.1), "higher") == EXIT_REGRESSION
    assert bisect.exit_code(state(attr.NO_CHANGE, []), "lower") == EXIT_INCONCLUSIVE
    assert bisect.exit_code(state(attr.EQUIVALENT, []), "lower") == EXIT_OK
    assert bisect.exit_code({"answer": {"kind": attr.NO_IMAGE_CHANGE}}, "lower") == EXIT_OK


def test_median_interval_covers_the_median() -> None:
    assert report.median_interval([]) is None
    assert report.median_interval([3.0, 1.0]) == (1.0, 3.0)  # too few for 95%: the range
    lo, hi = report.median_interval([float(i) for i in range(1, 21)])  # type: ignore[misc]
    assert (lo, hi) == (6.0, 15.0)


def test_a_state_file_that_is_not_a_bisect_is_named(tmp_path: Path) -> None:
    d = bisect.BisectDir(tmp_path)
    d.state.write_text("{not json")
    with pytest.raises(UserError, match=r"bisect\.json: not readable as a korch bisect"):
        d.load()
    d.state.write_text(json.dumps({"x": 1}))
    with pytest.raises(UserError, match="not a korch bisect"):
        d.load()


def test_a_refused_bisect_writes_nothing(tmp_path: Path) -> None:
    from orchestrator import cli

    out = tmp_path / "b"
    assert cli.main(["bisect", "--variant", "per-vma", "--out", str(out)]) == 64
    assert cli.main(["bisect", "--out", str(out)]) == 64
    assert not out.exists()


def test_the_checks_of_the_booted_prefixes_say_where_a_check_first_fails() -> None:
    s = state(attr.NAMED, [2], 0.1)  # the headline improved: exit 0 without checks
    ok, bad = {"pass": 3}, {"pass": 1, "fail": 2}
    s["checks"] = {
        "proc/proc-maps-race": {"0": ok, "2": ok, "3": bad, "4": bad},
        "proc/proc-pid-vm": {"0": ok, "4": ok},
        "mm/soft-dirty": {"0": ok, "1": bad, "4": {"fail": 3}},
    }
    lines = report.check_lines(s)
    assert lines[0] == (
        "Correctness regression: mm/soft-dirty fails in 2 of 3 boots of prefix 1 of 4, and"
        ' passed at prefix 0: patch 1, 0001-p.patch ("<b>subject 1</b>"), broke it.'
    )
    assert lines[1].startswith("Correctness regression: proc/proc-maps-race fails in 2 of 3")
    assert lines[1].endswith(
        'passed at prefix 2: patch 3, 0003-p.patch ("<b>subject 3</b>"), broke it.'
    )
    assert lines[2] == "proc/proc-pid-vm failed in no boot of the prefixes booted (0, 4)."
    assert report.check_regressed(s) == ["mm/soft-dirty", "proc/proc-maps-race"]
    # a correctness regression decides the exit code whatever the headline did
    assert bisect.exit_code(s, "lower") == EXIT_REGRESSION
    # a gap between the last passing and the first failing prefix is said as such
    s["checks"] = {"t/x": {"0": ok, "4": bad}}
    (line,) = report.check_lines(s)
    assert "a patch among 1..4 broke it (the search booted no prefix between)" in line
    # failing on the baseline already: not these patches, and no gate
    s["checks"] = {"t/x": {"0": bad, "4": bad}}
    (line,) = report.check_lines(s)
    assert "not caused by these patches" in line and not report.check_regressed(s)
    assert bisect.exit_code(s, "lower") == EXIT_OK
    md = report.render_markdown(s)
    assert "t/x fails in 2 of 3 boots of prefix 0 of 4" in md
