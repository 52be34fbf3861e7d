"""The reports of ``korch bisect``: the answer, the step chart over prefixes, the rounds.

Everything is drawn from the bisect's state (``bisect.json``, see :mod:`orchestrator.bisect`),
so a report can be written again from the directory alone. The step chart shows the
headline's median boot value per prefix (0 = the baseline, N = the whole series) with a
distribution-free 95% interval of that median (order statistics of the prefix's boots, over
every round that booted it). A prefix whose kernel image equals the one before it is drawn
at that prefix's value, marked "same image": it runs the same code.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table
from scipy.stats import binom

from ..fsutil import atomic_write
from ..stats import attribution as attr
from . import fmt, svg
from .markdown import _cell, _code


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median (order statistics, binomial): at least
    ``level`` coverage where the sample allows it, else the sample's range."""
    x = sorted(values)
    n = len(x)
    if n == 0:
        return None
    j = int(binom.ppf((1 - level) / 2, n, 0.5))  # lower order statistic (1-based)
    if j < 1:
        return x[0], x[-1]
    return x[j - 1], x[n - j]


def step_text(step: dict[str, Any]) -> str:
    """``prefix a → b: change [low, high], p, blocks`` of one judged comparison."""
    return (
        f"{fmt.change(step['ratio'])} {fmt.interval(step['low'], step['high'])}"
        f" (prefix {step['from']} → {step['to']}, {step['blocks']} blocks,"
        f" p = {step['p']:.3g} at level {step['level']:.3g})"
    )


