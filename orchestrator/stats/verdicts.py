"""Verdicts: each candidate against the baseline, at the level of boots and blocks.

How korch avoids calling noise a change:

1. **The unit is the boot** (:mod:`orchestrator.stats.boots`): each boot gives one value per
   metric; runs inside a boot only make that value more precise.
2. **Blocks pair the variants.** When both sides come from one blocked run (every run carries
   its block, and the run ids agree), the comparison is paired: the per-block log ratio
   ``d_b`` cancels whatever the block's boots shared (host drift, a busy neighbour), and
   Wilcoxon's signed-rank test, exact as a sign-flip randomization test, decides; the
   interval is its Hodges-Lehmann inversion (:mod:`orchestrator.stats.inference`). Without
   blocks (results of separate runs, imported data) the comparison falls back to an exact
   rank-sum test over boot values, and the report says so.
3. **One error budget.** The headline metric, declared in the experiment before the run, is
   the one confirmatory test: at ``alpha`` (split evenly over the candidates), and at the
   group-sequential level when the run looked after every block (``--until-decisive``). The
   overall verdict and the exit code depend on it alone. Every other metric is exploratory:
   Holm-adjusted among themselves and labelled so. A headline named on the command line that
   differs from the declared one is marked as chosen after the run.
4. **Four outcomes.** *equivalent* when the whole interval lies inside the smallest effect of
   interest (``workload.smallest_effect_pct``, default 5%) and, for a metric of discrete
   values, no compared pair ties while others differ; *improved* or *regressed* when
   the test rejects "no change" (the interval then excludes it); *inconclusive* otherwise,
   including every design that cannot reach the level at all (5 blocks cannot reach 0.05,
   3 boots against 3 cannot reach 0.1), with the number of blocks still needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..checks import CheckGate, gate
from ..errors import UserError
from ..metrics import Metric, find, hang_rate
from ..results import ResultsFile
from ..workloads import registry
from ..workloads.registry import metrics_of
from . import inference as inf
from .boots import BootValues, boot_values, pair
from .caveats import caveats
from .comparability import Difference, _baseline, _is_emulated, comparability
from .design import DesignAdvice, Stratum, design_advice
from .design import strata as shard_strata
from .options import StatsOptions, Verdict
from .resampling import holm
from .summary import Summary, summarize
from .values import VariantData, extract

DECISIVE = frozenset({Verdict.IMPROVED, Verdict.REGRESSED, Verdict.EQUIVALENT})


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one candidate against the baseline, at the boot level.

    ``ratio`` is exp of the Hodges-Lehmann estimate of the log ratio (candidate over
    baseline), ``ci_low``/``ci_high`` its interval at ``1 - level``; ``p_value`` the exact
    test's, ``p_adjusted`` after Holm (exploratory metrics) or equal to it (the headline).
    """

    metric: str
    family: str  # "headline" (confirmatory) or "exploratory"
    method: str  # "paired" (per-block log ratios), "unpaired" (boot values) or "none"
    n_baseline: int  # completed runs
    n_candidate: int
    boots_baseline: int  # boots (or blocks) with a value
    boots_candidate: int
    blocks: int  # blocks paired (0 for an unpaired comparison)
    baseline_median: float | None  # median over boots of the boot values
    candidate_median: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    level: float
    verdict: Verdict
    reason: str
    more_blocks: int | None = None  # blocks still needed for a decision, when estimable
    unpaired_boots: tuple[str, ...] = ()
    log_ratios: tuple[float, ...] = ()  # per paired block, for charts and comparison.json
    post_hoc: bool = False  # a headline chosen after the run
    # (pairs of values that tie exactly, pairs compared): blocks for a paired comparison,
    # every baseline boot against every candidate boot for an unpaired one
    ties: tuple[int, int] = (0, 0)
    # the metric's definition, as the workload declared it
    spec: Metric = field(default_factory=hang_rate, compare=False, repr=False)

    @property
    def change_pct(self) -> float | None:
        """(ratio - 1) in percent."""
        return None if self.ratio is None else 100.0 * (self.ratio - 1.0)

    @property
    def units(self) -> str:
        """ "16 blocks" or "3 + 3 boots": what the test counted."""
        if self.method == "paired":
            return f"{self.blocks} block{'s' if self.blocks != 1 else ''}"
        total = self.boots_baseline + self.boots_candidate
        return f"{self.boots_baseline} + {self.boots_candidate} boot{'s' if total != 1 else ''}"


