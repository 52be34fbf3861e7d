"""``korch bisect``: which patch of a series moved the headline metric.

The series is the patches a variant adds on top of the baseline: when the baseline's own
patches (same kernel source) are the variant's first patches, they stay applied in every
prefix; otherwise the whole of the variant's series is searched and prefix 0 is its source
without patches. Prefix ``k`` is a variant of the experiment with the first ``k`` patches of
the range; every prefix is built (incrementally, in one object directory; cached like any
build), and prefixes whose kernel images are byte for byte equal are one kernel, so a patch
that leaves the image as it was is excluded without a boot.

The search (:mod:`orchestrator.stats.attribution`) is a sequence of rounds; each round is an
ordinary blocked, sequential run of its prefixes in a directory of its own, judged after
every block. The bisect directory::

    OUT/bisect.json        settings, patches, images, rounds and the answer (the JSON report)
    OUT/bisect.md          the report in Markdown, with a step chart in text
    OUT/bisect.html        the report with an SVG step chart
    OUT/rounds/<n>/        round n: a korch run directory (run.json, results/, boot/, ...)

Running the same command again with the same ``--out`` resumes: rounds already judged are
read back from their results, an interrupted round completes its missing boots, and
nothing that was measured is measured again.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import build, config, run, series
from . import plan as plans
from .checks import tally
from .config import Experiment, Variant
from .errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, KorchError, UserError
from .fsutil import cache_root, now, write_json
from .metrics import find
from .results import ResultsFile
from .rundir import RunDir
from .stats import attribution as attr
from .stats import extract
from .stats import inference as inf
from .stats.boots import boot_values
from .workloads.api import metric_set

FILE = "bisect.json"
SCHEMA = 1
ALPHA = 0.05  # as korch run's verdicts: the gate's, and the localisation's own


@dataclass(frozen=True)
class Settings:
    """What a bisect does; saved in bisect.json so that a resumed bisect does the same."""

    experiment_file: str
    variant: str
    headline: str
    max_blocks: int
    runs: int
    duration_s: float
    accel: str
    alpha: float
    smallest_effect_pct: float
    headline_unit: str = ""  # as the workload declares it, for the report


@dataclass(frozen=True)
class Patch:
    """One patch of the searched range, 1-based ``number`` within the range."""

    number: int
    file: str
    subject: str


def prefix_name(variant: str, k: int) -> str:
    """The variant name of prefix ``k`` (``<variant>.<k>``, a valid variant name)."""
    return f"{variant}.{k}"


def _read(spec: config.SeriesSpec) -> list[series.PatchFile]:
    scratch = Path(tempfile.mkdtemp(prefix="korch-bisect-"))
    try:
        return series.read_series(spec, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def series_range(exp: Experiment, name: str) -> tuple[Variant, int, int]:
    """The variant to search, how many of its first patches the baseline shares (kept in
    every prefix), and how many patches follow them (the range). Errors name what to do."""
    v = exp.variant(name)
    if name == exp.baseline:
        others = [x.name for x in exp.variants if x.name != exp.baseline]
        raise UserError(
            f"{exp.path}: {name!r} is the baseline; bisect searches a candidate's series",
            hint=f"give --variant {others[0]}" if others else "add a variant with a series",
        )
    patches = _read(v.series)
    common = 0
    if exp.source_of(name) == exp.source_of(exp.baseline):
        base = _read(exp.variant(exp.baseline).series)
        if len(base) <= len(patches) and all(
            a.sha256 == b.sha256 for a, b in zip(base, patches, strict=False)
        ):
            common = len(base)
    if len(patches) - common < 1:
        raise UserError(
            f"{exp.path}: variant {name!r} adds no patch to search"
            + (f" beyond the baseline's {common}" if common else ""),
            hint="bisect needs a variant whose series has patches (variants[].patches or"
            " variants[].series)",
        )
    return v, common, len(patches) - common


def prefix_experiment(exp: Experiment, v: Variant, common: int, n: int) -> Experiment:
    """``exp`` with one variant per prefix 0..n of ``v``'s range (prefix 0 the baseline)."""
    variants = tuple(
        Variant(
            name=prefix_name(v.name, k),
            description=f"{v.name} with the first {k} of its {n} patches",
            series=replace(v.series, first=common + k),
            kconfig=v.kconfig,
            source=v.source,
        )
        for k in range(n + 1)
    )
    return replace(exp, variants=variants, baseline=variants[0].name, matrix=())


