"""Which patch moved it: the search over a series' prefixes behind ``korch bisect``.

Prefix ``k`` is the kernel with the first ``k`` patches of the series applied (0: none,
``N``: all). Prefixes whose kernel images are byte for byte the same run the same code, so
a patch that leaves the image as it was cannot move anything: the search runs over the
*effective* prefixes only (0 and every prefix whose image differs from the one before it),
and a patch it names is one that changed the image.

The search is a sequence of *rounds*. A round boots a few prefixes (its *points*) once
each in every block, in the blocked design of ``korch run`` (:mod:`.inference`), and after
each block judges the per-block log differences of neighbouring points (its *segments*):

* **The gate.** The first round's ends are prefix 0 and prefix ``N``: their comparison is
  the series' own A/B question, tested at the group-sequential level for ``alpha`` and the
  most blocks, exactly like ``korch run --until-decisive``. Nothing is attributed unless the
  gate rejects "no change", so on a series that changes nothing a patch is named at most
  ``alpha`` of the time. Its interval inside the smallest effect of interest ends the search
  as *equivalent*; the most blocks without either ends it as *no decisive change*.
* **Segments.** Every segment is tested at the sequential level for
  ``alpha / rounds / segments``: the localisation's budget is ``alpha``, split evenly over
  the rounds a single-patch search of this length takes (:func:`planned_rounds`; one for
  up to four effective steps, two for up to 16) and within a round over its segments. A segment is *dominant* when it rejects
  in the direction of the change its range is known to hold **and** its change is shown
  larger than the rest of the range's (the range's change minus the segment's, per block):
  the per-block contrast ``segment - rest`` rejects in that direction, and so does the
  range's own change (``segment + rest``), both at the segment's level; so the rest lies
  strictly between minus and plus the segment's change. That is the claim "this segment
  carries most of the change", with its evidence; only one segment can make it, and it
  fails when the change is spread: two patches of equal size leave a rest as large as the
  segment. A round stops at its first dominant segment.
* **Narrowing.** A dominant segment becomes the next round's range (with up to
  :data:`FANOUT` points inside it, spread evenly); a dominant segment between neighbouring
  effective prefixes names its patch.
* **At the most blocks** a single rejecting segment that is not dominant is still where
  the change is shown to be: the search narrows to it, and names its patch when it is one
  step, with the rest's interval saying how much of the change is left unplaced.
* **Several or spread.** Two rejecting segments, or one against the range's direction, or
  the most blocks without any rejecting segment, send the search to a *full* round that
  boots every effective prefix of the range; a full round ends by listing the steps that
  moved the metric (*several*), or none that did alone (*spread*).

With one patch carrying the change, a range of ``K`` effective steps takes about
``log4(K)`` rounds of ``min(K, 3) + 2`` points each. :func:`search` runs the whole procedure
on any source of block values, so the simulator (:mod:`.simulate_bisect`) and the real
command (:mod:`orchestrator.bisect`) share every decision; ``ci/bench/attribution.py`` prints its
false attributions and power.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import inference as inf

FloatArray = npt.NDArray[np.float64]

FANOUT = 3  # interior points of a round: 4 segments, the fewest boots per step of the search

CONTINUE = "continue"
# how a round ends
NARROW = "narrow"  # a dominant segment that spans several effective steps: search inside it
FALLBACK = "fallback"  # not one segment: boot every prefix of the range
# how the search ends
NAMED = "named"  # one patch carries the change
SEVERAL = "several"  # more than one step moved it
SPREAD = "spread"  # the range moved it, no single step decisively
EQUIVALENT = "equivalent"  # the series' change lies inside the smallest effect of interest
NO_CHANGE = "no decisive change"  # the gate never rejected
NO_IMAGE_CHANGE = "no image change"  # every prefix builds the same kernel image
ANSWERS = (NAMED, SEVERAL, SPREAD, EQUIVALENT, NO_CHANGE, NO_IMAGE_CHANGE)


@dataclass(frozen=True)
class Estimate:
    """One paired comparison of two prefixes on the log scale: ``hi`` against ``lo``."""

    lo: int
    hi: int
    blocks: int
    est: float  # Hodges-Lehmann estimate of log(hi / lo)
    low: float
    high: float
    p: float
    level: float

    @property
    def rejected(self) -> bool:
        """The test rejects "no change" at its level (the interval then excludes 0)."""
        return self.blocks > 0 and self.p <= self.level and not (self.low <= 0.0 <= self.high)

    @property
    def sign(self) -> int:
        return 0 if self.est == 0 or math.isnan(self.est) else (1 if self.est > 0 else -1)

    @property
    def near(self) -> float:
        """The interval's bound nearest no change (0 when it holds 0)."""
        if self.low <= 0.0 <= self.high:
            return 0.0
        return min(abs(self.low), abs(self.high))

    @property
    def far(self) -> float:
        """The interval's bound farthest from no change."""
        return max(abs(self.low), abs(self.high))

    def equivalent(self, smallest: float) -> bool:
        """The whole interval lies inside ±``smallest`` (a fraction, as in the verdicts)."""
        bound = math.log1p(smallest)
        return self.blocks > 0 and -bound < self.low and self.high < bound

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "from": self.lo,
            "to": self.hi,
            "blocks": self.blocks,
            "ratio": _exp(self.est),
            "low": _exp(self.low),
            "high": _exp(self.high),
            "p": self.p,
            "level": self.level,
            "rejected": self.rejected,
        }