@dataclass(frozen=True)
class CandidateComparison:
    """A candidate against the baseline: every metric, and whether they can be compared."""

    candidate: str
    verdict: Verdict
    metrics: tuple[MetricComparison, ...]
    differences: tuple[Difference, ...]
    design: DesignAdvice | None = None
    strata: tuple[Stratum, ...] = ()

    @property
    def comparable(self) -> bool:
        """True when no comparability field differs."""
        return not self.differences

    @property
    def headline(self) -> MetricComparison | None:
        """The headline metric's comparison (absent only when neither side has the metric)."""
        return next((m for m in self.metrics if m.family == "headline"), None)

    def metric(self, key: str) -> MetricComparison | None:
        """The comparison of metric ``key``, if it was compared."""
        return next((m for m in self.metrics if m.metric == key), None)


@dataclass(frozen=True)
class Comparison:
    """Everything a report shows: summaries, comparisons, warnings, the A/A noise floor."""

    experiment: str
    baseline: str
    headline: str
    options: StatsOptions
    summaries: tuple[Summary, ...]  # the baseline first, then the candidates
    candidates: tuple[CandidateComparison, ...]
    warnings: tuple[str, ...]
    provenance: Mapping[str, Mapping[str, Any]]
    emulated: bool
    noise_floor: Comparison | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    smallest_effect: float = 0.05
    sequential: Mapping[str, Any] | None = None  # {"max_blocks", "level"} of --until-decisive
    declared_headline: str | None = None
    # the correctness checks compared between the sides (orchestrator/checks.py)
    checks: tuple[CheckGate, ...] = ()
    # the workload's metrics, in its order (orchestrator/workloads), the hang rate last
    metrics: tuple[Metric, ...] = ()
    workload: str = "maps-contention"

    def metric_def(self, key: str) -> Metric:
        """The definition of metric ``key`` (:class:`UserError` when the workload has none)."""
        return find(self.metrics, key)

    @property
    def checks_regressed(self) -> bool:
        """True when a check passes on the baseline and fails on a candidate."""
        return any(g.regressed for g in self.checks)

    @property
    def comparable(self) -> bool:
        """True when every candidate is comparable with the baseline."""
        return all(c.comparable for c in self.candidates)

    @property
    def forced(self) -> bool:
        """True when verdicts were given although the sides are not comparable."""
        return self.options.force and not self.comparable

    @property
    def post_hoc(self) -> bool:
        """True when the headline was chosen after the run (not the one declared)."""
        return self.declared_headline is not None and self.declared_headline != self.headline

    @property
    def verdict(self) -> Verdict:
        """Overall, from the headline alone: regressed if any candidate regressed, else
        inconclusive if any is, else improved if any improved, else equivalent."""
        found = {c.verdict for c in self.candidates}
        for v in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.IMPROVED):
            if v in found:
                return v
        return Verdict.EQUIVALENT

    def summary(self, variant: str) -> Summary:
        """The summary of ``variant``."""
        return next(s for s in self.summaries if s.variant == variant)


# ---------------------------------------------------------------- declared settings


def _workload(r: ResultsFile) -> Mapping[str, Any]:
    w = r.provenance.get("workload") if isinstance(r.provenance, Mapping) else None
    return w if isinstance(w, Mapping) else {}


def _design(r: ResultsFile) -> Mapping[str, Any]:
    d = r.provenance.get("design") if isinstance(r.provenance, Mapping) else None
    return d if isinstance(d, Mapping) else {}


