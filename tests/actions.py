"""A local executor for korch's GitHub Actions workflow, for the tests.

It reads a workflow file and runs it the way the Actions runner does, as far as korch's
workflow needs: jobs in the order their ``needs`` give, each matrix entry as a job of its own
in a fresh directory (``GITHUB_WORKSPACE``), every ``run:`` step through ``bash -eo pipefail``
with ``${{ }}`` expressions substituted first, the ``GITHUB_ENV``, ``GITHUB_PATH``,
``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` files read back after each step, ``if:``
conditions (``success()``, ``!cancelled()``, comparisons, ``&&``/``||``), job outputs and
results (``needs.<job>.outputs``, ``needs.<job>.result``), and the actions korch uses:

* ``actions/checkout``: the repository's tracked files, copied from the working tree;
* ``actions/upload-artifact`` / ``actions/download-artifact``: files move between jobs
  exactly as the steps declare (paths with ``!`` exclusions, the least common ancestor as the
  artifact's root, ``pattern`` with and without ``merge-multiple``, ``if-no-files-found``);
* ``actions/cache/restore`` / ``actions/cache/save``: a local key store with ``restore-keys``
  prefixes, ``cache-hit`` and ``cache-matched-key`` outputs; entries may be seeded.

``after_job`` is called after every job (to play what happens between jobs, such as a
second runner with another CPU). What belongs to the runner machine rather than to the workflow is declared by the caller:
``setup`` maps a step's name to the script that stands in for it (the test's environment
already holds korch), ``skip`` maps a step's name to why it does not run here. Both must name
steps that exist, so a renamed step fails loudly. ``sudo`` runs its command as is (the
executor runs as the test's user). ``runs-on`` and ``container`` are noted, not emulated: every
job runs on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


class WorkflowError(Exception):
    """The workflow uses something this executor does not model, or is malformed."""


# ---------------------------------------------------------------- expressions


_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise WorkflowError(f"cannot parse expression {text!r} at {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def truthy(v: Any) -> bool:
    return not (v is None or v is False or v == "" or (isinstance(v, (int, float)) and v == 0))


def to_string(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()  # the runner compares strings ignoring case
    if type(a) is not type(b) and None not in (a, b):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


class _Parser:
    def __init__(self, text: str, ctx: Mapping[str, Any], status: Callable[[str], bool]):
        self.toks = _tokens(text)
        self.i = 0
        self.ctx = ctx
        self.status = status
        self.text = text

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise WorkflowError(f"expected {value or 'more'} in expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        v = self.or_()
        if self.peek() is not None:
            raise WorkflowError(f"trailing {self.peek()} in expression {self.text!r}")
        return v

    def or_(self) -> Any:
        v = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            rhs = self.and_()
            v = v if truthy(v) else rhs
        return v

    def and_(self) -> Any:
        v = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            rhs = self.cmp()
            v = rhs if truthy(v) else v
        return v

    def cmp(self) -> Any:
        v = self.unary()
        tok = self.peek()
        if tok and tok[1] in ("==", "!="):
            self.take()
            rhs = self.unary()
            same = _equal(v, rhs)
            return same if tok[1] == "==" else not same
        return v

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if (kind, value) == ("op", "("):
            v = self.or_()
            self.take(")")
            return v
        if kind != "name":
            raise WorkflowError(f"unexpected {value!r} in expression {self.text!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek() == ("op", "("):
            self.take()
            args = []
            while self.peek() != ("op", ")"):
                args.append(self.or_())
                if self.peek() == ("op", ","):
                    self.take()
            self.take(")")
            return self.call(value, args)
        if value not in self.ctx:
            raise WorkflowError(f"unknown context {value!r} in expression {self.text!r}")
        return self.ctx[value]

    def postfix(self, v: Any) -> Any:
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.take()
                _, name = self.take()
                v = v.get(name) if isinstance(v, dict) else None
            elif tok == ("op", "["):
                self.take()
                key = self.or_()
                self.take("]")
                if isinstance(v, list) and isinstance(key, (int, float)):
                    v = v[int(key)] if 0 <= int(key) < len(v) else None
                else:
                    v = v.get(to_string(key)) if isinstance(v, dict) else None
            else:
                return v

    def call(self, name: str, args: list[Any]) -> Any:
        fn = name.lower()
        if fn in ("success", "failure", "cancelled", "always"):
            return self.status(fn)
        if fn == "fromjson":
            return json.loads(to_string(args[0]))
        if fn == "tojson":
            return json.dumps(args[0], indent=2)
        if fn == "format":
            out = to_string(args[0])
            for i, a in enumerate(args[1:]):
                out = out.replace("{" + str(i) + "}", to_string(a))
            return out
        if fn == "contains":
            hay, needle = args
            if isinstance(hay, list):
                return any(_equal(h, needle) for h in hay)
            return to_string(needle).lower() in to_string(hay).lower()
        if fn == "startswith":
            return to_string(args[0]).lower().startswith(to_string(args[1]).lower())
        raise WorkflowError(f"function {name}() is not modelled by the local executor")


def evaluate(text: str, ctx: Mapping[str, Any], status: Callable[[str], bool] | None = None) -> Any:
    """The value of one expression (the text inside ``${{ }}``)."""

    def no_status(fn: str) -> bool:
        raise WorkflowError(f"{fn}() is only valid in an if: condition")

    return _Parser(text, ctx, status or no_status).parse()


def substitute(value: Any, ctx: Mapping[str, Any]) -> Any:
    """``value`` with every ``${{ }}`` replaced; a string that is one whole expression keeps
    the expression's type (as a ``strategy.matrix: ${{ fromJSON(...) }}`` needs)."""
    if isinstance(value, dict):
        return {k: substitute(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    if not isinstance(value, str):
        return value
    whole = EXPR.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), ctx)
    return EXPR.sub(lambda m: to_string(evaluate(m.group(1), ctx)), value)