def _exp(x: float) -> float:
    return math.exp(x) if math.isfinite(x) else (math.inf if x > 0 else 0.0)


def estimate(lo: int, hi: int, d: FloatArray, level: float) -> Estimate:
    """The paired test and interval of per-block log differences ``d`` (NaN left out)."""
    d = d[~np.isnan(d)]
    if d.size == 0:
        return Estimate(lo, hi, 0, math.nan, -math.inf, math.inf, 1.0, level)
    p = inf.signed_rank_test(d)
    est, low, high = inf.paired_interval(d, level)
    return Estimate(lo, hi, int(d.size), est, low, high, p, level)


@dataclass(frozen=True)
class Round:
    """The prefixes a round boots in every block, and what it is for."""

    index: int  # 1-based
    points: tuple[int, ...]  # ascending prefix numbers; the first and last are its range
    gate: bool = False  # the first round: its ends are prefix 0 and N, the series' question
    full: bool = False  # every effective prefix of the range is a point
    direction: int = 0  # the sign of the change the range holds (known after the gate)

    @property
    def segments(self) -> list[tuple[int, int]]:
        return list(zip(self.points, self.points[1:], strict=False))

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "points": list(self.points),
            "gate": self.gate,
            "full": self.full,
            "direction": self.direction,
        }


def make_round(
    index: int,
    effective: Sequence[int],
    lo: int,
    hi: int,
    *,
    gate: bool = False,
    full: bool = False,
    direction: int = 0,
) -> Round:
    """The round over range (lo, hi]: every effective prefix inside it when there are at
    most :data:`FANOUT` (or ``full``), else :data:`FANOUT` of them spread evenly."""
    inner = [p for p in effective if lo < p < hi]
    if full or len(inner) <= FANOUT:
        return Round(index, (lo, *inner, hi), gate, True, direction)
    n = len(inner)
    picks = sorted({inner[round((i + 1) * (n + 1) / (FANOUT + 1)) - 1] for i in range(FANOUT)})
    return Round(index, (lo, *picks, hi), gate, False, direction)


@dataclass(frozen=True)
class Judgement:
    """What a round's blocks so far say, and what comes next."""

    blocks: int
    outcome: str  # CONTINUE, NARROW, FALLBACK, or one of ANSWERS
    why: str
    gate: Estimate | None
    steps: tuple[Estimate, ...]  # one per segment
    rests: tuple[Estimate | None, ...]  # the range's change without the segment's
    chosen: tuple[int, ...] = ()  # the segments (indices) the outcome points at
    next: Round | None = None
    contrasts: tuple[Estimate | None, ...] = ()  # the segment's change minus the rest's

    @property
    def final(self) -> bool:
        return self.outcome in ANSWERS


