"""Experiment files: YAML with ``schema: 1``, validated into frozen dataclasses.

Every problem is reported with the file, the line, the key path, what was expected and
what was found, and all problems of a file are reported at once. Relative paths in the
file are resolved against the file's directory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .additions import DEFAULT_DIR, PACKAGE_NAME, GuestFile, GuestSpec, guest_path_problem
from .checks import TEST_NAME, CheckSpec
from .errors import ConfigError

if TYPE_CHECKING:
    from .workloads.api import Workload

SCHEMA_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MEMORY_RE = re.compile(r"^[1-9][0-9]*[MG]$")
# beyond these a value is a typo, not a plan (a run would take days)
MAX_RUNS = 1000
MAX_BLOCKS = 1000
MAX_DURATION_S = 3600.0
DEFAULT_EXPERIMENT = "maps-contention"


# ---------------------------------------------------------------- the frozen model


@dataclass(frozen=True)
class SourceSpec:
    """Where the kernel source comes from. ``kind`` is path, tarball, git or debian."""

    kind: str
    location: str  # a path, URL, git URL/path or Debian package name
    ref: str | None = None  # git ref
    sha256: str | None = None  # tarball checksum
    suite: str | None = None  # Debian suite
    version: str | None = None  # Debian package version

    def describe(self) -> str:
        extra = ""
        if self.ref:
            extra = f" @ {self.ref}"
        if self.suite:
            extra += f" from {self.suite}"
        if self.version:
            extra += f" ={self.version}"
        return f"{self.kind}:{self.location}{extra}"


@dataclass(frozen=True)
class SeriesSpec:
    """A patch series: explicit files, a directory, an mbox, a git range or a lore message-id."""

    kind: str  # files, dir, mbox, git, b4
    files: tuple[Path, ...] = ()
    path: Path | None = None  # dir, mbox, git repository, or b4 local mbox
    spec: str | None = None  # git range or b4 message-id
    first: int | None = None  # only the first this many patches (korch bisect's prefixes)

    def describe(self) -> str:
        if self.first is not None:
            whole = replace(self, first=None).describe()
            return f"the first {self.first} patch(es) of {whole}"
        if self.kind == "files":
            return ", ".join(p.name for p in self.files) or "no patches"
        if self.kind == "git":
            return f"git range {self.spec} in {self.path}"
        if self.kind == "b4":
            local = f" (local mbox {self.path})" if self.path else ""
            return f"lore message-id {self.spec}{local}"
        return f"{self.kind} {self.path}"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str = ""
    series: SeriesSpec = field(default_factory=lambda: SeriesSpec("files"))
    kconfig: tuple[str, ...] = ()  # extra fragments for this variant only
    source: SourceSpec | None = None  # its own kernel source (default: kernel.source)


@dataclass(frozen=True)
class VmSpec:
    cpus: int = 4
    memory: str = "1G"
    accel: str = "auto"
    boot_timeout_s: float = 60.0


@dataclass(frozen=True)
class WorkloadSpec:
    """``workload:``: the keys every workload has, and the named workload's own parameters
    (its declaration in orchestrator/workloads parses them)."""

    name: str = "maps-contention"
    runs: int = 1  # per boot: runs of one boot are not independent, so few of them
    blocks: int = 16  # a block boots every variant once; the boot is the unit of replication
    duration_s: float = 10.0
    headline: str | None = None  # the metric whose verdict is the experiment's answer
    smallest_effect_pct: float = 5.0  # the smallest change of the headline worth detecting
    params: dict[str, Any] = field(
        default_factory=lambda: {"region_mb": 128, "busy_ms": 2, "procfile": "maps"}
    )

    @property
    def declaration(self) -> Workload:
        """The named workload's declaration (orchestrator/workloads)."""
        from .workloads.registry import get

        return get(self.name)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file."""

    name: str
    path: Path  # the file it came from (or the embedded default's path)
    source: SourceSpec
    kconfig_base: str  # tinyconfig, defconfig, allnoconfig, or a path to a .config file
    kconfig: tuple[str, ...]  # fragments shared by every variant
    variants: tuple[Variant, ...]
    baseline: str
    vm: VmSpec
    workload: WorkloadSpec
    make_target: str = "bzImage"
    arch: str = "x86_64"
    # settings to vary, each combination a cell compared on its own: ((key, values), ...)
    # with keys from MATRIX_KEYS, e.g. (("vm.cpus", (2, 4)), ("workload.procfile", ("maps", "smaps")))
    matrix: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # correctness checks run in every boot after the timed runs (orchestrator/checks.py)
    checks: tuple[CheckSpec, ...] = ()
    # files and packages added to the guest image (orchestrator/additions.py)
    guest: GuestSpec = field(default_factory=GuestSpec)

    def source_of(self, variant: str) -> SourceSpec:
        """The kernel source a variant builds from: its own, else ``kernel.source``."""
        return self.variant(variant).source or self.source

    @property
    def cross_tree(self) -> bool:
        """Whether the variants build from more than one kernel source."""
        return len({self.source_of(v.name) for v in self.variants}) > 1

    @property
    def selftests(self) -> tuple[CheckSpec, ...]:
        """Every selftest to build from each variant's tree: the checks, then the
        workload's own (the kselftest workload's tests)."""
        own = self.workload.declaration.selftests(self.workload.params)
        listed = {c.test for c in self.checks}
        return (*self.checks, *(t for t in own if t.test not in listed))

    @property
    def workload_kconfig(self) -> tuple[str, ...]:
        """The workload's fragments the experiment does not list itself."""
        return tuple(f for f in self.workload.declaration.kconfig if f not in self.kconfig)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        names = ", ".join(v.name for v in self.variants)
        raise ConfigError([f"{self.path}: no variant named '{name}' (the file has: {names})"])