def condition(text: Any, ctx: Mapping[str, Any], status: Callable[[str], bool]) -> bool:
    """An ``if:``: the expression, with ``success() &&`` in front unless it asks for a status."""
    if text is None:
        return status("success")
    if isinstance(text, bool):
        return text
    inner = str(text).strip()
    whole = EXPR.fullmatch(inner)
    if whole:
        inner = whole.group(1).strip()
    if not re.search(r"\b(success|failure|cancelled|always)\s*\(", inner):
        inner = f"success() && ({inner})"
    return truthy(evaluate(inner, ctx, status))


# ---------------------------------------------------------------- files of a step


def read_command_file(path: Path) -> dict[str, str]:
    """``GITHUB_ENV`` / ``GITHUB_OUTPUT``: ``NAME=value`` lines and ``NAME<<DELIM`` blocks."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise WorkflowError(f"{path.name}: no closing {delim!r} for {name}")
            i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise WorkflowError(f"{path.name}: invalid line {line!r}")
    return out


def _lines(value: Any) -> list[str]:
    return [s.strip() for s in to_string(value).splitlines() if s.strip()]


# ---------------------------------------------------------------- the run


def job_result(records: list[JobRecord]) -> str:
    """A job's result over its matrix entries: skipped when none ran."""
    if not records:
        return "skipped"
    return "failure" if any(r.result == "failure" for r in records) else "success"


def needs_of(job: Mapping[str, Any]) -> list[str]:
    """A job's ``needs``: one name or a list."""
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def status(ok: bool) -> Callable[[str], bool]:
    """The status functions of an ``if:`` after upstream success (``ok``) or a failure."""
    return {"success": ok, "failure": not ok, "cancelled": False, "always": True}.__getitem__


@dataclass
class StepRecord:
    name: str
    outcome: str  # success, failure, skipped
    code: int | None = None
    log: str = ""
    how: str = ""  # "run", "setup", "skipped: <why>", or the action


@dataclass
class JobRecord:
    job: str
    index: int
    matrix: dict[str, Any]
    workspace: Path
    result: str = "success"
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    summary: str = ""
    seconds: float = 0.0

    @property
    def title(self) -> str:
        return self.job + (
            f" ({', '.join(map(to_string, self.matrix.values()))})" if self.matrix else ""
        )

    def step(self, name: str) -> StepRecord:
        found = [s for s in self.steps if s.name == name]
        if not found:
            raise KeyError(f"{self.title}: no step {name!r}: {[s.name for s in self.steps]}")
        return found[0]

    def failed_step(self) -> StepRecord | None:
        return next((s for s in self.steps if s.outcome == "failure"), None)