def declared_headline(
    results: Sequence[ResultsFile], metrics: Sequence[Metric] | None = None
) -> str | None:
    """The headline the experiment declared before the run (in the results' provenance)."""
    for r in results:
        named = _workload(r).get("headline")
        if named:
            return find(
                metrics if metrics is not None else metrics_of(r.provenance), str(named)
            ).key
    return None


def _one_workload(datas: Sequence[VariantData]) -> tuple[str, tuple[Metric, ...]]:
    """The workload every side was measured with, and its metrics (the baseline's
    parameters: a metric of a candidate's that the baseline lacks is left out, and one the
    candidate lacks is not compared for it)."""
    names = {
        str(registry.section(d.results.provenance).get("name") or registry.DEFAULT) for d in datas
    }
    if len(names) > 1:
        raise UserError(
            "the results were measured with different workloads: " + ", ".join(sorted(names)),
            hint="compare results of one experiment's run",
        )
    return names.pop(), datas[0].metrics


def _smallest_effect(results: Sequence[ResultsFile], options: StatsOptions) -> float:
    if options.smallest_effect is not None:
        return options.smallest_effect
    for r in results:
        pct = _workload(r).get("smallest_effect_pct")
        if isinstance(pct, int | float) and not isinstance(pct, bool) and 0 < pct < 100:
            return float(pct) / 100
    return 0.05


def _max_blocks(results: Sequence[ResultsFile], options: StatsOptions) -> int | None:
    if options.max_blocks is not None:
        return options.max_blocks
    for r in results:
        seq = _design(r).get("sequential")
        if isinstance(seq, Mapping) and isinstance(seq.get("max_blocks"), int):
            return int(seq["max_blocks"])
    return None


def _block_hosts(d: VariantData) -> dict[int, set[str]]:
    """The hosts that booted each block of ``d``: a boot's own ``host`` (shards merged from
    several machines carry it), else the results file's."""
    default = str(d.results.provenance.get("host"))
    out: dict[int, set[str]] = {}
    for boot in d.results.boots:
        block = boot.get("block")
        if isinstance(block, int):
            out.setdefault(block, set()).add(str(boot.get("host") or default))
    for block in d.run_blocks.tolist():
        if block >= 1 and block not in out:
            out[block] = {default}
    return out


def _pairable(datas: Sequence[VariantData]) -> bool:
    """Blocked results of one run whose every block was booted on one host: every run
    knows its block, the run ids agree, and no block has boots on two machines. A block's
    boots share a host and a stretch of time, so a difference between machines (shards on
    different runners) cancels in the block's ratio; the same plan benched one variant per
    machine has block numbers but no such pairs."""
    ids = {d.results.provenance.get("run_id") for d in datas}
    if len(ids) != 1:
        return False
    hosts: dict[int, set[str]] = {}
    for d in datas:
        blocks = [*d.run_blocks.tolist(), *(b for _, b in d.hung_runs)]
        if not blocks or min(blocks) < 1:
            return False
        for block, names in _block_hosts(d).items():
            hosts.setdefault(block, set()).update(names)
    return all(len(names) == 1 for names in hosts.values())


# ---------------------------------------------------------------- one metric


