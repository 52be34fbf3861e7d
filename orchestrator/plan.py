"""The plan of a run: what ``korch run`` (or ``korch plan``) will boot, saved in run.json.

A :class:`Plan` is an experiment's settings with the command line's overrides applied and
checked (:func:`make_plan`); ``--resume`` reads it back (:func:`load_plan`) and does exactly
the same, and ``--resume --blocks N`` extends it (:func:`extend_run`). The plan also draws the
order in which the sides boot in every block (:meth:`Plan.block_order`).
"""

from __future__ import annotations

import math
import random
import re
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import config
from .config import Experiment
from .errors import UserError
from .fsutil import now, write_json
from .rundir import CELLS_DIR, DEFAULT_CELL, RunDir


@dataclass(frozen=True)
class Plan:
    """What a run does; saved in run.json so that ``--resume`` does exactly the same."""

    experiment: str
    experiment_file: str
    variants: tuple[str, ...]  # the sides
    kernels: dict[str, str]  # side -> variant whose kernel it boots (differs for --aa)
    baseline: str
    blocks: int  # each side boots once per block; with until_decisive, the most blocks
    runs: int  # per boot
    duration_s: float
    cpus: int
    memory: str
    accel: str
    seed: int
    aa: bool
    headline: str | None = None
    order_seed: int = 1  # draws the order of the sides in each block
    smallest_effect_pct: float = 5.0  # the smallest change of the headline worth detecting
    until_decisive: bool = False  # stop after the first block whose comparison is decisive
    max_blocks: int | None = None  # with until_decisive: the most blocks to run
    budget_s: float | None = None  # start no block that would end past this (bench stage)
    shards: int = 1  # bench jobs the blocks are split into (korch plan --shards)
    shard: int | None = None  # the one shard this plan runs (1-based); None: every block
    workload_name: str = "maps-contention"  # a workload of orchestrator/workloads
    params: dict[str, Any] = field(default_factory=dict)  # its own parameters (JSON)

    def workload(self) -> dict[str, Any]:
        """The workload section of the results' provenance: what its declaration reads
        back (metrics, their worst values) and the report shows."""
        return {
            "name": self.workload_name,
            "runs": self.runs,
            "blocks": self.blocks,
            "duration_s": self.duration_s,
            **self.params,
            "headline": self.headline,
            "smallest_effect_pct": self.smallest_effect_pct,
        }

    @property
    def last_block(self) -> int:
        """The last block the bench loop may run: ``max_blocks`` bounds a sequential run."""
        if self.until_decisive and self.max_blocks:
            return self.max_blocks
        return self.blocks

    def shard_blocks(self, shard: int) -> range:
        """The blocks of ``shard`` (1-based) out of :attr:`shards`: contiguous, as even as
        can be, and whole chunks of k = len(sides) blocks where there are enough, so each
        shard keeps the balanced order (every side first once per chunk)."""
        if not 1 <= shard <= self.shards:
            raise ValueError(f"shard {shard} of {self.shards}")
        k = max(1, len(self.variants))
        unit = k if self.blocks >= self.shards * k else 1
        ends = [0]
        for i in range(1, self.shards):
            end = round(i * self.blocks / self.shards / unit) * unit
            # every shard keeps at least one block
            end = min(max(end, ends[-1] + 1), self.blocks - (self.shards - i))
            ends.append(end)
        ends.append(self.blocks)
        return range(ends[shard - 1] + 1, ends[shard] + 1)

    @property
    def own_blocks(self) -> range:
        """The blocks this plan boots: its shard's, else 1..:attr:`last_block`."""
        if self.shard is not None:
            return self.shard_blocks(self.shard)
        return range(1, self.last_block + 1)

    def design(self) -> dict[str, Any]:
        """How the runs were laid out, for the statistics: a sequential run (stopped when
        decisive) needs a stricter level than a fixed number of blocks."""
        return {
            "blocks": self.blocks,
            "runs": self.runs,
            "order_seed": self.order_seed,
            "sequential": {"max_blocks": self.last_block} if self.until_decisive else None,
        }

    def block_order(self, block: int) -> tuple[str, ...]:
        """The sides in the order they boot in ``block`` (1-based).

        Balanced: blocks come in chunks of k = len(sides); the k blocks of a chunk get the
        k cyclic rotations of a permutation drawn for the chunk, in a random order, so each
        side boots first (and in every other position) once per chunk, and a drift along a
        block cannot favour a side. The draw depends only on the order seed, the chunk and
        the sides, so extending a run with more blocks leaves earlier blocks as they were.
        """
        if block < 1:
            raise ValueError(f"blocks are numbered from 1 (got {block})")
        k = len(self.variants)
        if k < 2:
            return self.variants
        chunk, slot = divmod(block - 1, k)
        rng = random.Random(f"{self.order_seed}:{chunk}")
        perm = list(self.variants)
        rng.shuffle(perm)
        rotations = [tuple(perm[i:] + perm[:i]) for i in range(k)]
        rng.shuffle(rotations)
        return rotations[slot]

    def schedule(self) -> list[tuple[str, int]]:
        """Every boot of blocks 1..blocks as (side, block), in boot order."""
        return [(side, b) for b in range(1, self.blocks + 1) for side in self.block_order(b)]


