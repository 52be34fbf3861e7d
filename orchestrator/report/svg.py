"""Small SVG charts: line charts (linear or log axes) and strip charts with boxes.

Written for the HTML report, which must be one self-contained file: every chart is an
inline ``<svg>`` with presentation attributes only (no CSS classes, fonts or scripts it
depends on), so it also survives being copied out on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
GRID = "#e3e3e3"
INK = "#333333"
MUTED = "#777777"


@dataclass(frozen=True)
class Line:
    """One curve. ``step`` draws horizontal-then-vertical segments (a step function)."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str
    dashed: bool = False
    step: bool = False


@dataclass(frozen=True)
class Axis:
    """An axis: label, scale, optional fixed ends, and reference lines (value, label)."""

    label: str
    log: bool = False
    lo: float | None = None
    hi: float | None = None
    refs: Sequence[tuple[float, str]] = field(default_factory=tuple)


def tick_label(v: float) -> str:
    """Short tick text: no trailing zeros, no exponent between 1e-4 and 1e6."""
    if v == 0:
        return "0"
    if 1e-4 <= abs(v) < 1e6:
        text = f"{v:.6f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    return f"{v:.0e}"


class Scale:
    """Maps data values to pixels along one axis and proposes tick positions."""

    def __init__(self, lo: float, hi: float, start: float, end: float, log: bool) -> None:
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi, self.start, self.end = lo, hi, start, end

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.start + (t - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def ticks(self) -> list[float]:
        """Values where ticks go: 1-2-5 steps on a linear axis, decades (or 1-2-5 within
        them, for short ranges) on a log axis."""
        if self.log:
            first, last = math.floor(self.lo + 1e-9), math.ceil(self.hi - 1e-9)
            mantissas = (1, 2, 5) if last - first <= 3 else (1,)
            out = [
                m * 10.0**e
                for e in range(first, last + 1)
                for m in mantissas
                if self.lo - 1e-9 <= math.log10(m * 10.0**e) <= self.hi + 1e-9
            ]
            return out
        span = self.hi - self.lo
        raw = span / 5
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
        first = math.ceil(self.lo / step - 1e-9)
        out = []
        i = first
        while i * step <= self.hi + 1e-9 * step:
            out.append(round(i * step, 12))
            i += 1
        return out


def _extent(values: Sequence[float], axis: Axis) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not axis.log)]
    refs = [v for v, _ in axis.refs if v > 0 or not axis.log]
    lo = axis.lo if axis.lo is not None else min(finite + refs, default=1.0)
    hi = (
        axis.hi
        if axis.hi is not None
        else max(finite + refs, default=lo * 10 if axis.log else lo + 1)
    )
    if axis.log:
        # widen to quarter decades, so curves do not touch the frame
        lo = 10 ** (math.floor(math.log10(lo) * 4) / 4) if axis.lo is None else lo
        hi = 10 ** (math.ceil(math.log10(hi) * 4) / 4) if axis.hi is None else hi
        if hi <= lo:
            hi = lo * 10
    else:
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        pad = (hi - lo) * 0.05
        if axis.hi is None:
            hi += pad
        if axis.lo is None:
            lo = lo - pad if lo - pad >= 0 or lo < 0 else 0.0
    return lo, hi


def _open(width: int, height: int, chart_id: str, title: str) -> list[str]:
    t = escape(title)
    return [
        f'<svg id="{escape(chart_id)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" aria-labelledby="{escape(chart_id)}-title" font-family="{FONT}" font-size="12"'
        ' style="max-width:100%;height:auto">',
        f'<title id="{escape(chart_id)}-title">{t}</title>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="14" font-weight="600" fill="{INK}">{t}</text>',
    ]


def _x_grid(sx: Scale, top: float, bottom_y: float) -> list[str]:
    """Vertical grid lines at the x scale's ticks, labelled below the plot area."""
    out = []
    for v in sx.ticks():
        px = sx(v)
        out.append(
            f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom_y}" stroke="{GRID}"/>'
        )
        out.append(
            f'<text x="{px:.1f}" y="{bottom_y + 16}" text-anchor="middle" fill="{MUTED}">{tick_label(v)}</text>'
        )
    return out


