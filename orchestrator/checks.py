"""Correctness checks: kernel selftests built from the tree under test and run in every boot.

An experiment lists them beside its performance workload (``checks: [proc/proc-maps-race]``).
Each check is one program of ``tools/testing/selftests/<dir>/`` of the variant's own patched
tree, built on the host by that directory's Makefile as a static binary against the tree's
exported headers (:func:`build_program`), copied into the guest and run after the timed runs
of each boot (:func:`run_checks`). Its TAP output becomes one result per boot:
``pass``, ``fail``, ``skip`` or ``timeout`` (:func:`classify`).

:func:`gate` compares the variants: a check that passes on every boot of the baseline and
fails on a boot of a candidate is a correctness regression, and the run exits 1 even when
the performance verdict is "improved". One failing boot suffices: a race test reports a torn
read it saw, not a sample of a noisy quantity. docs/checks.md says more.
"""

from __future__ import annotations

import difflib
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import process
from .errors import BuildError, CommandError, SSHTimeout, UserError
from .fsutil import atomic_write
from .workloads.protocol import Remote

SELFTESTS = Path("tools") / "testing" / "selftests"
GUEST_DIR = "/tmp/korch-checks"
KSFT_SKIP = 4  # tools/testing/selftests/kselftest.h
STATUSES = ("pass", "fail", "skip", "timeout")
TEST_NAME = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)+$")
_TAP = re.compile(r"^(not )?ok\s+\d+\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(\w+)\b(.*))?$")
# the exit status of `timeout -s KILL`: the shell reports a child killed by signal 9
_KILLED = 128 + 9
TAIL_LINES = 40