def boot_id(side: str, block: int) -> str:
    """A boot's id, the same on every attempt: ``<side>-<block>``."""
    return f"{side}-{block}"


def plan_from_json(saved: dict[str, Any]) -> Plan:
    """A plan as run.json holds it; plans written before blocks were named ``boots``
    (boots per variant, which is what a block count is) read as blocks."""
    fields = dict(saved)
    fields["variants"] = tuple(fields["variants"])
    if "boots" in fields:
        old = fields.pop("boots")
        fields.setdefault("blocks", old)
    # plans written before workloads declared their own parameters held maps-contention's
    params = dict(fields.get("params") or {})
    for key in ("region_mb", "busy_ms", "procfile"):
        if key in fields:
            params[key] = fields.pop(key)
    fields["params"] = params
    return Plan(**fields)


# command-line values beyond these are typos, not plans (as in the experiment's schema)
LIMITS = {
    "--runs": config.MAX_RUNS,
    "--blocks": config.MAX_BLOCKS,
    "--max-blocks": config.MAX_BLOCKS,
    "--duration": config.MAX_DURATION_S,
}


def make_plan(
    exp: Experiment,
    *,
    runs: int | None = None,
    blocks: int | None = None,
    duration_s: float | None = None,
    variants: list[str] | None = None,
    accel: str | None = None,
    aa: bool = False,
    until_decisive: bool = False,
    max_blocks: int | None = None,
    budget_s: float | None = None,
    shards: int | None = None,
) -> Plan:
    """The experiment's settings with the command line's overrides applied and checked.

    With ``until_decisive`` the plan's blocks are the most the run may take: ``max_blocks``
    when given, else the experiment's (or ``--blocks``) number."""
    w = exp.workload
    problems = []
    for name, value in (
        ("--runs", runs),
        ("--blocks", blocks),
        ("--duration", duration_s),
        ("--max-blocks", max_blocks),
        ("--budget", budget_s),
        ("--shards", shards),
    ):
        if value is None:
            continue
        if not math.isfinite(value) or value <= 0:
            problems.append(f"{name} must be a finite number greater than zero (got {value})")
        elif name in LIMITS and value > LIMITS[name]:
            problems.append(f"{name} must be at most {LIMITS[name]:g} (got {value:g})")
    if problems:
        raise UserError("; ".join(problems))
    if max_blocks is not None and not until_decisive:
        raise UserError(
            "--max-blocks bounds a run that stops when decisive",
            hint="add --until-decisive, or set a fixed number of blocks with --blocks",
        )
    n_blocks = blocks or w.blocks
    if until_decisive:
        n_blocks = max_blocks or n_blocks
    if shards is not None and shards > n_blocks:
        raise UserError(
            f"--shards {shards} is more than the {n_blocks} blocks to split",
            hint="every shard needs a block of its own: lower --shards or raise --blocks",
        )
    if shards is not None and shards > 1 and until_decisive:
        raise UserError(
            "--until-decisive needs every block's results after each block, which separate"
            " bench jobs do not have",
            hint="run it with korch run on one machine, or give shards a fixed --blocks",
        )
    side_names: tuple[str, ...]
    if aa:
        side_names = (exp.baseline, f"{exp.baseline}-aa")
        kernels = {side_names[0]: exp.baseline, side_names[1]: exp.baseline}
    else:
        names = (
            [exp.variant(v).name for v in variants] if variants else [v.name for v in exp.variants]
        )
        side_names = tuple(dict.fromkeys(names))
        kernels = {n: n for n in side_names}
    if not aa and len(side_names) > 1 and exp.baseline not in side_names:
        raise UserError(
            f"--variant leaves out the baseline {exp.baseline!r}; a comparison needs it",
            hint=f"add --variant {exp.baseline}",
        )
    return Plan(
        experiment=exp.name,
        experiment_file=str(exp.path),
        variants=side_names,
        kernels=kernels,
        baseline=exp.baseline,
        blocks=n_blocks,
        runs=runs or w.runs,
        duration_s=float(duration_s or w.duration_s),
        workload_name=w.name,
        params=dict(w.params),
        cpus=exp.vm.cpus,
        memory=exp.vm.memory,
        accel=accel or exp.vm.accel,
        seed=1,
        aa=aa,
        headline=w.headline,
        order_seed=1,
        smallest_effect_pct=float(w.smallest_effect_pct),
        until_decisive=until_decisive,
        max_blocks=n_blocks if until_decisive else None,
        budget_s=float(budget_s) if budget_s is not None else None,
        shards=shards or 1,
    )