@dataclass
class WorkflowRun:
    jobs: dict[str, list[JobRecord]]
    root: Path

    def result(self, job: str) -> str:
        return job_result(self.jobs.get(job, []))

    def describe(self) -> str:
        lines = []
        for records in self.jobs.values():
            for r in records:
                lines.append(f"job {r.title}: {r.result} in {r.seconds:.0f} s ({r.workspace})")
                for s in r.steps:
                    code = f" exit {s.code}" if s.code is not None else ""
                    lines.append(f"  {s.outcome:8} {s.name} [{s.how}]{code}")
                    if s.outcome == "failure":
                        lines.extend("    | " + x for x in s.log.splitlines()[-40:])
        return "\n".join(lines)


class Executor:
    """Runs one workflow file locally (see the module docstring)."""

    def __init__(
        self,
        workflow: Path,
        repo: Path,
        root: Path,
        *,
        event: str = "workflow_dispatch",
        inputs: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        setup: Mapping[str, str] | None = None,
        skip: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        after_job: Callable[[JobRecord, Executor], None] | None = None,
    ) -> None:
        self.path = workflow
        self.doc = yaml.safe_load(workflow.read_text())
        self.repo = repo
        self.root = root
        self.event = event
        self.env_override = dict(env or {})
        self.setup = dict(setup or {})
        self.skip = dict(skip or {})
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.after_job = after_job
        self.artifacts = root / "artifacts"
        self.cache = root / "cache"
        self.shims = root / "shims"
        for d in (self.artifacts, self.cache, self.shims):
            d.mkdir(parents=True, exist_ok=True)
        sudo = self.shims / "sudo"
        sudo.write_text(
            '#!/bin/sh\n# the local executor runs as the test user: no sudo\nexec "$@"\n'
        )
        sudo.chmod(0o755)
        on = self.doc.get("on", self.doc.get(True))  # YAML 1.1 reads "on" as true
        self.triggers = on if isinstance(on, dict) else {}
        self.inputs = self._inputs(inputs or {})
        names = {s.get("name") for j in self.doc["jobs"].values() for s in j.get("steps", [])}
        unknown = (set(self.setup) | set(self.skip)) - names
        if unknown:
            raise WorkflowError(f"{workflow}: no step named {sorted(unknown)}")
        self.run_id = str(int(time.time()))

    def _inputs(self, given: Mapping[str, str]) -> dict[str, Any]:
        declared = (self.triggers.get(self.event) or {}).get("inputs") or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise WorkflowError(f"{self.path}: {self.event} declares no input {sorted(unknown)}")
        return {k: given.get(k, d.get("default", "")) for k, d in declared.items()}

    def seed_cache(self, key: str, paths: Mapping[str, Path]) -> None:
        """A cache entry under ``key``: each workspace-relative path a symlink to a directory
        (as a warm ``actions/cache`` would restore it)."""
        entry = self.cache / key
        entry.mkdir(parents=True)
        index = {}
        for i, (rel, target) in enumerate(paths.items()):
            (entry / str(i)).symlink_to(target)
            index[str(i)] = rel
        (entry / "index.json").write_text(json.dumps(index))

    # ---------------------------------------------------------------- jobs

    def run(self) -> WorkflowRun:
        jobs: dict[str, dict[str, Any]] = self.doc["jobs"]
        done: dict[str, list[JobRecord]] = {}
        order = self._order(jobs)
        github = {
            "event_name": self.event,
            "run_id": self.run_id,
            "ref": "refs/heads/main",
            "workflow": self.doc.get("name", self.path.stem),
            "repository": "local/korch",
            "event": {"inputs": self.inputs},
        }
        for name in order:
            spec = jobs[name]
            needs = needs_of(spec)
            needs_ctx = {
                n: {
                    "result": job_result(done[n]),
                    "outputs": (done[n][0].outputs if done[n] else {}),
                }
                for n in needs
            }
            base_ctx = {"github": github, "inputs": self.inputs, "needs": needs_ctx,
                        "env": {}, "matrix": {}, "steps": {}, "job": {}, "runner": {}}  # fmt: skip
            base_ctx["env"] = self._workflow_env(base_ctx)
            upstream_ok = all(job_result(done[n]) == "success" for n in needs)
            if not condition(spec.get("if"), base_ctx, status(upstream_ok)):
                done[name] = []
                continue
            entries = self._matrix(spec, base_ctx)
            done[name] = []
            for i, entry in enumerate(entries):
                rec = self._job(name, i, entry, spec, base_ctx)
                done[name].append(rec)
                if self.after_job is not None:
                    self.after_job(rec, self)
        return WorkflowRun(done, self.root)

    @staticmethod
    def _order(jobs: Mapping[str, Any]) -> list[str]:
        order: list[str] = []
        pending = dict(jobs)
        while pending:
            ready = [n for n, j in pending.items() if all(d in order for d in needs_of(j))]
            if not ready:
                raise WorkflowError(f"jobs {sorted(pending)} need each other")
            for n in ready:
                order.append(n)
                del pending[n]
        return order

    def _workflow_env(self, ctx: Mapping[str, Any]) -> dict[str, str]:
        env = {k: to_string(substitute(v, ctx)) for k, v in (self.doc.get("env") or {}).items()}
        env.update(self.env_override)
        return env

    def _matrix(self, spec: Mapping[str, Any], ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
        strategy = spec.get("strategy") or {}
        if "matrix" not in strategy:
            return [{}]
        matrix = substitute(strategy["matrix"], ctx)
        if not isinstance(matrix, dict):
            raise WorkflowError(f"strategy.matrix is not an object: {matrix!r}")
        axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
        entries = (
            [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
            if axes
            else []
        )
        for extra in matrix.get("include") or []:
            entries.append(dict(extra))
        if not entries:
            raise WorkflowError("the matrix is empty: the runner would fail the workflow")
        return entries

    def _job(
        self, name: str, index: int, matrix: dict[str, Any], spec: Mapping[str, Any],
        base_ctx: Mapping[str, Any],
    ) -> JobRecord:  # fmt: skip
        ws = self.root / "jobs" / f"{name}-{index + 1}"
        ws.mkdir(parents=True)
        temp = self.root / "jobs" / f"{name}-{index + 1}.tmp"
        temp.mkdir()
        rec = JobRecord(name, index, matrix, ws)
        ctx: dict[str, Any] = {**base_ctx, "matrix": matrix, "steps": {},
                               "github": {**base_ctx["github"], "workspace": str(ws)},
                               "runner": {"temp": str(temp), "os": "Linux"}}  # fmt: skip
        env = dict(ctx["env"])
        env.update({k: to_string(substitute(v, ctx)) for k, v in (spec.get("env") or {}).items()})
        ctx["env"] = env
        path_extra: list[str] = []
        deadline = time.monotonic() + 60 * float(spec.get("timeout-minutes", 360))
        start = time.monotonic()
        failed = False
        for i, step in enumerate(spec.get("steps") or []):
            sname = to_string(
                substitute(step.get("name") or step.get("uses") or f"step {i + 1}", ctx)
            )
            raw_name = step.get("name")

            if raw_name in self.skip:
                rec.steps.append(
                    StepRecord(sname, "skipped", how=f"skipped: {self.skip[raw_name]}")
                )
                continue
            if not condition(step.get("if"), ctx, status(not failed)):
                rec.steps.append(StepRecord(sname, "skipped", how="if: false"))
                self._set_step(ctx, step, "skipped", {})
                continue
            step_env = {
                **env,
                **{k: to_string(substitute(v, ctx)) for k, v in (step.get("env") or {}).items()},
            }
            try:
                if raw_name in self.setup:
                    sr, outputs = self._shell(
                        self.setup[raw_name], step_env, ws, temp, path_extra, deadline, env
                    )
                    sr.how = "setup"
                elif "run" in step:
                    script = to_string(substitute(step["run"], ctx))
                    sr, outputs = self._shell(script, step_env, ws, temp, path_extra, deadline, env)
                elif "uses" in step:
                    sr, outputs = self._action(
                        step["uses"], substitute(step.get("with") or {}, ctx), ws
                    )
                else:
                    raise WorkflowError(f"{name}: step {sname!r} has neither run nor uses")
            except WorkflowError as exc:
                sr, outputs = StepRecord(sname, "failure", log=str(exc), how="executor"), {}
            sr.name = sname
            rec.steps.append(sr)
            self._set_step(ctx, step, sr.outcome, outputs)  # ctx["env"] is env: GITHUB_ENV shows
            if sr.outcome == "failure":
                failed = True
        summary = temp / "summary.md"
        rec.summary = summary.read_text() if summary.exists() else ""
        rec.result = "failure" if failed else "success"
        rec.outputs = {
            k: to_string(substitute(v, ctx)) for k, v in (spec.get("outputs") or {}).items()
        }
        rec.seconds = time.monotonic() - start
        return rec

    @staticmethod
    def _set_step(
        ctx: dict[str, Any], step: Mapping[str, Any], outcome: str, outputs: dict[str, str]
    ) -> None:
        if "id" in step:
            ctx["steps"][step["id"]] = {
                "outcome": outcome,
                "conclusion": outcome,
                "outputs": outputs,
            }

    def _shell(
        self, script: str, env: dict[str, str], ws: Path, temp: Path, path_extra: list[str],
        deadline: float, job_env: dict[str, str],
    ) -> tuple[StepRecord, dict[str, str]]:  # fmt: skip
        files = {
            n: temp / f"{n.lower()}.{time.monotonic_ns()}"
            for n in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT")
        }
        for f in files.values():
            f.write_text("")
        script_file = temp / f"step.{time.monotonic_ns()}.sh"
        script_file.write_text(script)
        full = dict(self.base_env)
        full.update(env)
        full.update({k: str(v) for k, v in files.items()})
        full.update(
            GITHUB_WORKSPACE=str(ws), GITHUB_STEP_SUMMARY=str(temp / "summary.md"),
            RUNNER_TEMP=str(temp), GITHUB_ACTIONS="true", CI="true",
            GITHUB_EVENT_NAME=self.event, GITHUB_RUN_ID=self.run_id,
            PATH=os.pathsep.join([*reversed(path_extra), str(self.shims), self.base_env.get("PATH", "")]),
        )  # fmt: skip
        timeout = max(1.0, deadline - time.monotonic())
        # a session of its own: a step that overruns its job's timeout is stopped whole
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
            cwd=ws, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            log, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            code, log = 124, log + "\n[the job's timeout-minutes ran out]"
        job_env.update(read_command_file(files["GITHUB_ENV"]))
        path_extra.extend(_lines(files["GITHUB_PATH"].read_text()))
        outputs = read_command_file(files["GITHUB_OUTPUT"])
        return StepRecord("", "success" if code == 0 else "failure", code, log, "run"), outputs

    # ---------------------------------------------------------------- actions

    def _action(
        self, uses: str, w: Mapping[str, Any], ws: Path
    ) -> tuple[StepRecord, dict[str, str]]:
        action = uses.split("@", 1)[0]
        handler = {
            "actions/checkout": self._checkout,
            "actions/upload-artifact": self._upload,
            "actions/download-artifact": self._download,
            "actions/cache/restore": self._restore,
            "actions/cache/save": self._save,
        }.get(action)
        if handler is None:
            raise WorkflowError(f"the local executor does not model {uses}")
        log, outputs = handler(w, ws)
        return StepRecord("", "success", log=log, how=action), outputs

    def _checkout(self, w: Mapping[str, Any], ws: Path) -> tuple[str, dict[str, str]]:
        if w.get("repository"):
            raise WorkflowError(
                f"checkout of another repository ({w['repository']}) is not modelled"
            )
        dest = ws / to_string(w.get("path") or ".")
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=self.repo, capture_output=True, check=True,
        ).stdout.split(b"\0")  # fmt: skip
        n = 0
        for f in files:
            if not f:
                continue
            src = self.repo / os.fsdecode(f)
            if not src.is_file():
                continue  # deleted in the working tree
            target = dest / os.fsdecode(f)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            n += 1
        return f"checked out {n} files of {self.repo}", {}

    @staticmethod
    def _included(paths: list[str], ws: Path) -> tuple[Path, list[tuple[Path, Path]]]:
        """The artifact's root and its (source, path in the artifact) files."""
        include = [ws / p for p in paths if not p.startswith("!")]
        exclude = [(ws / p[1:]).resolve() for p in paths if p.startswith("!")]
        found: list[Path] = []
        for p in include:
            if p.is_dir():
                found.extend(f for f in sorted(p.rglob("*")) if f.is_file())
            elif p.is_file():
                found.append(p)
        found = [f for f in found if not any(f.resolve().is_relative_to(e) for e in exclude)]
        existing = [p.resolve() for p in include if p.exists()]
        if not existing:
            return ws, []
        root = Path(os.path.commonpath(existing))
        if len(existing) == 1 and existing[0].is_file():
            root = existing[0].parent
        return root, [(f, f.resolve().relative_to(root)) for f in found]

    def _upload(self, w: Mapping[str, Any], ws: Path) -> tuple[str, dict[str, str]]:
        name = to_string(w.get("name") or "artifact")
        root, files = self._included(_lines(w.get("path")), ws)
        if not files:
            mode = to_string(w.get("if-no-files-found") or "warn")
            if mode == "error":
                raise WorkflowError(
                    f"upload-artifact {name}: no files found at {_lines(w.get('path'))}"
                )
            return f"upload-artifact {name}: no files found ({mode})", {}
        dest = self.artifacts / name
        if dest.exists():
            raise WorkflowError(f"upload-artifact: an artifact named {name} already exists")
        for src, rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
        return f"uploaded {len(files)} files from {root} as {name}", {}

    def _download(self, w: Mapping[str, Any], ws: Path) -> tuple[str, dict[str, str]]:
        dest = ws / to_string(w.get("path") or ".")
        if w.get("name"):
            names = [to_string(w["name"])]
            if not (self.artifacts / names[0]).is_dir():
                raise WorkflowError(f"download-artifact: no artifact named {names[0]}")
        else:
            pattern = to_string(w.get("pattern") or "*")
            names = sorted(
                n.name for n in self.artifacts.iterdir() if fnmatch.fnmatchcase(n.name, pattern)
            )
        merge = truthy(w.get("merge-multiple")) or bool(w.get("name"))
        for n in names:
            target = dest if merge else dest / n
            shutil.copytree(self.artifacts / n, target, dirs_exist_ok=True)
        return f"downloaded {', '.join(names) or 'nothing'} to {dest}", {}

    def _restore(self, w: Mapping[str, Any], ws: Path) -> tuple[str, dict[str, str]]:
        key = to_string(w["key"])
        paths = _lines(w.get("path"))
        matched = key if (self.cache / key).is_dir() else None
        if matched is None:
            for prefix in _lines(w.get("restore-keys")):
                hits = sorted(
                    (p for p in self.cache.iterdir() if p.name.startswith(prefix)),
                    key=lambda p: p.stat().st_mtime, reverse=True,
                )  # fmt: skip
                if hits:
                    matched = hits[0].name
                    break
        if matched is None:
            return f"cache miss for {key}", {"cache-hit": "false"}
        entry = self.cache / matched
        index = json.loads((entry / "index.json").read_text())
        for i, rel in index.items():
            if rel not in paths:
                continue
            target = ws / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = entry / i
            if src.is_symlink():
                target.symlink_to(os.readlink(src))
            else:
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        return f"restored {matched}", {
            "cache-hit": str(matched == key).lower(),
            "cache-matched-key": matched,
        }

    def _save(self, w: Mapping[str, Any], ws: Path) -> tuple[str, dict[str, str]]:
        key = to_string(w["key"])
        entry = self.cache / key
        if entry.exists():
            return f"cache entry {key} exists; not saved again", {}
        entry.mkdir()
        index = {}
        for i, rel in enumerate(_lines(w.get("path"))):
            src = ws / rel
            if src.is_symlink():
                (entry / str(i)).symlink_to(os.readlink(src))
            elif src.is_dir():
                shutil.copytree(src, entry / str(i), symlinks=True)
            else:
                continue
            index[str(i)] = rel
        (entry / "index.json").write_text(json.dumps(index))
        return f"saved {key} ({len(index)} paths)", {}


def main(argv: list[str]) -> int:
    """Run a workflow here by hand, from the repository's top directory."""
    ap = argparse.ArgumentParser(prog="python tests/actions.py", description=main.__doc__)
    ap.add_argument("workflow", type=Path)
    ap.add_argument("root", type=Path, help="a new directory for the jobs, artifacts and caches")
    ap.add_argument("--event", default="workflow_dispatch")
    pairs = {"input": "an input of the event", "env": "a workflow env value",
             "setup": "a step's name and the script that stands in for it",
             "skip": "a step's name and why it does not run"}  # fmt: skip
    for name, what in pairs.items():
        ap.add_argument(f"--{name}", action="append", default=[], metavar="NAME=VALUE", help=what)
    args = ap.parse_args(argv)
    given = {n: dict(v.split("=", 1) for v in getattr(args, n)) for n in pairs}
    ex = Executor(
        args.workflow, Path.cwd(), args.root, event=args.event, inputs=given["input"],
        env=given["env"], setup=given["setup"], skip=given["skip"],
    )  # fmt: skip
    run = ex.run()
    print(run.describe())
    return 0 if all(run.result(j) != "failure" for j in run.jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