def _median(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else None


def compare_metric(
    m: Metric,
    family: str,
    btab: BootValues,
    ctab: BootValues,
    paired: bool,
    level: float,
    names: tuple[str, str] = ("baseline", "candidate"),
    runs: tuple[int, int] = (0, 0),
) -> MetricComparison | None:
    """The test and interval of one metric from the two sides' boot values (``runs``: the
    completed runs behind them, for the report); the verdict is left to :func:`decide`.
    ``None`` when neither side has a value."""
    bv, cv = btab.values, ctab.values
    nb, nc = int(np.sum(~np.isnan(bv))), int(np.sum(~np.isnan(cv)))
    if nb == 0 and nc == 0:
        return None
    common: dict[str, Any] = dict(
        metric=m.key, spec=m, family=family, n_baseline=runs[0], n_candidate=runs[1],
        boots_baseline=nb, boots_candidate=nc,
        baseline_median=_median(bv), candidate_median=_median(cv), level=level,
    )  # fmt: skip
    if nb == 0 or nc == 0:
        side = "baseline" if nb == 0 else "candidate"
        why = "summary-only runs, no histograms" if m.needs_histogram else "no completed boot"
        return MetricComparison(
            **common, method="none", blocks=0, ratio=None, ci_low=None, ci_high=None,
            p_value=None, p_adjusted=None, verdict=Verdict.INCONCLUSIVE,
            reason=f"no values on the {side} side ({why})",
        )  # fmt: skip
    if paired:
        pairing = pair(btab, ctab, m, *names)
        d = pairing.candidate - pairing.baseline
        p = inf.signed_rank_test(d) if d.size else 1.0
        est, low, high = inf.paired_interval(d, level)
        return MetricComparison(
            **common, method="paired", blocks=int(d.size),
            ratio=inf.ratio(est), ci_low=inf.ratio(low), ci_high=inf.ratio(high),
            p_value=p, p_adjusted=p, verdict=Verdict.INCONCLUSIVE, reason="",
            unpaired_boots=pairing.unpaired, log_ratios=tuple(float(x) for x in d),
            ties=(int(np.sum(d == 0.0)), int(d.size)),
        )  # fmt: skip
    x = btab.log(m)
    y = ctab.log(m)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    p = inf.rank_sum_test(x, y)
    est, low, high = inf.unpaired_interval(x, y, level)
    return MetricComparison(
        **common, method="unpaired", blocks=0,
        ratio=inf.ratio(est), ci_low=inf.ratio(low), ci_high=inf.ratio(high),
        p_value=p, p_adjusted=p, verdict=Verdict.INCONCLUSIVE, reason="",
        ties=(int(np.sum(x[:, None] == y[None, :])), int(x.size * y.size)),
    )  # fmt: skip


def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "?"
    if ratio == math.inf:
        return "+inf"
    return f"{100 * (ratio - 1):+.1f}%"


def _interval_text(mc: MetricComparison) -> str:
    if mc.ci_high is not None and mc.ci_high == math.inf and not mc.ci_low:
        return "unbounded"
    return f"[{_pct(mc.ci_low)}, {_pct(mc.ci_high)}]"


def _discrete_ties(mc: MetricComparison) -> int:
    """Pairs of values that tie exactly, for a metric of discrete values (a count, a
    pass/fail result, the hang rate) whose other pairs differ; 0 otherwise. Ties at zero
    pull every Walsh average towards it, so the interval can be [0, 0] although some blocks
    differ widely (ci/bench/kinds.py: half of all A/A comparisons of a 10%-failing
    pass/fail metric)."""
    tied, compared = mc.ties
    return tied if mc.spec.discrete and 0 < tied < compared else 0


def decide(
    mc: MetricComparison, smallest: float, comparable: bool = True, force: bool = False
) -> MetricComparison:
    """The verdict of one metric comparison, from its (adjusted) p and its interval."""
    if mc.method == "none":
        return mc
    if mc.ratio is None:
        return replace(
            mc, reason=f"no estimate of the change from {mc.units}: the values are undefined"
        )
    if not comparable and not force:
        return replace(
            mc,
            reason="the sides are not comparable (see what differs); --force gives verdicts anyway",
        )
    level = mc.level
    if mc.method == "paired":
        floor = inf.smallest_paired_p(mc.blocks)
        if floor > level:
            need = inf.blocks_to_reach(level)
            return replace(
                mc,
                more_blocks=need - mc.blocks,
                reason=f"{mc.units} cannot reach p < {level:.3g} (the exact test's smallest p"
                f" is {floor:.3g}); at least {need} blocks are needed, {need - mc.blocks} more",
            )
    else:
        floor = inf.smallest_unpaired_p(mc.boots_baseline, mc.boots_candidate)
        if floor > level:
            need = inf.boots_to_reach(level, (mc.boots_baseline, mc.boots_candidate))
            return replace(
                mc,
                reason=f"{mc.units} cannot reach p < {level:.3g} (the exact test's smallest p"
                f" is {floor:.3g}); at least {need} boots a side are needed, or a blocked run"
                f" of {inf.blocks_to_reach(level)} blocks, which also cancels drift",
            )
    assert mc.ci_low is not None and mc.ci_high is not None and mc.p_adjusted is not None
    where = f"{mc.units}, {mc.method}"
    interval = f"{100 * (1 - level):.3g}% interval {_interval_text(mc)}"
    adjusted = "Holm-adjusted " if mc.family == "exploratory" else ""
    p_text = f"{adjusted}p = {mc.p_adjusted:.3g}"
    inside = 1 / (1 + smallest) < mc.ci_low and mc.ci_high < 1 + smallest
    ties = _discrete_ties(mc)
    if inside and ties:
        return replace(
            mc,
            reason=f"{interval} lies inside ±{100 * smallest:g}%, but {ties} of"
            f" {mc.ties[1]} {'blocks' if mc.method == 'paired' else 'pairs of boots'} tie"
            " exactly: with discrete values the rank interval collapses onto the ties, too"
            f" narrow to call the sides equivalent; {where}",
        )
    if inside:
        return replace(
            mc,
            verdict=Verdict.EQUIVALENT,
            reason=f"{interval} lies inside ±{100 * smallest:g}% (the smallest effect of"
            f" interest); {where}",
        )
    rejected = mc.p_adjusted <= level and not (mc.ci_low <= 1.0 <= mc.ci_high)
    if rejected:
        better = (mc.ratio < 1.0) == (mc.spec.better == "lower")
        return replace(
            mc,
            verdict=Verdict.IMPROVED if better else Verdict.REGRESSED,
            reason=f"{_pct(mc.ratio)}, {interval}, {p_text} ≤ {level:.3g}; {where}",
        )
    if not (mc.ci_low <= 1.0 <= mc.ci_high):
        # the interval (unadjusted) excludes no change, but Holm's adjusted p does not
        return replace(
            mc,
            reason=f"{interval} excludes no change, but {p_text} misses {level:.3g} after"
            f" adjusting for every exploratory metric; {where}",
        )
    more: int | None = None
    if mc.method == "paired" and len(mc.log_ratios) >= 2 and mc.family == "headline":
        sd = float(np.std(mc.log_ratios, ddof=1))
        effect = max(abs(math.log(mc.ratio)) if mc.ratio > 0 else 0.0, math.log1p(smallest))
        wanted = inf.blocks_for(sd, effect, level)
        more = None if wanted is None else max(1, wanted - mc.blocks)
    hint = f"; about {more} more blocks would decide it" if more else ""
    return replace(
        mc,
        more_blocks=more,
        reason=f"{interval} holds both no change and changes beyond ±{100 * smallest:g}%"
        f" ({p_text}); {where}{hint}",
    )


# ---------------------------------------------------------------- the comparison


def _runs(data: VariantData, m: Metric) -> int:
    if m.key == "hang_rate":
        return int(data.boot_codes.size) + data.hangs
    values = data.values.get(m.key)
    return 0 if values is None else int(np.sum(~np.isnan(values)))


def adjust_exploratory(
    per_candidate: Sequence[Sequence[MetricComparison]],
) -> list[list[MetricComparison]]:
    """Holm's adjustment over every exploratory metric of every candidate: one family at
    alpha, so that an A/A run calls some exploratory metric changed at most alpha of the
    time. The headline keeps its own p (it is the one confirmatory test)."""
    members = [
        mc
        for found in per_candidate
        for mc in found
        if mc.family == "exploratory" and mc.p_value is not None and mc.method != "none"
    ]
    adjusted = holm([mc.p_value for mc in members if mc.p_value is not None])
    fixed = {id(mc): replace(mc, p_adjusted=a) for mc, a in zip(members, adjusted, strict=True)}
    return [[fixed.get(id(mc), mc) for mc in found] for found in per_candidate]


def compare(
    results: Sequence[ResultsFile],
    options: StatsOptions | None = None,
    *,
    noise_floor: Sequence[ResultsFile] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare every candidate's results with the baseline's.

    ``options.baseline`` or the files' common ``baseline`` field names the baseline; every
    other file is a candidate, in the order given. ``noise_floor`` takes the two results
    files of an A/A run (the baseline on both sides); their comparison is attached as
    :attr:`Comparison.noise_floor`. Raises :class:`UserError` for unusable input.
    """
    options = options or StatsOptions()
    baseline_name = _baseline(results, options)
    ordered = [r for r in results if r.variant == baseline_name] + [
        r for r in results if r.variant != baseline_name
    ]
    datas = [extract(r) for r in ordered]
    workload, metrics = _one_workload(datas)
    declared = declared_headline(ordered, metrics)
    default = registry.get(workload).default_headline(registry.section(ordered[0].provenance))
    headline = find(metrics, options.headline).key if options.headline else declared or default
    post_hoc = declared is not None and headline != declared
    smallest = _smallest_effect(ordered, options)
    max_blocks = _max_blocks(ordered, options)
    n_cand = max(1, len(ordered) - 1)
    head_level = options.alpha / n_cand  # Bonferroni over candidates: one budget
    sequential = None
    if max_blocks is not None:
        head_level = inf.sequential_level(head_level, max_blocks)
        sequential = {"max_blocks": max_blocks, "level": head_level}

    summaries = [summarize(d) for d in datas]
    paired = _pairable(datas)
    tables = [boot_values(d, by_block=paired) for d in datas]
    base, btabs = datas[0], tables[0]

    drafts: list[tuple[VariantData, list[MetricComparison], tuple[Difference, ...]]] = []
    lacking: dict[str, list[str]] = {}
    for cand, ctabs in zip(datas[1:], tables[1:], strict=True):
        found = []
        for m in metrics:
            if m.key not in ctabs:  # a command whose metrics: differ from the baseline's
                lacking.setdefault(cand.variant, []).append(m.key)
                continue
            family = "headline" if m.key == headline else "exploratory"
            level = head_level if family == "headline" else options.alpha
            runs = (_runs(base, m), _runs(cand, m))
            names = (base.variant, cand.variant)
            mc = compare_metric(m, family, btabs[m.key], ctabs[m.key], paired, level, names, runs)
            if mc is not None:
                found.append(replace(mc, post_hoc=post_hoc and family == "headline"))
        drafts.append((cand, found, comparability(base.results, cand.results)))

    adjusted = adjust_exploratory([found for _, found, _ in drafts])
    candidates = []
    for (cand, _, differences), found in zip(drafts, adjusted, strict=True):
        decided = tuple(decide(mc, smallest, not differences, options.force) for mc in found)
        head = next((mc for mc in decided if mc.family == "headline"), None)
        verdict = head.verdict if head is not None else Verdict.INCONCLUSIVE
        advice = None
        if head is not None:
            m = head.spec
            ctabs = tables[datas.index(cand)]
            advice = design_advice(head, m, base, cand, btabs[m.key], ctabs[m.key], smallest)
        strata: tuple[Stratum, ...] = ()
        if head is not None and paired:
            m = head.spec
            strata = shard_strata(
                base, btabs[m.key], tables[datas.index(cand)][m.key], m, head.level
            )
        candidates.append(
            CandidateComparison(cand.variant, verdict, decided, differences, advice, strata)
        )

    emulated = any(_is_emulated(r.provenance) for r in ordered)
    warnings = caveats(datas, summaries, emulated, paired, candidates)
    warnings += [
        f"'{name}' does not measure {', '.join(keys)}, which the baseline does: those metrics"
        " are not compared."
        for name, keys in lacking.items()
    ]
    if post_hoc:
        warnings.insert(
            0,
            f"Exploratory: the headline '{headline}' was chosen after the run (the experiment"
            f" declared '{declared}'); its verdict is not the run's confirmatory answer.",
        )
    for c in candidates:
        if c.headline is None:
            warnings.append(
                f"No side of '{c.candidate}' has values for the headline metric '{headline}'."
            )
    noise = None
    if noise_floor is not None:
        try:
            noise = compare_noise_floor(
                noise_floor, replace(options, baseline=None, force=True), headline
            )
        except UserError as exc:
            warnings.append(f"The A/A noise floor is not shown: {exc.message}.")
    if noise is not None:
        changed = [
            mc.metric
            for c in noise.candidates
            for mc in c.metrics
            if mc.verdict in (Verdict.IMPROVED, Verdict.REGRESSED)
        ]
        if changed:
            warnings.append(
                "The A/A run (the baseline against itself) found differences in "
                + ", ".join(changed)
                + ": the set-up is noisier than the statistics assume, or something differs"
                " between its sides; treat verdicts on these metrics with suspicion."
            )
    return Comparison(
        experiment=ordered[0].experiment,
        baseline=baseline_name,
        headline=headline,
        options=options,
        summaries=tuple(summaries),
        candidates=tuple(candidates),
        warnings=tuple(warnings),
        provenance={r.variant: r.provenance for r in ordered},
        emulated=emulated,
        noise_floor=noise,
        labels=dict(labels or {}),
        smallest_effect=smallest,
        sequential=sequential,
        declared_headline=declared,
        checks=gate(ordered, baseline_name),
        metrics=metrics,
        workload=workload,
    )


def compare_noise_floor(
    results: Sequence[ResultsFile], options: StatsOptions, headline: str | None = None
) -> Comparison:
    """Compare the two sides of an A/A run (the baseline kernel booted for both).

    Both files may carry the same variant name; the sides are relabelled ``A`` and ``B``:
    A is the file whose variant is its own baseline (``korch run --aa`` names the sides
    ``<baseline>`` and ``<baseline>-aa``), else the first given. ``options.baseline`` is
    ignored; ``headline`` defaults as in :func:`compare`.
    """
    if len(results) != 2:
        raise UserError(
            f"an A/A run has two results files, found {len(results)}",
            hint="the noise floor is read from RUNDIR/aa/results/*.json",
        )
    results = sorted(results, key=lambda r: r.variant != r.baseline)
    sides = [
        replace(r, variant=label, baseline="A")
        for r, label in zip(results, ("A", "B"), strict=True)
    ]
    labels = {"A": f"A ({results[0].variant})", "B": f"B ({results[1].variant})"}
    chosen = headline or options.headline
    return compare(sides, replace(options, headline=chosen, baseline=None), labels=labels)


def noise_floor_pct(comparison: Comparison, key: str) -> float | None:
    """Half-width in percent of the widest side of the A/A ratio interval for metric ``key``
    (how far two runs of the same kernel can land apart); ``None`` without A/A data."""
    if comparison.noise_floor is None or not comparison.noise_floor.candidates:
        return None
    mc = comparison.noise_floor.candidates[0].metric(key)
    if mc is None or mc.ci_low is None or mc.ci_high is None:
        return None
    if not (math.isfinite(mc.ci_low) and math.isfinite(mc.ci_high)) or mc.ci_low <= 0:
        return None
    return 100.0 * max(abs(mc.ci_low - 1.0), abs(mc.ci_high - 1.0))


def describe_headline(mc: MetricComparison | None) -> str:
    """One line for progress output: estimate, interval and verdict of a headline."""
    if mc is None:
        return "no headline values yet"
    if mc.ratio is None:
        return f"{mc.verdict}: {mc.reason}"
    return f"{_pct(mc.ratio)} {_interval_text(mc)} over {mc.units}: {mc.verdict}"
