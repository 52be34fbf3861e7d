"""``workload: {name: command, run, files, timeout_s, metrics}``: a user's own benchmark.

Per run, the command runs in the guest under ``sh -c`` in the directory its ``files`` were
copied to (``/opt/korch/command``), killed at ``timeout_s`` (the run is then a hang). Its
standard output gives the run's metrics: each metric is read from a JSON object line
(``{"ops_per_s": 1234.5}``; ``json:`` names another field) or from a regular expression
(``regex:``) whose group named like the metric, or whose only group, holds the number. When
the output gives a metric several times, the last one counts. A command that exits other
than 0 is an error that names the run and shows its output's end, not a data point; so is a
run whose output lacks a metric.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ...errors import SSHTimeout, UserError, WorkloadError
from ...fsutil import atomic_write
from ...metrics import KINDS, Metric
from ..api import Extracted, Outcome, ParseContext, Session, Workload

GUEST_SUBDIR = "command"
KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
METRIC_KEYS = ("unit", "better", "kind", "json", "regex", "label", "digits", "description")
TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
# a run's wait beyond its own timeout: SSH round trips and printing the output
SLACK_S = 60.0
TAIL_LINES = 30
_KILLED = 128 + 9


def _number_text(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        out = float(str(value))
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def build_metric(key: str, spec: Mapping[str, Any], timeout_s: float) -> Metric:
    """A :class:`Metric` from one ``metrics:`` entry (already checked)."""
    kind = spec.get("kind") or "latency"
    better = spec.get("better") or ("higher" if kind == "throughput" else "lower")
    unit = spec.get("unit") or ""
    worst: float | None = None
    offset = 1e-9
    if kind == "latency" and unit in TIME_UNITS:
        worst = timeout_s * TIME_UNITS[unit]  # a killed run took at least its timeout
    elif kind == "share":
        worst = {"%": 100.0, "‰": 1000.0}.get(unit, 1.0) if better == "lower" else 0.0
        offset = {"%": 0.0001, "‰": 0.001}.get(unit, 1e-6)
    elif kind == "pass/fail":
        worst, offset = 1000.0, 0.001
    elif kind == "count":
        offset = 1.0  # counts are often zero: log(1 + n)
    return Metric(
        key=key,
        label=spec.get("label") or key,
        unit="‰ failed" if kind == "pass/fail" else unit,
        better="lower" if kind == "pass/fail" else better,
        digits=int(spec.get("digits", 3)),
        needs_histogram=False,
        description=spec.get("description") or f"per run, {key} as the command printed it",
        kind=kind,
        worst_value=worst,
        log_offset=offset,
        discrete=kind in ("count", "pass/fail"),
    )


def read_metrics(
    output: str, specs: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, float], list[str]]:
    """Each metric's value from a run's standard output, and the metrics it lacks."""
    found: dict[str, float] = {}
    objects = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
    for key, spec in specs.items():
        value: float | None = None
        if spec.get("regex"):
            pattern = re.compile(spec["regex"], re.MULTILINE)
            for m in pattern.finditer(output):
                text = m.group(key) if key in pattern.groupindex else m.group(1)
                got = _number_text(text)
                value = got if got is not None else value
        else:
            field = spec.get("json") or key
            for obj in objects:
                if field in obj:
                    raw = obj[field]
                    if isinstance(raw, bool) and spec.get("kind") == "pass/fail":
                        raw = int(raw)
                    got = _number_text(raw)
                    value = got if got is not None else value
        if value is None:
            continue
        if spec.get("kind") == "pass/fail":
            value = 0.0 if value else 1000.0  # a true (non-zero) value passes
        found[key] = value
    return found, [k for k in specs if k not in found]


def _tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-TAIL_LINES:]
    return "".join("\n  | " + line for line in lines)


class Command(Workload):
    """A command in the guest whose output gives its metrics."""

    name = "command"
    summary = "any command in the guest; metrics from its output (JSON lines or regexes)"
    keys = ("run", "files", "timeout_s", "metrics", "env")

    def parse(self, ctx: ParseContext) -> dict[str, Any]:
        from ...config import between

        c, m = ctx.checker, ctx.nodes
        out: dict[str, Any] = {"run": "", "files": [], "timeout_s": 600.0, "metrics": {}, "env": {}}
        for key in ("run", "metrics"):
            if key not in m:
                c.problem(ctx.section, f"workload.{key}", "required key is missing")
        if "run" in m:
            run = c.string(m["run"], "workload.run", lambda v: None if v.strip() else "is empty")
            out["run"] = run or ""
        if "timeout_s" in m:
            t = c.scalar(m["timeout_s"], "workload.timeout_s", (float,), "a number of seconds",
                         between(0, 86400, " s"))  # fmt: skip
            out["timeout_s"] = float(t) if t is not None else out["timeout_s"]
        if "files" in m:
            out["files"] = self._files(ctx, m["files"])
        if "env" in m:
            out["env"] = self._env(ctx, m["env"])
        if "metrics" in m:
            out["metrics"] = self._metrics(ctx, m["metrics"])
        return out

    @staticmethod
    def _files(ctx: ParseContext, node: yaml.Node) -> list[str]:
        c = ctx.checker
        items = c.string_list(node, "workload.files") or []
        out: list[str] = []
        for i, (text, item) in enumerate(items):
            host = (ctx.base / text).resolve()
            if not host.exists():
                c.problem(
                    item,
                    f"workload.files[{i}]",
                    f"{host} does not exist (a host file or directory, relative to the"
                    " experiment file: build your program before korch run)",
                )
            elif host.name in {Path(p).name for p in out}:
                c.problem(item, f"workload.files[{i}]", f"a second file named {host.name}")
            else:
                out.append(str(host))
        return out

    @staticmethod
    def _env(ctx: ParseContext, node: yaml.Node) -> dict[str, str]:
        c = ctx.checker
        if not isinstance(node, yaml.MappingNode):
            c.problem(node, "workload.env", f"expected a mapping, got {c.kind_of(node)}")
            return {}
        out = {}
        for knode, vnode in node.value:
            name = str(knode.value)
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                c.problem(knode, f"workload.env.{name}", "is not a variable name")
                continue
            value = c.scalar(vnode, f"workload.env.{name}", (str, int, float), "a string")
            if value is not None:
                out[name] = str(value)
        return out

    @staticmethod
    def _metrics(ctx: ParseContext, node: yaml.Node) -> dict[str, dict[str, Any]]:
        c = ctx.checker
        if not isinstance(node, yaml.MappingNode) or not node.value:
            c.problem(
                node, "workload.metrics", f"expected a mapping of metrics, got {c.kind_of(node)}"
            )
            return {}
        out: dict[str, dict[str, Any]] = {}
        for knode, vnode in node.value:
            key = str(knode.value)
            kp = f"workload.metrics.{key}"
            if not KEY.match(key) or key == "hang_rate":
                c.problem(knode, kp, "a metric's name is lower case letters, digits and '_',"
                          " starting with a letter (and not hang_rate)")  # fmt: skip
                continue
            fields = c.mapping(vnode, kp, {k: k == "unit" for k in METRIC_KEYS})
            if fields is None:
                continue
            spec: dict[str, Any] = {}
            for name in ("unit", "label", "description", "json"):
                if name in fields:
                    spec[name] = c.string(fields[name], f"{kp}.{name}")
            if "better" in fields:
                spec["better"] = c.string(
                    fields["better"],
                    f"{kp}.better",
                    lambda v: None if v in ("lower", "higher") else "must be lower or higher",
                )
            if "kind" in fields:
                spec["kind"] = c.string(
                    fields["kind"],
                    f"{kp}.kind",
                    lambda v: None if v in KINDS else f"must be one of {', '.join(KINDS)}",
                )
            if "digits" in fields:
                spec["digits"] = c.scalar(
                    fields["digits"],
                    f"{kp}.digits",
                    (int,),
                    "an integer",
                    lambda v: None if 0 <= v <= 9 else "must be 0 to 9",
                )
            if "regex" in fields:
                text = c.string(fields["regex"], f"{kp}.regex")
                if text is not None:
                    try:
                        pattern = re.compile(text)
                    except re.error as exc:
                        c.problem(
                            fields["regex"], f"{kp}.regex", f"not a regular expression: {exc}"
                        )
                    else:
                        if key not in pattern.groupindex and pattern.groups != 1:
                            c.problem(
                                fields["regex"],
                                f"{kp}.regex",
                                f"needs a group named {key}, (?P<{key}>...), or exactly one group",
                            )
                        else:
                            spec["regex"] = text
                if "json" in fields:
                    c.problem(fields["json"], f"{kp}.json", "give json or regex, not both")
            out[key] = {k: v for k, v in spec.items() if v is not None}
        return out

    def metrics(self, workload: Mapping[str, Any]) -> tuple[Metric, ...]:
        specs = workload.get("metrics")
        if not isinstance(specs, Mapping):
            return ()
        timeout = float(workload.get("timeout_s") or 600.0)
        return tuple(build_metric(k, v, timeout) for k, v in specs.items())

    def default_headline(self, params: Mapping[str, Any]) -> str:
        return next(iter(params.get("metrics") or {"hang_rate": None}))

    def guest_files(
        self, params: Mapping[str, Any], cache: Path | None, guest_dir: str
    ) -> dict[str, Path]:
        from ...additions import GuestFile, expand_files

        where = f"{guest_dir}/{GUEST_SUBDIR}"
        files = tuple(
            GuestFile(Path(p), f"{where}/{Path(p).name}") for p in params.get("files", ())
        )
        gone = [str(f.host) for f in files if not f.host.exists()]
        if gone:
            raise UserError(
                f"workload.files: {', '.join(gone)} no longer exists (the plan recorded it)",
                hint="build or restore it at that path; a bench job on another machine needs"
                " it at the same path",
            )
        return expand_files(files)

    def script(self, params: Mapping[str, Any], session: Session, index: int) -> str:
        """The guest shell command of run ``index`` (0-based, of this boot)."""
        where = f"{session.guest_dir}/{GUEST_SUBDIR}"
        env = {
            **params.get("env", {}),
            "KORCH_RUN": str(session.first_index + index),
            "KORCH_SEED": str(session.seed + index),
            "KORCH_DURATION_S": f"{session.duration_s:g}",
            "KORCH_CPUS": str(session.vcpus),
        }
        assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        limit = math.ceil(float(params["timeout_s"]))
        # The command runs in a session of its own (setsid) and a watchdog, in another,
        # kills that whole process group at the timeout: busybox's timeout would kill the
        # shell alone and leave the benchmark's processes running into the next run. The
        # group is killed when the command ends too, so nothing it left behind disturbs the
        # next run. Output goes to files printed afterwards (a killed command's children
        # would otherwise hold the SSH channel open).
        return (
            f"mkdir -p {shlex.quote(where)} && cd {shlex.quote(where)} && o=/tmp/korch-command.$$"
            f" && {{ env {assign} setsid sh -c {shlex.quote(params['run'])}"
            " >$o.out 2>$o.err </dev/null & p=$!;"
            f' setsid sh -c "sleep {limit}; kill -KILL -$p" >/dev/null 2>&1 </dev/null & w=$!;'
            " wait $p; s=$?; kill -KILL -$w -$p 2>/dev/null;"
            " cat $o.out; cat $o.err >&2; rm -f $o.out $o.err; exit $s; }"
        )

    def run(self, session: Session) -> dict[str, Any]:
        params = session.params
        timeout = float(params["timeout_s"])
        specs = params.get("metrics") or {}
        for i in range(session.runs):
            index = session.first_index + i
            source = f"command run {index + 1} ({params['run']!r})"
            start = time.monotonic()
            try:
                code, out, err = session.remote.run(
                    self.script(params, session, i), timeout=timeout + SLACK_S
                )
            except SSHTimeout:
                code, out, err = None, "", ""
            seconds = time.monotonic() - start
            if session.save_dir is not None:
                atomic_write(session.save_dir / "command" / f"run-{index + 1}.out", out + err)
            if code is None or (code == _KILLED and seconds >= 0.95 * timeout):
                session.on_run(
                    Outcome(
                        index,
                        session.seed + i,
                        None,
                        hang=True,
                        note=f"the command was still running after {timeout:g} s; killed",
                    )
                )
                continue
            if code != 0:
                raise WorkloadError(
                    f"{source}: the command exited with {code}{_tail(out + err)}",
                    hint="a failing command is an error, not a measurement: run it with"
                    " korch boot EXPERIMENT -- CMD to see why",
                )
            values, missing = read_metrics(out, specs)
            if missing:
                raise WorkloadError(
                    f"{source}: its output gives no value for {', '.join(missing)}{_tail(out)}",
                    hint='print a JSON line such as {"' + missing[0] + '": 1.5}, or give'
                    " the metric a regex with a group that matches the number",
                )
            session.on_run(Outcome(index, session.seed + i,
                                   {"metrics": values, "seconds": round(seconds, 3)}))  # fmt: skip
        return {}

    def extract(self, records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> Extracted:
        import numpy as np

        keys: list[str] = []
        for rec in records:
            got = rec.get("metrics")
            if isinstance(got, Mapping):
                keys.extend(k for k in got if k not in keys)
        values = {k: np.full(len(records), np.nan) for k in keys}
        for i, (rec, where) in enumerate(zip(records, wheres, strict=True)):
            got = rec.get("metrics")
            if not isinstance(got, Mapping):
                raise ValueError(f"{where}: the record has no 'metrics' object")
            for k, v in got.items():
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise ValueError(f"{where}: metric '{k}' is {v!r}, not a finite number")
                values[k][i] = float(v)
        return Extracted(values)


WORKLOAD = Command()