# ---------------------------------------------------------------- state


class BisectDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def state(self) -> Path:
        return self.root / FILE

    def round(self, index: int) -> Path:
        return self.root / "rounds" / str(index)

    def load(self) -> dict[str, Any] | None:
        if not self.state.exists():
            return None
        try:
            obj = json.loads(self.state.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(
                f"{self.state}: not readable as a korch bisect ({exc})",
                hint="choose another --out; the rounds' run directories are kept",
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("settings"), dict):
            raise UserError(f"{self.state}: not a korch bisect (no 'settings' object)")
        return obj


def logs_by_block(
    results: dict[str, ResultsFile], names: list[str], headline: str
) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
    """Each side's per-block log value of the headline (NaN where a block has none), over
    blocks 1..the last block any side reached."""
    per: dict[str, dict[int, float]] = {}
    for name in names:
        res = results.get(name)
        if res is None or not res.runs:
            per[name] = {}
            continue
        data = extract(res)
        m = find(data.metrics, headline)
        bv = boot_values(data, by_block=True)[headline]
        per[name] = dict(zip(bv.blocks.tolist(), bv.log(m).tolist(), strict=True))
    last = max((b for d in per.values() for b in d), default=0)
    # a block counts once every side has its value: the judge compares blocks, and a block
    # under way (some sides booted) is not one yet
    complete = [b for b in range(1, last + 1) if all(b in per[n] for n in names)]
    top = max(complete, default=0)
    return {n: np.array([per[n].get(b, math.nan) for b in range(1, top + 1)]) for n in names}


# ---------------------------------------------------------------- the command


class Bisect:
    """Carries out one bisect into one directory."""

    def __init__(
        self,
        exp: Experiment,
        settings: Settings,
        span: tuple[Variant, int, int],
        out: Path,
        progress: build.Progress,
        reproduce: str,
        console: Any,
        cache: Path | None = None,
    ) -> None:
        self.exp = exp
        self.settings = settings
        self.dirs = BisectDir(out)
        self.progress = progress
        self.reproduce = reproduce
        self.console = console
        self.cache = cache or cache_root()
        self.levels = attr.Levels(
            settings.alpha, settings.max_blocks, settings.smallest_effect_pct / 100
        )
        self.variant, self.common, self.n = span  # from series_range
        self.pexp = prefix_experiment(exp, self.variant, self.common, self.n)
        self.state: dict[str, Any] = {}

    def names(self, points: Iterable[int]) -> list[str]:
        return [prefix_name(self.settings.variant, k) for k in points]

    def save(self) -> None:
        write_json(self.dirs.state, self.state)

    def start(self) -> None:
        """Write bisect.json, or check that the one there was made with these settings."""
        self.dirs.root.mkdir(parents=True, exist_ok=True)
        old = self.dirs.load()
        mine = asdict(self.settings)
        # a setting an older bisect.json lacks is not a difference
        differ = sorted(
            k for k in mine if old is not None and old["settings"].get(k, mine[k]) != mine[k]
        )
        if differ:
            raise UserError(
                f"{self.dirs.root} holds a bisect with other settings ({', '.join(differ)})",
                hint="run the same command to resume it, or choose another --out",
            )
        self.state = old or {
            "schema": SCHEMA,
            "settings": mine,
            "reproduce": self.reproduce,
            "created": now(),
        }
        self.state["range"] = {
            "variant": self.settings.variant,
            "kept": self.common,
            "patches": self.n,
            "series": self.variant.series.describe(),
        }
        self.save()

    def build_prefixes(self) -> dict[int, build.Build]:
        """Build prefix 0..n in order (each on the one before, in one object directory)."""
        start = time.monotonic()
        builder = build.Builder(self.pexp, self.cache, self.progress)
        builds = builder.build_all(self.names(range(self.n + 1)))
        out = {k: builds[prefix_name(self.settings.variant, k)] for k in range(self.n + 1)}
        full = out[self.n].metadata.get("patches") or []
        patches = [
            Patch(k, str(p.get("file", "")), str(p.get("subject", "")))
            for k, p in enumerate(full[self.common :], 1)
        ]
        images = [out[k].metadata["hashes"]["bzImage"] for k in range(self.n + 1)]
        self.state["patches"] = [asdict(p) for p in patches]
        self.state["images"] = images
        self.state["effective"] = attr.effective_prefixes(images)
        self.state["kernels"] = {
            str(k): {
                "build_key": b.key,
                "kernel_release": b.metadata.get("kernel_release"),
                "objects_compiled": b.objects_compiled,
                "cached": b.cached,
            }
            for k, b in out.items()
        }
        self.state.setdefault("timings", {})["build_s"] = round(time.monotonic() - start, 1)
        self.save()
        return out

    def round_runner(self, rnd: attr.Round) -> run.Runner:
        names = self.names(rnd.points)
        rexp = replace(self.pexp, baseline=names[0])
        s = self.settings
        plan = plans.make_plan(
            rexp,
            runs=s.runs,
            duration_s=s.duration_s,
            variants=names,
            accel=s.accel,
            until_decisive=True,
            max_blocks=s.max_blocks,
        )
        plan = replace(plan, order_seed=rnd.index, headline=s.headline)
        return run.Runner(rexp, plan, self.dirs.round(rnd.index), self.progress, self.reproduce,
                          cache=self.cache)  # fmt: skip

    def judge(self, rnd: attr.Round, results: dict[str, ResultsFile]) -> attr.Judgement:
        names = self.names(rnd.points)
        logs = logs_by_block(results, names, self.settings.headline)
        by_point = {k: logs[n] for k, n in zip(rnd.points, names, strict=True)}
        return attr.judge(rnd, by_point, self.state["effective"], self.levels)

    def run_round(self, rnd: attr.Round) -> tuple[attr.Judgement, dict[str, ResultsFile]]:
        runner = self.round_runner(rnd)
        runner.prepare({"bisect_round": rnd.as_dict()})
        names = self.names(rnd.points)
        builds = runner.build_kernels()
        results = {
            n: ResultsFile.load(runner.dirs.results(n))
            for n in names
            if runner.dirs.results(n).exists()
        }
        if len(results) == len(names):
            j = self.judge(rnd, results)
            if j.outcome != attr.CONTINUE:
                return j, results  # judged before an interruption: nothing more to boot
        self.progress.stage(
            f"(round {rnd.index})",
            f"prefixes {', '.join(map(str, rnd.points))}, up to {self.settings.max_blocks} blocks",
        )

        def on_block(block: int, res: dict[str, ResultsFile]) -> str | None:
            j = self.judge(rnd, res)
            self.console.print(f"round {rnd.index}, block {block}: {j.outcome}: {j.why}")
            return None if j.outcome == attr.CONTINUE else f"{j.outcome} after {block} blocks"

        runner.on_block = on_block
        results = runner.bench(builds)
        return self.judge(rnd, results), results

    def execute(self) -> attr.Outcome:
        self.start()
        self.build_prefixes()
        effective = self.state["effective"]
        t0 = time.monotonic()
        if len(effective) < 2:
            out = attr.Outcome(
                attr.NO_IMAGE_CHANGE,
                f"all {self.n + 1} prefixes build the same kernel image: no patch of the"
                " range can move the metric",
                (),
                0,
            )
            self.finish(out, [])
            return out
        rnd: attr.Round | None = attr.first_round(effective)
        done: list[tuple[attr.Round, attr.Judgement]] = []
        self.state["checks"] = {}  # a resumed bisect goes through its rounds again
        boots = 0
        values: list[dict[str, Any]] = []
        while rnd is not None:
            j, results = self.run_round(rnd)
            done.append((rnd, j))
            boots += sum(len({r.get("boot") for r in res.runs}) for res in results.values())
            values.append(self.round_values(rnd, results))
            self.add_checks(rnd, results)
            self.state["rounds"] = [round_record(r, jj) for r, jj in done]
            self.save()
            if j.final:
                break
            rnd = j.next
        self.state.setdefault("timings", {})["rounds_s"] = round(time.monotonic() - t0, 1)
        last = done[-1][1]
        out = attr.Outcome(last.outcome, last.why, tuple(done), boots)
        self.finish(out, values)
        return out

    def round_values(self, rnd: attr.Round, results: dict[str, ResultsFile]) -> dict[str, Any]:
        """The headline's boot values per prefix in this round (for the step chart)."""
        out: dict[str, Any] = {}
        for k, name in zip(rnd.points, self.names(rnd.points), strict=True):
            res = results.get(name)
            if res is None or not res.runs:
                continue
            bv = boot_values(extract(res), by_block=True)[self.settings.headline]
            out[str(k)] = [float(v) for v in bv.values if math.isfinite(v)]
        return out

    def add_checks(self, rnd: attr.Round, results: dict[str, ResultsFile]) -> None:
        """The correctness checks' results of this round's boots, added per prefix to
        ``state["checks"]``: test -> prefix -> boots per status."""
        found = self.state.setdefault("checks", {})
        for k, name in zip(rnd.points, self.names(rnd.points), strict=True):
            res = results.get(name)
            if res is None:
                continue
            tests = {t for b in res.boots if isinstance(b, dict) for t in b.get("checks") or {}}
            for test in sorted(tests):
                mine = found.setdefault(test, {}).setdefault(str(k), {})
                for status, n in tally(res.boots, test).counts.items():
                    mine[status] = mine.get(status, 0) + n

    def finish(self, out: attr.Outcome, values: list[dict[str, Any]]) -> None:
        named = list(out.named)
        self.state["answer"] = {
            "kind": out.answer,
            "why": out.why,
            "named": named,
            "boots": out.boots,
        }
        per: dict[str, list[float]] = {}
        for v in values:
            for k, vals in v.items():
                per.setdefault(k, []).extend(vals)
        self.state["values"] = per
        self.state["finished"] = now()
        self.save()


def round_record(rnd: attr.Round, j: attr.Judgement) -> dict[str, Any]:
    return {
        **rnd.as_dict(),
        "blocks": j.blocks,
        "outcome": j.outcome,
        "why": j.why,
        "gate": j.gate.as_dict() if j.gate else None,
        "steps": [s.as_dict() for s in j.steps],
        "rests": [r.as_dict() if r else None for r in j.rests],
        "contrasts": [c.as_dict() if c else None for c in j.contrasts],
        "chosen": list(j.chosen),
    }


def exit_code(state: dict[str, Any], better: str) -> int:
    """As ``korch run``: 1 when a correctness check passes on the baseline and fails on the
    whole series, or when the series regressed the headline; 3 when the series' change is
    not decided, else 0 (improved, equivalent, or no image change)."""
    from .report.bisect import check_regressed

    if check_regressed(state):
        return EXIT_REGRESSION
    answer = state.get("answer") or {}
    kind = answer.get("kind")
    if kind in (attr.EQUIVALENT, attr.NO_IMAGE_CHANGE):
        return EXIT_OK
    if kind == attr.NO_CHANGE:
        return EXIT_INCONCLUSIVE
    gate = (state.get("rounds") or [{}])[0].get("gate") or {}
    ratio = gate.get("ratio")
    if ratio is None:
        return EXIT_INCONCLUSIVE
    worse = ratio > 1.0 if better == "lower" else ratio < 1.0
    return EXIT_REGRESSION if worse else EXIT_OK


@dataclass(frozen=True)
class BisectRequest:
    """What ``korch bisect`` was asked: the experiment (None: the embedded default), the
    variant whose series to search (None: the only one with patches), the plan options
    that apply (runs, duration, accel, max_blocks), the output directory and the command
    line after ``korch`` (for the reproduce command)."""

    experiment: Path | None = None
    variant: str | None = None
    overrides: plans.Overrides = field(default_factory=plans.Overrides)
    out: Path | None = None
    argv: tuple[str, ...] = ()


def main(req: BisectRequest, console: Any) -> int:
    """``korch bisect``: build every prefix, search, report; returns the exit code."""
    from .report import bisect as bisect_report
    from .ui import progress_for

    exp = config.load(req.experiment) if req.experiment else config.load_default()
    o = req.overrides
    if exp.matrix:
        raise UserError(
            f"{exp.path}: bisect searches one configuration; this experiment has a matrix",
            hint="copy the experiment without 'matrix' and with the cell's settings",
        )
    name = req.variant
    if name is None:
        cands = [v.name for v in exp.variants if v.name != exp.baseline]
        with_patches = [c for c in cands if exp.variant(c).series != config.SeriesSpec("files")]
        if not with_patches:
            raise UserError(
                f"{exp.path}: no variant has a series of patches to search",
                hint="bisect needs a variant with 'patches' or 'series' (docs/bisect.md)",
            )
        if len(with_patches) != 1:
            raise UserError(
                f"{exp.path}: say which variant's series to search",
                hint="give --variant NAME (one of: " + ", ".join(cands) + ")",
            )
        name = with_patches[0]
    w = exp.workload
    headline = w.headline or w.declaration.default_headline(w.params)
    # the plan's checks (finite, positive, within the schema's limits) apply here too
    plan = plans.make_plan(
        exp,
        runs=o.runs,
        duration_s=o.duration_s,
        accel=o.accel,
        until_decisive=True,
        max_blocks=o.max_blocks,
    )
    assert plan.max_blocks is not None
    need = inf.blocks_to_reach(inf.sequential_level(ALPHA, plan.max_blocks))
    if need > plan.max_blocks:
        raise UserError(
            f"--max-blocks {plan.max_blocks}: a round of at most {plan.max_blocks} blocks can"
            f" never decide whether the series moved {headline} (the test needs {need} blocks"
            " that agree)",
            hint=f"give --max-blocks {max(need + 2, 12)} or more (the default is the"
            f" experiment's {w.blocks})",
        )
    workload = {"duration_s": plan.duration_s, **w.params}
    settings = Settings(
        experiment_file=str(exp.path),
        variant=name,
        headline=headline,
        max_blocks=plan.max_blocks,
        runs=plan.runs,
        duration_s=plan.duration_s,
        accel=plan.accel,
        alpha=ALPHA,
        smallest_effect_pct=float(w.smallest_effect_pct),
        headline_unit=find(metric_set(w.declaration, workload), headline).unit,
    )
    span = series_range(exp, name)  # its errors come before anything is written
    out = req.out or Path("runs") / (f"{exp.name}-bisect-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    full = list(req.argv) if req.out else [*req.argv, "--out", str(out)]
    reproduce = run.reproduce_command(full)
    console.print(f"bisect directory: {out}")
    again = shlex.join(["korch", *full])
    try:
        with progress_for(console) as progress, RunDir(out).lock():
            b = Bisect(exp, settings, span, out, progress, reproduce, console)
            b.execute()
    except (KorchError, KeyboardInterrupt, OSError) as exc:
        if not isinstance(exc, UserError) and any(out.glob("rounds/*/results/*.json")):
            console.print(f"[bold]completed boots are kept in {out}; finish with: {again}[/]")
        raise
    state = b.state
    written = bisect_report.write(out, state)
    bisect_report.render_terminal(state, console)
    console.print(f"reports written to {', '.join(str(p) for p in written)}")
    console.print(f"the same command resumes or reports again: {again}")
    return exit_code(state, find(metric_set(w.declaration, workload), headline).better)