@dataclass(frozen=True)
class Overrides:
    """The command line's changes to an experiment's settings (``korch run``, ``korch
    plan``); ``None`` (or empty, or false) leaves the experiment's value."""

    runs: int | None = None
    blocks: int | None = None
    duration_s: float | None = None
    variants: tuple[str, ...] = ()
    accel: str | None = None
    aa: bool = False
    until_decisive: bool = False
    max_blocks: int | None = None
    budget: str | None = None  # "30m", "90s", "1h" or seconds
    shards: int | None = None

    def given(self) -> list[str]:
        """The options these overrides stand for, as the command line names them."""
        names = {
            "runs": "--runs", "duration_s": "--duration", "variants": "--variant",
            "accel": "--accel", "until_decisive": "--until-decisive",
            "max_blocks": "--max-blocks", "budget": "--budget", "shards": "--shards",
        }  # fmt: skip
        return [flag for field_name, flag in names.items() if getattr(self, field_name)]


def plan_for(exp: Experiment, o: Overrides) -> Plan:
    """The plan for ``exp`` with the overrides of ``korch run`` or ``korch plan`` applied."""
    return make_plan(
        exp,
        runs=o.runs,
        blocks=o.blocks,
        duration_s=o.duration_s,
        variants=list(o.variants) or None,
        accel=o.accel,
        aa=o.aa,
        until_decisive=o.until_decisive,
        max_blocks=o.max_blocks,
        budget_s=parse_duration(o.budget) if o.budget is not None else None,
        shards=o.shards,
    )


def load_plan(rundir: Path, aa: bool = False) -> tuple[Plan, str]:
    """The plan and reproduce command saved in a run directory (for ``--resume``)."""
    obj = RunDir(rundir, aa).info()
    return plan_from_json(obj["plan"]), obj.get("reproduce", "")


def extend_run(rundir: Path, plan: Plan, blocks: int, aa: bool = False) -> Plan:
    """``korch run --resume RUNDIR --blocks N``: raise a run's blocks to N in its run.json
    (and its matrix cells' run.json) so that the resumed run boots the missing blocks.

    Earlier blocks keep their order (it depends only on the order seed and the block's
    chunk) and the run keeps its run id; run.json records the extension, and the
    reproduce command gains ``--blocks N``."""
    if blocks < plan.blocks:
        raise UserError(
            f"--blocks {blocks} is fewer than the {plan.blocks} blocks of the run in {rundir}",
            hint=f"give --blocks {plan.blocks} or more; a run is extended, never cut",
        )
    if blocks == plan.blocks:
        return plan

    base = RunDir(rundir, aa).base
    where = [base]
    for cell in RunDir(rundir, aa).info().get("cells") or {}:
        if cell != DEFAULT_CELL:
            where.append(base / CELLS_DIR / cell)
    for d in where:
        _extend_plan_file(RunDir(d).plan, blocks)
    return _extended(plan, blocks)


def _extended(plan: Plan, blocks: int) -> Plan:
    """The plan with ``blocks`` blocks. An extended run is sequential from then on: the
    decision to add blocks was taken after looking at the first ones, so the statistics must
    use the level that holds over every look (and the run may stop once decisive)."""
    return replace(plan, blocks=blocks, until_decisive=True, max_blocks=blocks)


def _extend_plan_file(path: Path, blocks: int) -> None:
    """Rewrite one run.json (atomically) with its plan extended to ``blocks``."""
    obj = RunDir(path.parent).info()  # with the run id fixed before the plan changes
    old = plan_from_json(obj["plan"])
    obj["plan"] = asdict(_extended(old, blocks))
    obj["extended"] = [*obj.get("extended", []), {"blocks": [old.blocks, blocks], "at": now()}]
    if obj.get("reproduce"):
        obj["reproduce"] = shlex.join([*shlex.split(obj["reproduce"]), "--blocks", str(blocks)])
    write_json(path, obj)


def with_overrides(plan: Plan, **kw: Any) -> Plan:
    return replace(plan, **{k: v for k, v in kw.items() if v is not None})


DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30m``, ``90s``, ``1h`` or plain seconds (``600``, ``12.5``), as seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smh]?)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise UserError(
            f"--budget {text!r} is not a duration",
            hint="give a positive number of seconds, or one with a unit: 90s, 30m, 1h",
        )
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest of ``1h``, ``30m``, ``90s`` that says ``seconds`` exactly."""
    for unit in ("h", "m"):
        if seconds % DURATION_UNITS[unit] == 0:
            return f"{seconds / DURATION_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"
