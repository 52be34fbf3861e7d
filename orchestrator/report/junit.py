"""The JUnit XML report (``junit.xml``): one test case per metric and candidate, and one
per correctness check and candidate (a check that passes on the baseline and fails on the
candidate is a ``<failure>``).

A regression is a ``<failure>``, an inconclusive metric is ``<skipped>``, and an
infrastructure failure (a failed boot, an interrupted run) is an ``<error>`` in a test
case of its own per variant, so a CI's test view shows what broke where.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..stats import Comparison, MetricComparison, Summary, Verdict
from . import fmt


def _details(comparison: Comparison, mc: MetricComparison) -> str:
    return (
        f"{fmt.metric_label(mc.spec)}: baseline median {fmt.value(mc.spec, mc.baseline_median)}"
        f" ({mc.n_baseline} runs, {mc.boots_baseline} boots), candidate median"
        f" {fmt.value(mc.spec, mc.candidate_median)} ({mc.n_candidate} runs,"
        f" {mc.boots_candidate} boots); change {fmt.change(mc.ratio)},"
        f" {fmt.level_pct(mc.level)} CI {fmt.interval(mc.ci_low, mc.ci_high)};"
        f" p {fmt.pvalue(mc.p_value)} ({mc.units}, {mc.method}; {fmt.family(mc)}),"
        f" adjusted {fmt.pvalue(mc.p_adjusted)}; {mc.verdict}: {mc.reason}"
    )


def _infra_case(parent: ET.Element, classname: str, s: Summary) -> bool:
    case = ET.SubElement(
        parent, "testcase", classname=classname, name=f"{s.variant}: boots and runs", time="0"
    )
    problems = list(s.boot_errors)
    if s.status != "complete":
        problems.append(
            f"results {s.status}: {(s.interruption or {}).get('reason', 'no reason recorded')}"
        )
    if s.runs == 0:
        problems.append("no completed run")
    if problems:
        ET.SubElement(case, "error", message=problems[0], type="infrastructure").text = "\n".join(
            problems
        )
        return True
    return False


def render(comparison: Comparison) -> str:
    """The JUnit XML document as text."""
    root = ET.Element("testsuites", name=f"korch {comparison.experiment}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in comparison.candidates:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{comparison.experiment}: {c.candidate} vs {comparison.baseline}",
        )
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        classname = f"korch.{comparison.experiment}.{c.candidate}"
        for s in (comparison.summary(comparison.baseline), comparison.summary(c.candidate)):
            counts["tests"] += 1
            counts["errors"] += _infra_case(suite, classname, s)
        for mc in c.metrics:
            counts["tests"] += 1
            name = mc.metric + (" (headline)" if mc.family == "headline" else " (exploratory)")
            case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
            text = _details(comparison, mc)
            if mc.verdict == Verdict.REGRESSED:
                counts["failures"] += 1
                ET.SubElement(
                    case,
                    "failure",
                    message=f"regressed: {mc.reason}",
                    type="regression",
                ).text = text
            elif mc.verdict == Verdict.INCONCLUSIVE:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"inconclusive: {mc.reason}")
                ET.SubElement(case, "system-out").text = text
            else:
                ET.SubElement(case, "system-out").text = text
        for g in comparison.checks:
            for cc in g.candidates:
                if cc.candidate != c.candidate:
                    continue
                counts["tests"] += 1
                case = ET.SubElement(
                    suite, "testcase", classname=classname, name=f"check {g.test}", time="0"
                )
                text = (
                    f"{g.test}: baseline {g.baseline.describe()}; candidate"
                    f" {cc.tally.describe()}; {cc.verdict}"
                    + (f": {cc.reason}" if cc.reason else "")
                )
                if cc.verdict == "regressed":
                    counts["failures"] += 1
                    ET.SubElement(
                        case, "failure", message=f"correctness regressed: {cc.reason}",
                        type="correctness",
                    ).text = text  # fmt: skip
                elif cc.verdict == "not decided":
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=f"not decided: {cc.reason}")
                else:
                    ET.SubElement(case, "system-out").text = text
        for key, v in counts.items():
            suite.set(key, str(v))
            totals[key] += v
    for key, v in totals.items():
        root.set(key, str(v))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