# ---------------------------------------------------------------- validation machinery


class _Checker:
    """Walks a composed YAML node tree, collecting problems with line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def problem(self, node: yaml.Node | None, keypath: str, message: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        where = f"{keypath}: " if keypath else ""
        self.problems.append(f"{self.path}{line}: {where}{message}")

    @staticmethod
    def kind_of(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = yaml.safe_load(yaml.serialize(node))
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"a boolean ({str(value).lower()})"
        if isinstance(value, int):
            return f"an integer ({value})"
        if isinstance(value, float):
            return f"a number ({value})"
        return f"a string ({value!r})"

    def mapping(
        self,
        node: yaml.Node,
        keypath: str,
        allowed: dict[str, bool],
    ) -> dict[str, yaml.Node] | None:
        """Check that ``node`` is a mapping whose keys are in ``allowed`` (name -> required)."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, keypath, f"expected a mapping, got {self.kind_of(node)}")
            return None
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{keypath}.{key}" if keypath else str(key)
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.problem(knode, sub, f"unknown key (expected one of: {expected})")
                continue
            if key in out:
                self.problem(knode, sub, "key given twice")
                continue
            out[key] = vnode
        for key, required in allowed.items():
            if required and key not in out:
                sub = f"{keypath}.{key}" if keypath else key
                self.problem(node, sub, "required key is missing")
        return out

    def scalar(
        self,
        node: yaml.Node,
        keypath: str,
        types: tuple[type, ...],
        expected: str,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, keypath, f"expected {expected}, got {self.kind_of(node)}")
            return None
        value = yaml.safe_load(yaml.serialize(node))
        # bool is an int subclass; never accept true/false where a number is expected
        if isinstance(value, bool) and bool not in types:
            ok = False
        elif float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        else:
            ok = isinstance(value, types)
        if not ok:
            self.problem(node, keypath, f"expected {expected}, got {self.kind_of(node)}")
            return None
        if check is not None:
            msg = check(value)
            if msg:
                self.problem(node, keypath, f"{msg} (got {value!r})")
                return None
        return value

    def string(
        self, node: yaml.Node, keypath: str, check: Callable[[Any], str | None] | None = None
    ) -> str | None:
        return self.scalar(node, keypath, (str,), "a string", check)

    def string_list(self, node: yaml.Node, keypath: str) -> list[tuple[str, yaml.Node]] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, keypath, f"expected a list of strings, got {self.kind_of(node)}")
            return None
        out = []
        for i, item in enumerate(node.value):
            value = self.string(item, f"{keypath}[{i}]")
            if value is not None:
                out.append((value, item))
        return out