@dataclass(frozen=True)
class Levels:
    """The search's error budget: ``alpha`` for the gate and for each round's segments
    (split over them), looked at after every block up to ``max_blocks``."""

    alpha: float = 0.05
    max_blocks: int = 16
    smallest: float = 0.05  # the smallest effect of interest, a fraction
    _cache: dict[float, float] = field(default_factory=dict, compare=False, repr=False)

    def level(self, alpha: float) -> float:
        if alpha not in self._cache:
            self._cache[alpha] = inf.sequential_level(alpha, self.max_blocks)
        return self._cache[alpha]


def _rel(text: float) -> str:
    return f"{100 * (math.exp(text) - 1):+.1f}%" if math.isfinite(text) else "?"


def _change(e: Estimate) -> str:
    return f"{_rel(e.est)} [{_rel(e.low)}, {_rel(e.high)}], p = {e.p:.3g}"


def _describe(e: Estimate) -> str:
    return f"{e.lo}→{e.hi}: {_change(e)}"


def judge(
    rnd: Round,
    logs: Mapping[int, FloatArray],
    effective: Sequence[int],
    levels: Levels,
) -> Judgement:
    """Judge round ``rnd`` from its points' per-block log values (aligned arrays, NaN where
    a boot gave no value)."""
    blocks = min(len(logs[p]) for p in rnd.points)
    lo, hi = rnd.points[0], rnd.points[-1]
    whole = logs[hi][:blocks] - logs[lo][:blocks]
    complete = int(np.sum(~np.isnan(whole)))
    at_max = blocks >= levels.max_blocks
    gate = None
    direction = rnd.direction
    if rnd.gate:
        gate = estimate(lo, hi, whole, levels.level(levels.alpha))
        if not gate.rejected:
            if gate.equivalent(levels.smallest):
                why = (
                    f"the series' change {_describe(gate)} lies inside ±{100 * levels.smallest:g}%"
                )
                return Judgement(blocks, EQUIVALENT, why, gate, (), ())
            if at_max:
                why = (
                    f"after {blocks} blocks the series' change is not decisive ({_describe(gate)})"
                )
                return Judgement(blocks, NO_CHANGE, why, gate, (), ())
            return Judgement(blocks, CONTINUE, "the gate is undecided", gate, (), ())
        direction = gate.sign
    segs = rnd.segments
    level = levels.level(levels.alpha / planned_rounds(len(effective) - 1) / len(segs))
    steps = []
    rests: list[Estimate | None] = []
    contrasts: list[Estimate | None] = []
    for a, b in segs:
        d = logs[b][:blocks] - logs[a][:blocks]
        steps.append(estimate(a, b, d, level))
        if (a, b) == (lo, hi):
            rests.append(None)
            contrasts.append(None)
        else:
            rests.append(estimate(lo, hi, whole - d, level))
            contrasts.append(estimate(a, b, d - (whole - d), level))
    total = gate if gate is not None else estimate(lo, hi, whole, level)
    rejected = [i for i, s in enumerate(steps) if s.rejected]
    against = [i for i in rejected if steps[i].sign != direction]

    def carries(i: int) -> bool:
        c = contrasts[i]
        if c is None:
            return True
        return c.rejected and c.sign == direction and total.rejected and total.sign == direction

    dominant = [i for i in rejected if i not in against and carries(i)]

    def out(
        outcome: str, why: str, chosen: Sequence[int] = (), nxt: Round | None = None
    ) -> Judgement:
        return Judgement(
            blocks, outcome, why, gate, tuple(steps), tuple(rests), tuple(chosen), nxt,
            tuple(contrasts),
        )  # fmt: skip

    if len(rejected) >= 2 or against:
        listed = ", ".join(_describe(steps[i]) for i in rejected)
        if rnd.full:
            return out(SEVERAL, f"more than one step moved it: {listed}", rejected)
        return out(
            FALLBACK,
            f"more than one segment moved it ({listed}): every prefix of {lo}..{hi} is booted",
            rejected,
            make_round(rnd.index + 1, effective, lo, hi, full=True, direction=direction),
        )
    if not dominant and not at_max:
        return out(CONTINUE, "no segment is decisive yet")
    if dominant or rejected:
        i = (dominant or rejected)[0]
        a, b = segs[i]
        rest = rests[i]
        rest_text = ""
        if rest is not None:
            shown = "" if dominant else ", not shown smaller than the step's change"
            rest_text = f"; the rest of {lo}..{hi}: {_change(rest)}{shown}"
        why = f"{_describe(steps[i])}{rest_text}"
        inner = [p for p in effective if a < p < b]
        if not inner:
            return out(NAMED, why, (i,))
        return out(
            NARROW, why, (i,), make_round(rnd.index + 1, effective, a, b, direction=steps[i].sign)
        )
    if rnd.full:
        why = (
            f"{lo}..{hi} moved it ({complete} blocks), but no step of it alone is decisive"
            f" after {blocks} blocks"
        )
        return out(SPREAD, why)
    return out(
        FALLBACK,
        f"no segment moved it alone after {blocks} blocks: every prefix of {lo}..{hi} is booted",
        (),
        make_round(rnd.index + 1, effective, lo, hi, full=True, direction=direction),
    )