def _legend(names: Sequence[tuple[str, str, bool]], x: float, y: float) -> list[str]:
    out = ['<g data-role="legend">']
    for i, (name, color, dashed) in enumerate(names):
        yy = y + i * 18
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(
            f'<line x1="{x:.1f}" y1="{yy:.1f}" x2="{x + 24:.1f}" y2="{yy:.1f}" stroke="{color}" stroke-width="3"{dash}/>'
            f'<text x="{x + 30:.1f}" y="{yy + 4:.1f}" fill="{INK}">{escape(name)}</text>'
        )
    out.append("</g>")
    return out


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x: Axis,
    y: Axis,
    chart_id: str,
    width: int = 760,
    height: int = 380,
    note: str = "",
    legend: str = "top-left",
) -> str:
    """A line chart as an SVG string. Points with non-finite values, or non-positive values
    on a log axis, are left out. ``note`` is a line of small print under the chart;
    ``legend`` is ``top-left`` or ``bottom-left``, whichever the curves leave free."""
    left, right, top, bottom = 70, 20, 32, 52 + (14 if note else 0)
    xs = [p[0] for line in lines for p in line.points]
    ys = [p[1] for line in lines for p in line.points]
    x_lo, x_hi = _extent(xs, x)
    y_lo, y_hi = _extent(ys, y)
    sx = Scale(x_lo, x_hi, left, width - right, x.log)
    sy = Scale(y_lo, y_hi, height - bottom, top, y.log)
    out = _open(width, height, chart_id, title)

    out.append('<g data-role="grid">')
    out.extend(_x_grid(sx, top, height - bottom))
    for v in sy.ticks():
        py = sy(v)
        out.append(
            f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="{GRID}"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" fill="{MUTED}">{tick_label(v)}</text>'
        )
    out.append("</g>")
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}"'
        f' fill="none" stroke="{MUTED}"/>'
    )
    out.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - bottom + 36}" text-anchor="middle" fill="{INK}">{escape(x.label)}</text>'
    )
    cy = (top + height - bottom) / 2
    out.append(
        f'<text x="16" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 16 {cy:.1f})" fill="{INK}">{escape(y.label)}</text>'
    )
    if note:
        out.append(
            f'<text x="{left}" y="{height - 8}" font-size="11" fill="{MUTED}">{escape(note)}</text>'
        )

    out.append('<g data-role="refs">')
    for i, (v, label) in enumerate(x.refs):
        if x_lo <= v <= x_hi:
            px = sx(v)
            # staggered, so that labels of nearby lines do not print over each other
            out.append(
                f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}" stroke="#999999" stroke-dasharray="3 3"/>'
                f'<text x="{px + 3:.1f}" y="{top + 12 + 12 * i}" font-size="11" fill="{MUTED}">{escape(label)}</text>'
            )
    for v, label in y.refs:
        if y_lo <= v <= y_hi:
            py = sy(v)
            out.append(
                f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#999999" stroke-dasharray="3 3"/>'
                f'<text x="{left + 4}" y="{py - 3:.1f}" font-size="11" fill="{MUTED}">{escape(label)}</text>'
            )
    out.append("</g>")

    for line in lines:
        pts = [
            (sx(min(max(px, x_lo), x_hi)), sy(min(max(py, y_lo), y_hi)))
            for px, py in line.points
            if math.isfinite(px)
            and math.isfinite(py)
            and (px > 0 or not x.log)
            and (py > 0 or not y.log)
        ]
        if line.step:
            stepped: list[tuple[float, float]] = []
            for i, p in enumerate(pts):
                if i:
                    stepped.append((p[0], stepped[-1][1]))
                stepped.append(p)
            pts = stepped
        if not pts:
            continue
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(
            f'<g data-role="series" data-name="{escape(line.name)}">'
            f'<polyline points="{coords}" fill="none" stroke="{line.color}" stroke-width="2.5"'
            f' stroke-linejoin="round"{dash}/></g>'
        )
    legend_y = top + 18 if legend == "top-left" else height - bottom - 14 - 18 * (len(lines) - 1)
    out += _legend([(ln.name, ln.color, ln.dashed) for ln in lines], left + 14, legend_y)
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Strip:
    """One row of a strip chart: a name, its values, a colour."""

    name: str
    values: Sequence[float]
    color: str


def strip_chart(
    strips: Sequence[Strip],
    *,
    title: str,
    x: Axis,
    chart_id: str,
    width: int = 760,
    seed: int = 1,
) -> str:
    """One row per strip: every value as a dot (jittered vertically, seeded), a box over the
    interquartile range, whiskers from p10 to p90 and a bar at the median."""
    row = 56
    left, right, top, bottom = 150, 20, 32, 52
    height = top + row * max(1, len(strips)) + bottom
    values = [v for s in strips for v in s.values]
    lo, hi = _extent(values, x)
    sx = Scale(lo, hi, left, width - right, x.log)
    jitter = random.Random(seed)
    out = _open(width, height, chart_id, title)
    out.append('<g data-role="grid">')
    out.extend(_x_grid(sx, top, height - bottom))
    out.append("</g>")
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="none" stroke="{MUTED}"/>'
    )
    out.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - bottom + 36}" text-anchor="middle" fill="{INK}">{escape(x.label)}</text>'
    )
    for i, s in enumerate(strips):
        mid = top + row * i + row / 2
        finite = [v for v in s.values if math.isfinite(v) and (v > 0 or not x.log)]
        out.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end" fill="{INK}" font-weight="600">{escape(s.name)}</text>'
        )
        out.append(f'<g data-role="series" data-name="{escape(s.name)}">')
        for v in finite:
            out.append(
                f'<circle cx="{sx(v):.1f}" cy="{mid + jitter.uniform(-row * 0.3, row * 0.3):.1f}" r="2.6"'
                f' fill="{s.color}" fill-opacity="0.55"/>'
            )
        if finite:
            p10, p25, p50, p75, p90 = (
                float(q) for q in np.percentile(finite, [10, 25, 50, 75, 90])
            )
            box = row * 0.5
            out.append(
                f'<line x1="{sx(p10):.1f}" y1="{mid:.1f}" x2="{sx(p90):.1f}" y2="{mid:.1f}" stroke="{INK}" stroke-width="1.5"/>'
                f'<rect x="{sx(p25):.1f}" y="{mid - box / 2:.1f}" width="{max(1.0, sx(p75) - sx(p25)):.1f}"'
                f' height="{box:.1f}" fill="none" stroke="{INK}" stroke-width="1.5"/>'
                f'<line x1="{sx(p50):.1f}" y1="{mid - box / 2:.1f}" x2="{sx(p50):.1f}" y2="{mid + box / 2:.1f}"'
                f' stroke="{s.color}" stroke-width="4"/>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