def _positive(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None if value > 0 else "must be greater than zero"


def _between(low: float, high: float, unit: str = "") -> Callable[[Any], str | None]:
    """A check for a number in (low, high]: finite, positive, and not absurdly large (a
    run of 1e11 runs or an infinite duration is a typo that would only fail hours later)."""

    def check(value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if not low < value <= high:
            return f"must be greater than {low:g} and at most {high:g}{unit}"
        return None

    return check


MIN_MEMORY_MB = 256  # the kernel, the initramfs and the workload's programs, with room


def memory_mb(text: str) -> int:
    """'512M' -> 512, '2G' -> 2048."""
    return int(text[:-1]) * (1024 if text.endswith("G") else 1)


def _memory(value: Any) -> str | None:
    if not MEMORY_RE.match(value):
        return "must look like 512M or 2G"
    if memory_mb(value) < MIN_MEMORY_MB:
        return f"must be at least {MIN_MEMORY_MB}M: the guest does not boot with less"
    return None


def _power_of_two(value: Any) -> str | None:
    return None if value > 0 and value & (value - 1) == 0 else "must be a power of two"


def _name(value: Any) -> str | None:
    return (
        None
        if NAME_RE.match(value)
        else (
            "must be lower case letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    )


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


# ---------------------------------------------------------------- sections


def _source(
    c: _Checker, node: yaml.Node, base: Path, keypath: str = "kernel.source"
) -> SourceSpec | None:
    if not isinstance(node, yaml.MappingNode):
        c.problem(
            node,
            keypath,
            f"expected a mapping with one of path, tarball, git, debian; got {c.kind_of(node)}",
        )
        return None
    keys = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    kinds = [k for k in ("path", "tarball", "git", "debian") if k in keys]
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        c.problem(node, keypath, f"give exactly one of path, tarball, git, debian (found: {found})")
        return None
    kind = kinds[0]
    allowed = {
        "path": {"path": True},
        "tarball": {"tarball": True, "sha256": False},
        "git": {"git": True, "ref": True},
        "debian": {"debian": True, "suite": False, "version": False},
    }[kind]
    m = c.mapping(node, keypath, allowed)
    if m is None or kind not in m:
        return None
    loc = c.string(m[kind], f"{keypath}.{kind}")
    if loc is None:
        return None
    if kind == "path":
        return SourceSpec("path", str((base / loc).resolve()))
    if kind == "tarball":
        sha = None
        if "sha256" in m:
            sha = c.string(
                m["sha256"],
                f"{keypath}.sha256",
                lambda v: None if re.fullmatch(r"[0-9a-f]{64}", v) else "must be 64 hex digits",
            )
        if not re.match(r"^https://", loc):
            if re.match(r"^[a-z]+://", loc):
                c.problem(m[kind], f"{keypath}.tarball", f"only https URLs or paths (got {loc!r})")
                return None
            loc = str((base / loc).resolve())
        return SourceSpec("tarball", loc, sha256=sha)
    if kind == "git":
        ref = c.string(m["ref"], f"{keypath}.ref") if "ref" in m else None
        if not re.match(r"^[a-z+]+://|^[^/]+@[^:]+:", loc):
            loc = str((base / loc).resolve())
        return SourceSpec("git", loc, ref=ref)
    pkg = c.string(
        m[kind],
        f"{keypath}.debian",
        lambda v: (
            None if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", v) else "must be a Debian package name"
        ),
    )
    suite = c.string(m["suite"], f"{keypath}.suite") if "suite" in m else None
    version = c.string(m["version"], f"{keypath}.version") if "version" in m else None
    if pkg is None:
        return None
    return SourceSpec("debian", pkg, suite=suite, version=version)


def _series(c: _Checker, vnode: dict[str, yaml.Node], keypath: str, base: Path) -> SeriesSpec:
    if "patches" in vnode and "series" in vnode:
        c.problem(vnode["series"], keypath, "give either patches or series, not both")
    if "patches" in vnode:
        items = c.string_list(vnode["patches"], f"{keypath}.patches") or []
        return SeriesSpec("files", files=tuple((base / v).resolve() for v, _ in items))
    if "series" not in vnode:
        return SeriesSpec("files")
    node = vnode["series"]
    sk = f"{keypath}.series"
    if not isinstance(node, yaml.MappingNode):
        c.problem(
            node, sk, f"expected a mapping with one of dir, mbox, git, b4; got {c.kind_of(node)}"
        )
        return SeriesSpec("files")
    keys = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    kinds = [k for k in ("dir", "git", "b4") if k in keys]
    if not kinds and "mbox" in keys:
        kinds = ["mbox"]
    if len(kinds) != 1:
        c.problem(
            node, sk, "give exactly one of dir, mbox, git (with repo), b4 (optionally with mbox)"
        )
        return SeriesSpec("files")
    kind = kinds[0]
    allowed = {
        "dir": {"dir": True},
        "mbox": {"mbox": True},
        "git": {"git": True, "repo": True},
        "b4": {"b4": True, "mbox": False},
    }[kind]
    m = c.mapping(node, sk, allowed)
    if m is None or kind not in m:
        return SeriesSpec("files")
    value = c.string(m[kind], f"{sk}.{kind}")
    if value is None:
        return SeriesSpec("files")
    if kind in ("dir", "mbox"):
        return SeriesSpec(kind, path=(base / value).resolve())
    if kind == "git":
        if ".." not in value:
            c.problem(
                m[kind], f"{sk}.git", f"expected a revision range like v7.2..HEAD (got {value!r})"
            )
        repo = c.string(m["repo"], f"{sk}.repo") if "repo" in m else None
        return SeriesSpec("git", path=(base / repo).resolve() if repo else None, spec=value)
    local = c.string(m["mbox"], f"{sk}.mbox") if "mbox" in m else None
    return SeriesSpec("b4", path=(base / local).resolve() if local else None, spec=value)


def _section_vm(c: _Checker, node: yaml.Node | None) -> VmSpec:
    if node is None:
        return VmSpec()
    m = c.mapping(
        node, "vm", {"cpus": False, "memory": False, "accel": False, "boot_timeout_s": False}
    )
    if m is None:
        return VmSpec()
    kw: dict[str, Any] = {}
    if "cpus" in m:
        kw["cpus"] = c.scalar(m["cpus"], "vm.cpus", (int,), "an integer", _positive)
    if "memory" in m:
        kw["memory"] = c.string(m["memory"], "vm.memory", _memory)
    if "accel" in m:
        kw["accel"] = c.string(m["accel"], "vm.accel", _one_of("auto", "kvm", "tcg"))
    if "boot_timeout_s" in m:
        kw["boot_timeout_s"] = c.scalar(
            m["boot_timeout_s"], "vm.boot_timeout_s", (float,), "a number", _between(0, 3600, " s")
        )
    return VmSpec(**{k: v for k, v in kw.items() if v is not None})


GENERIC_WORKLOAD_KEYS = (
    "name", "runs", "blocks", "boots", "duration_s", "headline", "smallest_effect_pct",
)  # fmt: skip


def _section_workload(c: _Checker, node: yaml.Node | None, base: Path, vm: VmSpec) -> WorkloadSpec:
    from .workloads.api import ParseContext, metric_set
    from .workloads.registry import WORKLOADS

    if node is None:
        return WorkloadSpec()
    # the name decides the other keys: read it first
    name = "maps-contention"
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if getattr(knode, "value", None) == "name":
                got = c.string(vnode, "workload.name", _one_of(*WORKLOADS))
                if got is None:
                    return WorkloadSpec()
                name = got
    declared = WORKLOADS[name]
    fields = {k: False for k in (*GENERIC_WORKLOAD_KEYS, *declared.keys)}
    m = c.mapping(node, "workload", fields)
    if m is None:
        return WorkloadSpec()
    kw: dict[str, Any] = {"name": name}
    if "runs" in m:
        kw["runs"] = c.scalar(
            m["runs"],
            "workload.runs",
            (int,),
            "an integer",
            _between(0, MAX_RUNS, " runs per boot"),
        )
    kw["blocks"] = _blocks(c, m)
    if "smallest_effect_pct" in m:
        kw["smallest_effect_pct"] = c.scalar(
            m["smallest_effect_pct"],
            "workload.smallest_effect_pct",
            (float,),
            "a number (percent)",
            lambda v: None if 0 < v < 100 else "must be between 0 and 100 (percent)",
        )
    if "duration_s" in m:
        kw["duration_s"] = c.scalar(
            m["duration_s"],
            "workload.duration_s",
            (float,),
            "a number",
            _between(0, MAX_DURATION_S, " s"),
        )
    before = len(c.problems)
    kw["params"] = declared.parse(ParseContext(c, m, base, vm, node))
    if "headline" in m and len(c.problems) == before:
        spec = WorkloadSpec(**{k: v for k, v in kw.items() if v is not None})
        provenance = {"name": name, "duration_s": spec.duration_s, **spec.params}
        keys = [mm.key for mm in metric_set(declared, provenance)]
        kw["headline"] = c.string(
            m["headline"],
            "workload.headline",
            lambda v: None if v in keys else f"must be a metric {name} reports: {', '.join(keys)}",
        )
    return WorkloadSpec(**{k: v for k, v in kw.items() if v is not None})


def _blocks(c: _Checker, m: dict[str, yaml.Node]) -> int | None:
    """``workload.blocks``, or ``workload.boots``: its old name (boots per variant, which is
    what a block count is), still read so that older experiment files keep working."""
    if "blocks" in m and "boots" in m:
        c.problem(
            m["boots"],
            "workload.boots",
            "give either blocks or boots (its old name), not both",
        )
        return None
    key = "blocks" if "blocks" in m else "boots" if "boots" in m else None
    if key is None:
        return None
    value = c.scalar(m[key], f"workload.{key}", (int,), "an integer", _between(0, MAX_BLOCKS))
    return int(value) if value is not None else None


# A matrix may vary what is decided at boot time (not what is built), so that every cell
# reuses the same kernels; the values take the checks of the keys they stand for. The
# workload's keys come from its declaration (Workload.matrix).
MATRIX_KEYS: dict[str, tuple[tuple[type, ...], str, Callable[[Any], str | None] | None]] = {
    "vm.cpus": ((int,), "an integer", _positive),
    "vm.memory": ((str,), "a string", _memory),
}  # fmt: skip


def matrix_keys(workload: str) -> dict[str, Any]:
    """The keys a matrix may vary for ``workload``: the vm's and the workload's own."""
    from .workloads.registry import WORKLOADS

    own = WORKLOADS[workload].matrix if workload in WORKLOADS else {}
    return {**MATRIX_KEYS, **{f"workload.{k}": v for k, v in own.items()}}


MAX_MATRIX_JOBS = 256  # GitHub Actions runs at most this many jobs of one matrix


def _section_matrix(
    c: _Checker, node: yaml.Node | None, variants: int, workload: str
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if node is None:
        return ()
    known = matrix_keys(workload)
    sections = {k.split(".")[0] for k in known}
    top = c.mapping(node, "matrix", {s: False for s in sorted(sections)})
    if top is None:
        return ()
    out: list[tuple[str, tuple[Any, ...]]] = []
    for section, snode in top.items():
        keys = {k.split(".")[1]: False for k in known if k.startswith(section + ".")}
        m = c.mapping(snode, f"matrix.{section}", keys)
        for key, vnode in (m or {}).items():
            full = f"{section}.{key}"
            types, expected, check = known[full]
            if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
                c.problem(
                    vnode, f"matrix.{full}", f"expected a non-empty list, got {c.kind_of(vnode)}"
                )
                continue
            values = [
                c.scalar(item, f"matrix.{full}[{i}]", types, expected, check)
                for i, item in enumerate(vnode.value)
            ]
            if any(v is None for v in values):
                continue
            if len(set(values)) != len(values):
                c.problem(vnode, f"matrix.{full}", "a value is listed twice")
                continue
            out.append((full, tuple(values)))
    cells = 1
    for _, chosen in out:
        cells *= len(chosen)
    if cells * max(variants, 1) > MAX_MATRIX_JOBS:
        c.problem(
            node,
            "matrix",
            f"{cells} cells x {variants} variants = {cells * variants} jobs; a GitHub Actions"
            f" matrix runs at most {MAX_MATRIX_JOBS}",
        )
    return tuple(out)


KCONFIG_BASES = ("tinyconfig", "defconfig", "allnoconfig")


def _kconfig_list(c: _Checker, node: yaml.Node, keypath: str, base: Path) -> list[str]:
    """Fragment references: a name in kconfigs/ or a path (containing '/' or ending .config)."""
    out = []
    for value, _item in c.string_list(node, keypath) or []:
        if "/" in value or value.endswith(".config"):
            out.append(str((base / value).resolve()))
        else:
            out.append(value)
    return out


def load(path: Path) -> Experiment:
    """Read and validate an experiment file; raise :class:`ConfigError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such file"], hint="give the path of an experiment YAML file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return loads(text, path)


def loads(text: str, path: Path) -> Experiment:
    """Validate experiment text that came from ``path`` (used for error messages and relative paths)."""
    c = _Checker(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}{line}: not valid YAML: {exc.problem}"]) from None
    if root is None:
        raise ConfigError(
            [f"{path}: the file is empty"], hint="see the README for an example experiment"
        )
    top = c.mapping(
        root,
        "",
        {
            "schema": True, "name": True, "kernel": True, "variants": True, "baseline": False,
            "vm": False, "workload": False, "matrix": False, "checks": False, "guest": False,
        },
    )  # fmt: skip
    if top is None:
        raise ConfigError(c.problems)
    if "schema" in top:
        c.scalar(
            top["schema"],
            "schema",
            (int,),
            "an integer",
            lambda v: None if v == SCHEMA_VERSION else f"this korch reads schema {SCHEMA_VERSION}",
        )
    name = c.string(top["name"], "name", _name) if "name" in top else None
    base = path.parent

    source = None
    kconfig_base, kconfig = "tinyconfig", []
    make_target, arch = "bzImage", "x86_64"
    if "kernel" in top:
        k = c.mapping(
            top["kernel"],
            "kernel",
            {"source": True, "kconfig": True, "make_target": False, "arch": False},
        )
        if k is not None:
            if "source" in k:
                source = _source(c, k["source"], base)
            if "kconfig" in k:
                items = _kconfig_list(c, k["kconfig"], "kernel.kconfig", base)
                if not items:
                    c.problem(
                        k["kconfig"],
                        "kernel.kconfig",
                        "needs at least a base (tinyconfig, defconfig, or a file)",
                    )
                else:
                    kconfig_base, kconfig = items[0], items[1:]
                    if kconfig_base not in KCONFIG_BASES and "/" not in kconfig_base:
                        c.problem(
                            k["kconfig"],
                            "kernel.kconfig[0]",
                            f"the first entry is the base: one of {', '.join(KCONFIG_BASES)} or a "
                            f"path to a .config file (got {kconfig_base!r})",
                        )
            if "make_target" in k:
                make_target = (
                    c.string(k["make_target"], "kernel.make_target", _one_of("bzImage"))
                    or make_target
                )
            if "arch" in k:
                arch = c.string(k["arch"], "kernel.arch", _one_of("x86_64")) or arch

    variants: list[Variant] = []
    if "variants" in top:
        vnode = top["variants"]
        if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
            c.problem(
                vnode, "variants", f"expected a non-empty list of variants, got {c.kind_of(vnode)}"
            )
        else:
            seen: set[str] = set()
            for i, item in enumerate(vnode.value):
                kp = f"variants[{i}]"
                m = c.mapping(
                    item,
                    kp,
                    {
                        "name": True,
                        "description": False,
                        "patches": False,
                        "series": False,
                        "kconfig": False,
                        "source": False,
                    },
                )
                if m is None or "name" not in m:
                    continue
                vname = c.string(m["name"], f"{kp}.name", _name)
                if vname is None:
                    continue
                if vname in seen:
                    c.problem(m["name"], f"{kp}.name", f"variant name {vname!r} is used twice")
                seen.add(vname)
                desc = (
                    (c.string(m["description"], f"{kp}.description") or "")
                    if "description" in m
                    else ""
                )
                series = _series(c, m, kp, base)
                frags = (
                    tuple(_kconfig_list(c, m["kconfig"], f"{kp}.kconfig", base))
                    if "kconfig" in m
                    else ()
                )
                vsource = _source(c, m["source"], base, f"{kp}.source") if "source" in m else None
                variants.append(Variant(vname, desc, series, frags, vsource))

    baseline = variants[0].name if variants else ""
    if "baseline" in top:
        b = c.string(top["baseline"], "baseline")
        if b is not None:
            if variants and b not in {v.name for v in variants}:
                names = ", ".join(v.name for v in variants)
                c.problem(
                    top["baseline"], "baseline", f"names no variant (variants: {names}; got {b!r})"
                )
            baseline = b

    vm = _section_vm(c, top.get("vm"))
    workload = _section_workload(c, top.get("workload"), base, vm)
    matrix = _section_matrix(c, top.get("matrix"), len(variants), workload.name)
    checks = _section_checks(c, top["checks"]) if "checks" in top else ()
    guest = _section_guest(c, top["guest"], base) if "guest" in top else GuestSpec()
    if c.problems or source is None or name is None:
        raise ConfigError(c.problems or [f"{path}: incomplete experiment"])
    return Experiment(
        name=name,
        path=path,
        source=source,
        kconfig_base=kconfig_base,
        kconfig=tuple(kconfig),
        variants=tuple(variants),
        baseline=baseline,
        vm=vm,
        workload=workload,
        make_target=make_target,
        arch=arch,
        matrix=matrix,
        checks=checks,
        guest=guest,
    )


def _section_guest(c: _Checker, node: yaml.Node, base: Path) -> GuestSpec:
    """``guest: {files, packages}``: what the experiment adds to the guest image."""
    m = c.mapping(node, "guest", {"files": False, "packages": False})
    if m is None:
        return GuestSpec()
    files: list[GuestFile] = []
    if "files" in m:
        if not isinstance(m["files"], yaml.SequenceNode):
            c.problem(m["files"], "guest.files", f"expected a list, got {c.kind_of(m['files'])}")
        else:
            for i, item in enumerate(m["files"].value):
                kp = f"guest.files[{i}]"
                if isinstance(item, yaml.ScalarNode):
                    host_text, guest_path = c.string(item, kp), None
                else:
                    f = c.mapping(item, kp, {"host": True, "guest": True})
                    if f is None or "host" not in f or "guest" not in f:
                        continue
                    host_text = c.string(f["host"], f"{kp}.host")
                    guest_path = c.string(
                        f["guest"], f"{kp}.guest", lambda v: guest_path_problem(v)
                    )
                    if guest_path is None:
                        continue
                if host_text is None:
                    continue
                host = (base / host_text).resolve()
                if not host.exists():
                    c.problem(item, kp, f"{host} does not exist")
                    continue
                files.append(GuestFile(host, guest_path or f"{DEFAULT_DIR}/{host.name}"))
    packages: list[str] = []
    if "packages" in m:
        for name, item in c.string_list(m["packages"], "guest.packages") or ():
            if not PACKAGE_NAME.match(name):
                c.problem(item, "guest.packages", f"not a Debian package name: {name!r}")
            else:
                packages.append(name)
    return GuestSpec(tuple(files), tuple(packages))


def _check_name(value: Any) -> str | None:
    if not TEST_NAME.match(value) or ".." in value.split("/"):
        return "expected <dir>/<program> of tools/testing/selftests, e.g. proc/proc-maps-race"
    return None


def _section_checks(c: _Checker, node: yaml.Node, keypath: str = "checks") -> tuple[CheckSpec, ...]:
    """``checks:``: selftest programs, each a string or ``{test, args, env, timeout_s}``."""
    if not isinstance(node, yaml.SequenceNode):
        c.problem(node, keypath, f"expected a list of selftests, got {c.kind_of(node)}")
        return ()
    out: list[CheckSpec] = []
    seen: set[str] = set()

    def add(spec: CheckSpec, item: yaml.Node, kp: str) -> None:
        if spec.test in seen:
            c.problem(item, kp, f"{spec.test} is listed twice")
        seen.add(spec.test)
        out.append(spec)

    for i, item in enumerate(node.value):
        kp = f"{keypath}[{i}]"
        if isinstance(item, yaml.ScalarNode):
            test = c.string(item, kp, _check_name)
            if test is not None:
                add(CheckSpec(test), item, kp)
            continue
        m = c.mapping(item, kp, {"test": True, "args": False, "env": False, "timeout_s": False})
        if m is None or "test" not in m:
            continue
        test = c.string(m["test"], f"{kp}.test", _check_name)
        args = (
            tuple(a for a, _ in c.string_list(m["args"], f"{kp}.args") or ()) if "args" in m else ()
        )
        env: list[tuple[str, str]] = []
        if "env" in m:
            if not isinstance(m["env"], yaml.MappingNode):
                c.problem(m["env"], f"{kp}.env", f"expected a mapping, got {c.kind_of(m['env'])}")
            else:
                for knode, vnode in m["env"].value:
                    key = getattr(knode, "value", None)
                    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                        c.problem(knode, f"{kp}.env", f"not a variable name: {key!r}")
                        continue
                    value = c.scalar(
                        vnode, f"{kp}.env.{key}", (str, int, float), "a string or a number"
                    )
                    if value is not None:
                        env.append((key, str(value)))
        timeout = 300.0
        if "timeout_s" in m:
            timeout = (
                c.scalar(
                    m["timeout_s"],
                    f"{kp}.timeout_s",
                    (int, float),
                    "a number of seconds",
                    _between(0, 86400, " s"),
                )
                or timeout
            )
        if test is not None:
            add(CheckSpec(test, args, tuple(env), float(timeout)), item, kp)
    return tuple(out)


def default_experiment_path() -> Path:
    """The experiment shipped inside the package (``korch run`` with no argument)."""
    return Path(str(resources.files("orchestrator.experiments") / f"{DEFAULT_EXPERIMENT}.yaml"))


def load_default() -> Experiment:
    return load(default_experiment_path())


# the checker and the value checks, for the workloads' own keys (orchestrator/workloads)
Checker = _Checker
between, one_of, positive, power_of_two = _between, _one_of, _positive, _power_of_two
selftest_list = _section_checks