@dataclass(frozen=True)
class CheckSpec:
    """One correctness check of an experiment (``checks:``).

    ``test`` names a program of the kernel's selftests, ``<dir>/<program>`` under
    ``tools/testing/selftests`` (``proc/proc-maps-race``); ``args`` and ``env`` go to it in
    the guest; past ``timeout_s`` it is killed and counts as ``timeout``.
    """

    test: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 300.0

    @property
    def directory(self) -> str:
        return self.test.rsplit("/", 1)[0]

    @property
    def program(self) -> str:
        return self.test.rsplit("/", 1)[1]

    def command(self, guest_dir: str = GUEST_DIR) -> str:
        """The guest shell command: the program under busybox ``timeout`` in its own dir.

        Its output goes to a file that is printed afterwards: a killed test's children
        would otherwise hold the SSH channel open. The explicit ``exit`` keeps the shell
        from exec'ing ``timeout`` (busybox's kills the process it execs into, which would
        then be the shell itself and leave no exit status).
        """
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        argv = shlex.join([f"./{self.program}", *self.args])
        where = shlex.quote(f"{guest_dir}/{self.directory}")
        log = shlex.quote(f"{self.program}.out")
        return (
            f"cd {where} && {'env ' + env + ' ' if env else ''}"
            f"timeout -s KILL {int(self.timeout_s)} {argv} >{log} 2>&1; s=$?; cat {log}; exit $s"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "args": list(self.args),
            "env": dict(self.env),
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CheckSpec:
        """The spec :meth:`to_json` wrote."""
        return cls(
            str(obj["test"]),
            tuple(str(a) for a in obj.get("args") or ()),
            tuple((str(k), str(v)) for k, v in (obj.get("env") or {}).items()),
            float(obj.get("timeout_s") or 300.0),
        )


# ---------------------------------------------------------------- build on the host


def program_source(tree: Path, spec: CheckSpec, where: str) -> Path:
    """The selftest directory of ``spec`` in the checked-out ``tree``; a clear error when
    the tree has no such directory or program (``where`` names the variant and tree)."""
    top = tree / SELFTESTS
    directory = top / spec.directory
    problem = missing_program(
        spec,
        sorted(p.name for p in directory.iterdir()) if directory.is_dir() else [],
        lambda: sorted(p.parent.relative_to(top).as_posix() for p in top.glob("*/Makefile")),
        where,
    )
    if problem is not None:
        raise problem
    return directory


def missing_program(
    spec: CheckSpec, files: Sequence[str], directories: Callable[[], Sequence[str]], where: str
) -> UserError | None:
    """Why ``spec`` cannot be built from a tree whose selftest directory holds ``files``
    (``directories()``: the tree's selftest directories, asked only when needed), or None."""
    if "Makefile" not in files:
        close = difflib.get_close_matches(spec.directory, directories(), n=3)
        return UserError(
            f"check {spec.test}: {where} has no selftest directory {SELFTESTS / spec.directory}"
            " (or it has no Makefile)",
            hint=f"closest directories: {', '.join(close)}" if close else
            "checks name a program as <dir>/<program> under tools/testing/selftests",
        )  # fmt: skip
    programs = sorted(f.removesuffix(".c") for f in files if f.endswith(".c"))
    if spec.program not in programs:
        close = difflib.get_close_matches(spec.program, programs, n=3)
        return UserError(
            f"check {spec.test}: {where} has no {SELFTESTS / spec.directory / spec.program}.c",
            hint=(f"did you mean {', '.join(spec.directory + '/' + c for c in close)}?"
                  if close else f"the directory's programs: {', '.join(programs[:20])}"),
        )  # fmt: skip
    return None


def headers_argv(tree: Path, objdir: Path, arch: str) -> list[str]:
    """``make headers``: the tree's exported (uapi) headers into ``objdir/usr/include``.

    Not ``headers_install``, which copies them again with rsync; the selftests only need
    the include directory.
    """
    return ["make", "-s", "-C", str(tree), f"O={objdir}", f"ARCH={arch}", "headers"]


def program_argv(directory: Path, out: Path, program: str, headers: Path) -> list[str]:
    """Build one selftest program with its directory's own Makefile (its CFLAGS, LDLIBS),
    static (the guest has no C library), against the headers of the tree under test."""
    return [
        "make", "-C", str(directory), f"OUTPUT={out}", "CC=gcc -static",
        f"KHDR_INCLUDES=-isystem {headers}", str(out / program),
    ]  # fmt: skip


def build_program(
    tree: Path,
    spec: CheckSpec,
    headers: Path,
    out: Path,
    log: Path,
    where: str,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Build ``spec``'s program from ``tree`` into ``out``; return the binary's path.

    ``headers`` is the ``usr/include`` that :func:`headers_argv` made. A compile error is
    a :class:`BuildError` with the compiler's lines (a patch broke the selftest, or the
    test needs a library the host lacks).
    """
    directory = program_source(tree, spec, where)
    out.mkdir(parents=True, exist_ok=True)
    argv = program_argv(directory, out, spec.program, headers)
    try:
        process.run(argv, log=log, env=dict(env or {}), what=f"building check {spec.test}")
    except CommandError as exc:
        said = log.read_text(errors="replace") if log.exists() else ""
        raise BuildError(
            f"check {spec.test}: building it from {where} failed; make said:",
            argv=argv,
            returncode=exc.returncode,
            tail="\n".join(said.splitlines()[-25:]),
            log=str(log),
            hint="the selftest must build as a static program on this host (gcc -static);"
            " fix the patch, or drop the check",
        ) from None
    binary = out / spec.program
    if not binary.is_file():
        raise BuildError(
            f"check {spec.test}: make succeeded but wrote no {binary}",
            argv=argv,
            returncode=0,
            tail="",
            log=str(log),
            hint=f"is {spec.program} one of TEST_GEN_PROGS in {directory / 'Makefile'}?",
        )
    return binary


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckResult:
    """One check in one boot."""

    status: str  # pass, fail, skip, timeout
    exit: int | None
    seconds: float
    passed: int = 0
    failed: tuple[str, ...] = ()  # the subtests reported "not ok"
    skipped: int = 0
    tail: str = ""  # the output's last lines when it did not pass

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit": self.exit,
            "seconds": round(self.seconds, 2),
            "passed": self.passed,
            "failed": list(self.failed),
            "skipped": self.skipped,
            "tail": self.tail,
        }


def parse_tap(text: str) -> list[tuple[str, str]]:
    """``(name, status)`` per TAP test line: ``pass``, ``fail`` or ``skip``.

    ``not ok`` with a SKIP, XFAIL or TODO directive is not a failure (the kselftest harness
    prints expected failures so); ``ok ... # SKIP`` is a skip.
    """
    out = []
    for line in text.splitlines():
        m = _TAP.match(line.strip())
        if not m:
            continue
        not_ok, name, directive = m.group(1), m.group(2).strip(), (m.group(3) or "").upper()
        if directive == "SKIP":
            out.append((name, "skip"))
        elif not_ok and directive not in ("XFAIL", "TODO"):
            out.append((name, "fail"))
        else:
            out.append((name, "pass"))
    return out


def classify(exit_code: int | None, output: str, seconds: float, timeout_s: float) -> CheckResult:
    """A check's result from its exit status and TAP output.

    ``timeout``: killed at ``timeout_s`` (or not finished). ``fail``: a subtest failed, or
    the program exited other than 0 or 4 (KSFT_SKIP). ``skip``: exit 4, or nothing but
    skips. ``pass`` otherwise (a program without TAP output passes by its exit status 0).
    """
    tests = parse_tap(output)
    failed = tuple(name for name, s in tests if s == "fail")
    passed = sum(1 for _, s in tests if s == "pass")
    skipped = sum(1 for _, s in tests if s == "skip")
    if exit_code is None or (exit_code == _KILLED and seconds >= 0.95 * timeout_s):
        status = "timeout"
    elif failed or exit_code not in (0, KSFT_SKIP):
        status = "fail"
    elif exit_code == KSFT_SKIP or (skipped and not passed):
        status = "skip"
    else:
        status = "pass"
    tail = "" if status == "pass" else "\n".join(output.splitlines()[-TAIL_LINES:])
    return CheckResult(status, exit_code, seconds, passed, failed, skipped, tail)


# ---------------------------------------------------------------- in the guest


def run_checks(
    remote: Remote,
    specs: Sequence[CheckSpec],
    binaries: Mapping[str, Path],
    save_dir: Path | None = None,
    on_check: Callable[[str, CheckResult], None] | None = None,
    guest_dir: str = GUEST_DIR,
) -> dict[str, CheckResult]:
    """Copy each check's program into the guest, run it, classify it; results by test.

    The full output goes to ``save_dir/<dir>-<program>.log`` on the host. A check whose
    program was not built (a variant without it) is not run.
    """
    out: dict[str, CheckResult] = {}
    for spec in specs:
        binary = binaries.get(spec.test)
        if binary is None:
            continue
        where = f"{guest_dir}/{spec.directory}"
        remote.run(f"mkdir -p {shlex.quote(where)}", timeout=30)
        remote.put(binary, f"{where}/{spec.program}")
        remote.run(f"chmod 755 {shlex.quote(where + '/' + spec.program)}", timeout=30)
        start = time.monotonic()
        try:
            code, stdout, stderr = remote.run(spec.command(guest_dir), timeout=spec.timeout_s + 60)
            exit_code: int | None = code
        except SSHTimeout:
            exit_code, stdout, stderr = None, "", "korch: the check did not finish"
        seconds = time.monotonic() - start
        text = stdout + ("\n" + stderr if stderr.strip() else "")
        result = classify(exit_code, text, seconds, spec.timeout_s)
        if save_dir is not None:
            atomic_write(save_dir / f"{spec.test.replace('/', '-')}.log", text)
        out[spec.test] = result
        if on_check is not None:
            on_check(spec.test, result)
    return out


# ---------------------------------------------------------------- the gate

PASSED = "passed"
REGRESSED = "regressed"
FAILS_ON_BOTH = "fails on both"
FIXED = "fixed"
UNDECIDED = "not decided"


@dataclass(frozen=True)
class Tally:
    """A check's results over one variant's boots."""

    counts: Mapping[str, int] = field(default_factory=dict)
    failed_tests: Mapping[str, int] = field(default_factory=dict)  # subtest -> failing boots
    boots_failed: tuple[str, ...] = ()  # the boot ids where it failed

    def n(self, status: str) -> int:
        return int(self.counts.get(status, 0))

    @property
    def boots(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """``pass 16/16`` or ``FAIL 3/16, timeout 1/16``."""
        if not self.boots:
            return "not run"
        parts = [
            f"{'FAIL' if s == 'fail' else s} {self.n(s)}/{self.boots}"
            for s in ("fail", "timeout", "pass", "skip")
            if self.n(s)
        ]
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "boots": self.boots,
            **{s: self.n(s) for s in STATUSES},
            "failed_tests": dict(self.failed_tests),
            "boots_failed": list(self.boots_failed),
        }


@dataclass(frozen=True)
class CandidateCheck:
    candidate: str
    tally: Tally
    verdict: str  # passed, regressed, fails on both, fixed, not decided
    reason: str


@dataclass(frozen=True)
class CheckGate:
    """One check compared between the baseline and each candidate."""

    test: str
    baseline: Tally
    candidates: tuple[CandidateCheck, ...]

    @property
    def regressed(self) -> bool:
        return any(c.verdict == REGRESSED for c in self.candidates)


# how bad a result is: a boot booted twice (a resumed run) keeps its worst
SEVERITY = {"pass": 0, "skip": 1, "timeout": 2, "fail": 3}


def has_result(boot: Mapping[str, Any], test: str) -> bool:
    """True when ``boot`` (a results file's boot entry) holds a result of ``test``."""
    result = (boot.get("checks") or {}).get(test)
    return isinstance(result, Mapping) and result.get("status") in STATUSES


def tally(boots: Sequence[Mapping[str, Any]], test: str) -> Tally:
    """The results of ``test`` over ``boots`` (a results file's ``boots`` entries), one per
    boot: the attempts of a boot booted again count once, with their worst result."""
    worst: dict[str, Mapping[str, Any]] = {}
    for boot in boots:
        if not has_result(boot, test):
            continue
        result = boot["checks"][test]
        key = str(boot.get("id"))
        if key not in worst or SEVERITY[result["status"]] > SEVERITY[worst[key]["status"]]:
            worst[key] = result
    counts: Counter[str] = Counter(r["status"] for r in worst.values())
    subtests: Counter[str] = Counter()
    failed_boots = []
    for key, result in worst.items():
        if result["status"] == "fail":
            failed_boots.append(key)
            subtests.update(str(t) for t in result.get("failed") or ())
    return Tally(dict(counts), dict(subtests), tuple(failed_boots))


def decide(base: Tally, cand: Tally) -> tuple[str, str]:
    """The gate's verdict for one candidate and why."""
    if cand.n("fail") and base.n("fail"):
        return FAILS_ON_BOTH, (
            f"fails on the baseline too ({base.describe()}): not caused by this series"
        )
    if cand.n("fail"):
        if base.n("pass"):
            worst = sorted(cand.failed_tests.items(), key=lambda kv: -kv[1])[:3]
            which = "; ".join(f"{t} failed in {n} boot(s)" for t, n in worst)
            return REGRESSED, (
                f"passes on the baseline ({base.describe()}) and fails on"
                f" {cand.n('fail')} of {cand.boots} candidate boots"
                + (f" ({which})" if which else "")
            )
        return UNDECIDED, "fails on the candidate, but the baseline has no passing boot to compare"
    if base.n("fail") and cand.n("pass"):
        return FIXED, f"fails on the baseline ({base.describe()}), passes on every candidate boot"
    if cand.n("pass") and base.n("pass"):
        if cand.n("timeout") or base.n("timeout"):
            return PASSED, "passed wherever it finished; timed out on some boots"
        return PASSED, ""
    if not cand.boots or not base.boots:
        side = "candidate" if not cand.boots else "baseline"
        return UNDECIDED, f"no result on the {side}"
    return UNDECIDED, "skipped or timed out on every boot of a side"


def gate(results: Sequence[Any], baseline: str) -> tuple[CheckGate, ...]:
    """Compare every check found in ``results`` (results files) against ``baseline``."""
    by_side = {r.variant: r for r in results}
    if baseline not in by_side:
        return ()
    tests: list[str] = []
    for r in results:
        for boot in r.boots:
            for test in boot.get("checks") or {}:
                if test not in tests:
                    tests.append(test)
    out = []
    for test in tests:
        base = tally(by_side[baseline].boots, test)
        cands = []
        for r in results:
            if r.variant == baseline:
                continue
            t = tally(r.boots, test)
            verdict, reason = decide(base, t)
            cands.append(CandidateCheck(r.variant, t, verdict, reason))
        out.append(CheckGate(test, base, tuple(cands)))
    return tuple(out)