def planned_rounds(steps: int) -> int:
    """The rounds a search over ``steps`` effective steps takes when one patch carries the
    change: each round divides the range into up to :data:`FANOUT` + 1 segments."""
    rounds, reach = 1, FANOUT + 1
    while reach < steps:
        rounds, reach = rounds + 1, reach * (FANOUT + 1)
    return rounds


def first_round(effective: Sequence[int]) -> Round:
    """The gate round over the whole series."""
    return make_round(1, effective, effective[0], effective[-1], gate=True)


@dataclass(frozen=True)
class Outcome:
    """The search's answer and the rounds behind it."""

    answer: str
    why: str
    rounds: tuple[tuple[Round, Judgement], ...]
    boots: int

    @property
    def named(self) -> tuple[int, ...]:
        """The prefixes whose patches the answer names (NAMED: one; SEVERAL: each)."""
        if self.answer not in (NAMED, SEVERAL):
            return ()
        rnd, j = self.rounds[-1]
        return tuple(rnd.segments[i][1] for i in j.chosen)


def effective_prefixes(images: Sequence[str]) -> list[int]:
    """Prefix 0 and every prefix whose image differs from the one before it."""
    return [0, *[k for k in range(1, len(images)) if images[k] != images[k - 1]]]


def search(
    effective: Sequence[int],
    block: Callable[[Round, int], Mapping[int, float]],
    levels: Levels,
) -> Outcome:
    """Run the whole search, drawing each block's log values from ``block(round, n)``
    (n: the block's number within the round, from 1)."""
    if len(effective) < 2:
        return Outcome(NO_IMAGE_CHANGE, "every prefix builds the same kernel image", (), 0)
    rnd: Round | None = first_round(effective)
    done: list[tuple[Round, Judgement]] = []
    boots = 0
    while rnd is not None:
        logs: dict[int, list[float]] = {p: [] for p in rnd.points}
        j: Judgement | None = None
        for n in range(1, levels.max_blocks + 1):
            values = block(rnd, n)
            boots += len(rnd.points)
            for p in rnd.points:
                logs[p].append(values[p])
            j = judge(rnd, {p: np.array(v) for p, v in logs.items()}, effective, levels)
            if j.outcome != CONTINUE:
                break
        assert j is not None
        done.append((rnd, j))
        if j.final:
            return Outcome(j.outcome, j.why, tuple(done), boots)
        rnd = j.next
    raise AssertionError("a round that is not final names the next")