def prefix_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per prefix 0..N: its patch, whether its image changed, its measured value."""
    n = state["range"]["patches"]
    effective = state.get("effective") or [0]
    patches = {p["number"]: p for p in state.get("patches") or []}
    values = state.get("values") or {}
    rows = []
    rep = 0
    for k in range(n + 1):
        if k in effective:
            rep = k
        vals = values.get(str(rep), [])
        p = patches.get(k)
        rows.append(
            {
                "prefix": k,
                "file": p["file"] if p else "",
                "subject": p["subject"] if p else "(baseline)",
                "same_image_as": None if (k == 0 or k in effective) else rep,
                "boots": len(values.get(str(k), [])) if k == rep else 0,
                "median": statistics.median(vals) if vals else None,
                "interval": median_interval(vals),
            }
        )
    return rows


def answer_lines(state: dict[str, Any]) -> list[str]:
    """The answer in sentences, with its evidence."""
    s = state["settings"]
    answer = state.get("answer") or {}
    kind = answer.get("kind")
    rounds = state.get("rounds") or []
    n = state["range"]["patches"]
    head = s["headline"]
    patches = {p["number"]: p for p in state.get("patches") or []}
    lines = []
    gate = rounds[0].get("gate") if rounds else None
    if kind == attr.NO_IMAGE_CHANGE:
        return [f"No patch moved {head}: all {n + 1} prefixes build the same kernel image."]
    if gate:
        same = f" (prefix {n} builds the same image as {gate['to']})" if gate["to"] != n else ""
        lines.append(f"The whole series ({n} patches) changed {head} by {step_text(gate)}{same}.")
    last = rounds[-1] if rounds else {}
    if kind in (attr.NAMED, attr.SEVERAL):
        for i in last.get("chosen", []):
            step = last["steps"][i]
            k = step["to"]
            p = patches.get(k, {"file": "?", "subject": "?"})
            lines.append(
                f'Patch {k} of {n}, {p["file"]} ("{p["subject"]}"), moved {head} by'
                f" {step_text(step)}."
            )
            rest = last["rests"][i]
            if kind == attr.NAMED and rest:
                contrasts = last.get("contrasts") or [None] * len(last["steps"])
                share = (
                    ", shown smaller than the patch's change"
                    if _carries(step, contrasts[i])
                    else "; that is not shown smaller than the patch's change, so other"
                    " patches may move it too"
                )
                lines.append(
                    f"The rest of prefixes {rest['from']}..{rest['to']}: {fmt.change(rest['ratio'])}"
                    f" {fmt.interval(rest['low'], rest['high'])}{share}."
                )
        if kind == attr.SEVERAL:
            lines.append("More than one patch moved it; each is listed with its own step.")
    elif kind == attr.SPREAD:
        lines.append(f"No single patch moved it decisively: {answer.get('why', '')}.")
    elif kind == attr.EQUIVALENT:
        lines.append(
            f"No patch moved it: the series' change lies inside ±{s['smallest_effect_pct']:g}%"
            " (the smallest effect of interest)."
        )
    elif kind == attr.NO_CHANGE:
        lines.append(
            f"No patch is named: the series' change is not decisive after"
            f" {rounds[0]['blocks'] if rounds else 0} blocks (at most {s['max_blocks']})."
        )
    return lines + check_lines(state)


def first_failure(by_prefix: dict[str, dict[str, int]]) -> tuple[int | None, int | None]:
    """A check's booted prefixes: (the last prefix before the first failing one, where every
    boot passed; the first prefix with a failing boot). None where there is none."""
    failing = sorted(int(k) for k, c in by_prefix.items() if c.get("fail"))
    if not failing:
        return None, None
    first = failing[0]
    passed = [int(k) for k, c in by_prefix.items() if int(k) < first and c.get("pass")]
    return (max(passed) if passed else None), first


def check_regressed(state: dict[str, Any]) -> list[str]:
    """The checks that pass on the baseline (prefix 0) and fail on the whole series, as
    ``korch run`` gates them."""
    found = state.get("checks") or {}
    if not found:
        return []
    n = str(state["range"]["patches"])
    out = []
    for test, by_prefix in sorted(found.items()):
        base, whole = by_prefix.get("0") or {}, by_prefix.get(n) or {}
        if base.get("pass") and not base.get("fail") and whole.get("fail"):
            out.append(test)
    return out


def check_lines(state: dict[str, Any]) -> list[str]:
    """What the correctness checks of the booted prefixes say: where a check first fails.
    The search follows the headline, so only the prefixes it booted are known."""
    n = state["range"]["patches"]
    patches = {p["number"]: p for p in state.get("patches") or []}
    regressed = set(check_regressed(state))
    out = []
    for test, by_prefix in sorted((state.get("checks") or {}).items()):
        passed, first = first_failure(by_prefix)
        if first is None:
            booted = ", ".join(sorted(by_prefix, key=int))
            out.append(f"{test} failed in no boot of the prefixes booted ({booted}).")
            continue
        c = by_prefix[str(first)]
        fails = f"fails in {c.get('fail', 0)} of {sum(c.values())} boots of prefix {first}"
        if passed is None:
            where = "and in no earlier prefix booted did it pass: not caused by these patches"
        elif first == passed + 1:
            p = patches.get(first, {"file": "?", "subject": "?"})
            where = f'and passed at prefix {passed}: patch {first}, {p["file"]} ("{p["subject"]}"), broke it'
        else:
            where = (
                f"and passed with no failing boot at prefix {passed}: a patch among"
                f" {passed + 1}..{first}"
                " broke it (the search booted no prefix between)"
            )
        lead = "Correctness regression: " if test in regressed else ""
        out.append(f"{lead}{test} {fails} of {n}, {where}.")
    return out


def _carries(step: dict[str, Any], contrast: dict[str, Any] | None) -> bool:
    """Whether the step's change is shown larger than the rest's (the contrast rejects in
    the step's direction)."""
    if contrast is None:
        return False
    return bool(contrast["rejected"]) and (contrast["ratio"] < 1.0) == (step["ratio"] < 1.0)


def title(state: dict[str, Any]) -> str:
    r = state["range"]
    kept = f" (after the baseline's {r['kept']})" if r["kept"] else ""
    return f"korch bisect: {r['variant']}, {r['patches']} patches{kept}"


# ---------------------------------------------------------------- Markdown


def text_chart(rows: list[dict[str, Any]], unit: str, width: int = 48) -> list[str]:
    """The step chart in text: per prefix a line with the interval (─) and the median (●;
    ○ for a prefix of the same image as the one before)."""
    lows = [r["interval"][0] for r in rows if r["interval"]]
    highs = [r["interval"][1] for r in rows if r["interval"]]
    if not lows:
        return []
    lo, hi = min(lows), max(highs)
    use_log = lo > 0 and hi / lo > 4
    f = (lambda v: math.log(v)) if use_log else (lambda v: v)
    a, b = f(lo), f(hi)
    span = (b - a) or 1.0

    def col(v: float) -> int:
        return max(0, min(width - 1, round((f(v) - a) / span * (width - 1))))

    out = [f"prefix  median {unit:>4}  {'(log scale)' if use_log else ''}"]
    for r in rows:
        line = [" "] * width
        if r["interval"]:
            for c in range(col(r["interval"][0]), col(r["interval"][1]) + 1):
                line[c] = "─"
            line[col(r["median"])] = "○" if r["same_image_as"] is not None else "●"
        value = f"{r['median']:.4g}" if r["median"] is not None else "-"
        out.append(f"{r['prefix']:>6}  {value:>11}  |{''.join(line)}|")
    out.append(f"{'':>21}{lo:<.4g}{'':>{max(1, width - 10)}}{hi:.4g}")
    return out


def render_markdown(state: dict[str, Any]) -> str:
    s = state["settings"]
    unit = s.get("headline_unit") or fmt.spec(s["headline"]).unit
    rows = prefix_rows(state)
    out = [f"## {_cell(title(state))}", ""]
    out += [f"- {_cell(line)}" for line in answer_lines(state)]
    out += [
        "",
        f"Headline `{s['headline']}` ({unit}); up to {s['max_blocks']} blocks a round,"
        f" {s['runs']} run(s) of {s['duration_s']:g} s a boot; alpha {s['alpha']:g}.",
        "",
        "### The metric over prefixes (0 = baseline, "
        f"{state['range']['patches']} = the whole series)",
        "",
        "```",
        *text_chart(rows, unit),
        "```",
        "",
        "| prefix | patch | subject | image | boots | median | 95% interval of the median |",
        "|---:|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        image = "changed" if r["same_image_as"] is None else f"same as prefix {r['same_image_as']}"
        if r["prefix"] == 0:
            image = "baseline"
        iv = r["interval"]
        median = "" if r["median"] is None else f"{r['median']:.4g}"
        interval = "" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]"
        patch = _code(r["file"]) if r["file"] else ""
        out.append(
            f"| {r['prefix']} | {patch} | {_cell(r['subject'])} | {image} | {r['boots'] or ''}"
            f" | {median} | {interval} |"
        )
    out += ["", "### Rounds", "", "| round | prefixes | blocks | outcome | why |",
            "|---:|---|---:|---|---|"]  # fmt: skip
    for r in state.get("rounds") or []:
        out.append(
            f"| {r['index']} | {', '.join(map(str, r['points']))} | {r['blocks']}"
            f" | {r['outcome']} | {_cell(r['why'])} |"
        )
    out += ["", f"Reproduce: {_code(state.get('reproduce', ''))}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- HTML


def step_chart(state: dict[str, Any]) -> str | None:
    """The SVG step chart: median per prefix, and the interval's ends, as steps."""
    s = state["settings"]
    m = fmt.spec(s["headline"])
    unit = s.get("headline_unit") or m.unit
    rows = [r for r in prefix_rows(state) if r["median"] is not None and r["interval"]]
    if not rows:
        return None
    lows = [r["interval"][0] for r in rows]
    highs = [r["interval"][1] for r in rows]
    log_y = min(lows) > 0 and max(highs) / min(lows) > 4
    end = state["range"]["patches"] + 1

    def steps(key: Any) -> list[tuple[float, float]]:
        pts = [(float(r["prefix"]), key(r)) for r in rows]
        return [*pts, (float(end), pts[-1][1])] if pts[-1][0] < end else pts

    lines = [
        svg.Line("median of the prefix's boots", steps(lambda r: r["median"]), svg.PALETTE[0],
                 step=True),
        svg.Line("95% interval of the median, lower end", steps(lambda r: r["interval"][0]),
                 svg.PALETTE[1], dashed=True, step=True),
        svg.Line("95% interval of the median, upper end", steps(lambda r: r["interval"][1]),
                 svg.PALETTE[2], dashed=True, step=True),
    ]  # fmt: skip
    return svg.line_chart(
        lines,
        title=f"{m.key} over prefixes (0 = baseline, {end - 1} = the whole series)",
        x=svg.Axis("prefix (patches applied)", lo=0.0, hi=float(end)),
        # headroom above the curves for the legend
        y=svg.Axis(f"{m.key} ({unit})", log=log_y, hi=max(highs) * (4.0 if log_y else 1.5)),
        chart_id="bisect-steps",
        note="a step starts at its prefix; prefixes of the same image as the one before"
        " run the same code and are drawn at its value",
    )


def render_html(state: dict[str, Any]) -> str:
    s = state["settings"]
    rows = prefix_rows(state)
    chart = step_chart(state) or "<p>No prefix was booted.</p>"
    items = "".join(f"<li>{escape(line)}</li>" for line in answer_lines(state))
    body = []
    for r in rows:
        image = "changed" if r["same_image_as"] is None else f"same as prefix {r['same_image_as']}"
        iv = r["interval"]
        body.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(c))}</td>"
                for c in (
                    r["prefix"],
                    r["file"],
                    r["subject"],
                    "baseline" if r["prefix"] == 0 else image,
                    r["boots"] or "",
                    "" if r["median"] is None else f"{r['median']:.4g}",
                    "" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]",
                )
            )
            + "</tr>"
        )
    rounds = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(str(c))}</td>"
            for c in (
                r["index"],
                ", ".join(map(str, r["points"])),
                r["blocks"],
                r["outcome"],
                r["why"],
            )
        )
        + "</tr>"
        for r in state.get("rounds") or []
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title(state))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}</style>
</head><body>
<h1>{escape(title(state))}</h1>
<ul>{items}</ul>
<p>Headline <code>{escape(s["headline"])}</code>; up to {s["max_blocks"]} blocks a round,
{s["runs"]} run(s) of {s["duration_s"]:g} s a boot; alpha {s["alpha"]:g}.</p>
{chart}
<h2>Prefixes</h2>
<table><tr><th>prefix</th><th>patch</th><th>subject</th><th>image</th><th>boots</th>
<th>median</th><th>95% interval of the median</th></tr>{"".join(body)}</table>
<h2>Rounds</h2>
<table><tr><th>round</th><th>prefixes</th><th>blocks</th><th>outcome</th><th>why</th></tr>
{rounds}</table>
<p>Reproduce: <code>{escape(state.get("reproduce", ""))}</code></p>
</body></html>
"""


# ---------------------------------------------------------------- terminal and files


def render_terminal(state: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{rich_escape(title(state))}[/]", highlight=False)
    for line in answer_lines(state):
        console.print(f"  {line}", markup=False, highlight=False)
    table = Table(title="the headline over prefixes")
    for col in ("prefix", "patch", "image", "boots", "median", "95% interval"):
        table.add_column(col)
    for r in prefix_rows(state):
        iv = r["interval"]
        table.add_row(
            str(r["prefix"]),
            r["file"] or "(baseline)",
            "" if r["same_image_as"] is None else f"= {r['same_image_as']}",
            str(r["boots"] or ""),
            "" if r["median"] is None else f"{r['median']:.4g}",
            "" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]",
        )
    console.print(table)


def write(out: Path, state: dict[str, Any]) -> list[Path]:
    """bisect.md and bisect.html beside bisect.json (each written whole, then renamed)."""
    md, html = out / "bisect.md", out / "bisect.html"
    atomic_write(md, render_markdown(state))
    atomic_write(html, render_html(state))
    return [out / "bisect.json", md, html]
