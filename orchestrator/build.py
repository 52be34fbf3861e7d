"""Out-of-tree kernel builds with ccache and a content-addressed artifact cache.

The artifact key covers what decides the kernel image: the patched tree's content id
(source plus applied patches), the final .config, the compiler and linker versions,
architecture and make target. The same key twice builds nothing. Variants sharing a
source and a .config are built one after another in one build directory, switching
the work tree between them with git (only the files a series touches are rewritten),
so the second variant recompiles only what its patches touched.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from . import __version__, checks, kconfig, process, series
from .config import Experiment, SourceSpec, Variant
from .errors import BuildError, CommandError, KconfigError, UserError
from .fsutil import (
    atomic_copy,
    atomic_write,
    locked,
    now,
    publish_dir,
    sha256_file,
    sha256_text,
    stable_hash,
    sweep_stale,
    temp_dir_beside,
    write_json,
)
from .source import Source, SourceCache

RECIPE_VERSION = 2  # bump when the way korch builds changes what comes out
CHECKS_RECIPE = 1  # the same for the checks' programs (orchestrator/checks.py)
_COMPILED = re.compile(r"^\s+(CC|AS)(\s+\[M\])?\s+(\S+\.o)\s*$")
_ERROR = re.compile(
    r"(: (fatal )?error: |: undefined reference to |\*\*\* \[|^make(\[\d+\])?: \*\*\*|Error \d+)"
)


class Progress(Protocol):
    """What the build reports as it goes (the CLI renders it with rich or as plain lines)."""

    def stage(self, variant: str, name: str) -> None: ...
    def objects(self, variant: str, count: int) -> None: ...
    def note(self, message: str) -> None: ...


class NullProgress:
    def stage(self, variant: str, name: str) -> None:
        pass

    def objects(self, variant: str, count: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Build:
    """A built kernel's artifacts in the cache."""

    variant: str
    key: str
    dir: Path
    cached: bool  # True when this call built nothing
    objects_compiled: int
    metadata: dict[str, Any] = field(repr=False)
    # the experiment's correctness checks built from this variant's tree: test -> binary
    checks: dict[str, Path] = field(default_factory=dict)

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def system_map(self) -> Path:
        return self.dir / "System.map"

    @property
    def log(self) -> Path:
        return self.dir / "build.log"


def toolchain() -> dict[str, str]:
    """First version lines of the tools whose change changes the image."""
    out = {}
    for name, argv, package in (
        ("gcc", ["gcc", "--version"], "gcc"),
        ("ld", ["ld", "--version"], "binutils"),
        ("make", ["make", "--version"], "make"),
    ):
        process.require(argv[0], package)
        out[name] = process.run(argv).output.splitlines()[0].strip()
    return out


def jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_vars(arch: str, use_ccache: bool) -> list[str]:
    """make variables shared by Kconfig and the build (Kconfig probes the compiler)."""
    out = [f"ARCH={arch}"]
    if use_ccache:
        out.append("CC=ccache gcc")
    return out


def build_env(cache: Path) -> dict[str, str]:
    """Fixed build identity: the same inputs give the same image, and ccache hits."""
    return {
        "KBUILD_BUILD_USER": "korch",
        "KBUILD_BUILD_HOST": "korch",
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
        # "#1" whatever the build directory built before, so both variants carry the same string
        "KBUILD_BUILD_VERSION": "1",
        "CCACHE_DIR": str(cache / "ccache"),
        "CCACHE_BASEDIR": str(cache),
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "5G"),
        # Depend mode takes dependencies from the compiler's own -MMD output (kbuild asks for
        # it) instead of running the preprocessor first: a cold cache then costs a few
        # percent over plain make instead of about a quarter.
        "CCACHE_DEPEND": "1",
        "CCACHE_INODECACHE": "1",
        "LC_ALL": "C",
    }


def compiler_errors(log_text: str, limit: int = 25) -> str:
    """The compiler and make error lines of a failed build (with a line of context after)."""
    lines = log_text.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if _ERROR.search(line):
            for extra in lines[i : i + 3 if ": error: " in line else i + 1]:
                if extra not in picked:
                    picked.append(extra)
    if not picked:
        picked = lines[-limit:]
    return "\n".join(picked[:limit])


class Builder:
    """Builds an experiment's variants; one instance per command."""

    def __init__(
        self,
        exp: Experiment,
        cache: Path,
        progress: Progress | None = None,
        use_ccache: bool = True,
    ) -> None:
        self.exp = exp
        self.cache = cache
        self.progress = progress or NullProgress()
        self.use_ccache = use_ccache and shutil.which("ccache") is not None
        self.sources = SourceCache(cache, log=self.progress.note)
        sweep_stale(
            cache / "builds", cache / "configs", cache / "checks"
        )  # what a killed korch left
        self.env = build_env(cache)
        self.vars = make_vars(exp.arch, self.use_ccache)
        self._tools: dict[str, str] | None = None
        self.kconfig_s: dict[str, float] = {}  # time spent making each variant's .config
        self._sources: dict[SourceSpec, Source] = {}
        # fragment symbols each variant's tree does not define (a warning, not an error)
        self.kconfig_undefined: dict[str, list[str]] = {}

    @property
    def tools(self) -> dict[str, str]:
        if self._tools is None:
            self._tools = toolchain()
            if self.use_ccache:
                self._tools["ccache"] = (
                    process.run(["ccache", "--version"]).output.splitlines()[0].strip()
                )
        return self._tools

    # -- steps ---------------------------------------------------------------------

    def source(self, variant: str | None = None) -> Source:
        """The source tree ``variant`` builds from (default: ``kernel.source``), imported
        once per korch process."""
        spec = self.exp.source_of(variant) if variant else self.exp.source
        if spec not in self._sources:
            self.progress.stage("(source)", spec.describe())
            self._sources[spec] = self.sources.get(spec)
        return self._sources[spec]

    def fragments(self, variant: Variant) -> list[kconfig.Fragment]:
        refs = (*self.exp.kconfig, *self.exp.workload_kconfig, *variant.kconfig)
        return [kconfig.resolve(ref) for ref in refs]

    def kconfig_tree(self, patched: series.PatchedTree) -> str:
        """The tree id that decides the .config: the pristine source's unless the series
        touches what Kconfig reads, so variants that only change code share one .config
        (and its generation, seconds per variant) instead of regenerating the same text."""
        if not patched.patches:
            return patched.source.tree_id
        changed = self.sources.store.out(
            "diff-tree", "-r", "--name-only", patched.source.commit, patched.commit
        ).splitlines()
        return (
            patched.tree_id
            if any(kconfig.affects_kconfig(p) for p in changed)
            else patched.source.tree_id
        )

    def config_for(self, variant: Variant, patched: series.PatchedTree, log: Path) -> str:
        """The final .config text for ``variant`` (cached by tree, inputs and compiler)."""
        frags = self.fragments(variant)
        base_id = self.exp.kconfig_base
        if "/" in base_id:
            base_id = "file:" + sha256_file(Path(base_id))
        key = stable_hash(
            {
                "tree": self.kconfig_tree(patched),
                "base": base_id,
                "fragments": [[f.name, sha256_text(f.path.read_bytes())] for f in frags],
                "vars": self.vars,
                "tools": self.tools,
                "v": RECIPE_VERSION,
            }
        )
        cached = self.cache / "configs" / f"{key}.config"
        # the fragment symbols this tree does not define, found when the config was made
        undefined_file = cached.with_suffix(".undefined.json")
        if cached.exists() and undefined_file.exists():
            text = cached.read_text()
            known = self._read_undefined(undefined_file)
            if known is not None and not kconfig.dropped_symbols(
                kconfig.parse_config(text), frags, known
            ):
                self._warn_undefined(variant, known, frags)
                return text
        self.progress.stage(variant.name, "kconfig")
        start = time.monotonic()
        wt = patched.source.worktree
        with locked(wt.lock_file):
            self.sources.store.switch(wt, patched.commit)
            undefined = kconfig.undefined_symbols(
                frags, kconfig.defined_symbols(wt.path, self.exp.arch)
            )
            cfgdir = self.cache / "objdirs" / f"{patched.source.tree_id[:20]}-kconfig"
            text = kconfig.generate(
                wt.path,
                cfgdir,
                self.exp.kconfig_base,
                frags,
                self.vars,
                self.env,
                log,
                undefined=undefined,
            )
        atomic_write(cached, text)
        write_json(undefined_file, undefined)
        self.kconfig_s[variant.name] = round(time.monotonic() - start, 2)
        self._warn_undefined(variant, undefined, frags)
        return text

    @staticmethod
    def _read_undefined(path: Path) -> list[str] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        ok = isinstance(data, list) and all(isinstance(s, str) for s in data)
        return data if ok else None

    def _warn_undefined(
        self, variant: Variant, undefined: list[str], frags: list[kconfig.Fragment]
    ) -> None:
        self.kconfig_undefined[variant.name] = list(undefined)
        if undefined:
            self.progress.note(
                f"warning: {variant.name}: "
                + kconfig.undefined_warning(
                    undefined, frags, self.exp.source_of(variant.name).describe()
                )
            )

    def artifact_key(self, patched: series.PatchedTree, config_text: str) -> str:
        return stable_hash(
            {
                "tree": patched.tree_id,
                "config": sha256_text(config_text),
                "tools": self.tools,
                "arch": self.exp.arch,
                "target": self.exp.make_target,
                "v": RECIPE_VERSION,
            }
        )

    # -- the whole stage -----------------------------------------------------------

    def build_all(self, names: list[str] | None = None) -> dict[str, Build]:
        """Build the named variants (default: all) and return their artifacts."""
        variants = [self.exp.variant(n) for n in names] if names else list(self.exp.variants)
        patched: dict[str, series.PatchedTree] = {}
        for v in variants:
            src = self.source(v.name)
            self.progress.stage(v.name, "patches")
            patched[v.name] = series.prepare(self.sources.store, src, v.series)
        for v in variants:  # a check the tree lacks is an error before any build
            self.find_checks(v, patched[v.name])
        logs_dir = self.cache / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        configs: dict[str, str] = {}
        config_logs: dict[str, Path] = {}
        for v in variants:
            config_logs[v.name] = logs_dir / f"{self.exp.name}-{v.name}-kconfig.log"
            config_logs[v.name].write_text("")
            configs[v.name] = self.config_for(v, patched[v.name], config_logs[v.name])
        self.check_configs_agree(variants, configs)
        results: dict[str, Build] = {}
        for v in variants:
            results[v.name] = self.build_one(v, patched[v.name], configs[v.name])
        if self.exp.selftests:
            for v in variants:
                programs = self.build_checks(v, patched[v.name])
                results[v.name] = replace(results[v.name], checks=programs)
        return results

    def find_checks(self, variant: Variant, patched: series.PatchedTree) -> None:
        """Raise when ``variant``'s patched tree lacks a check's program (read from git,
        without checking the tree out)."""
        where = f"variant {variant.name} ({self.exp.source_of(variant.name).describe()})"
        store = self.sources.store
        top = checks.SELFTESTS.as_posix()

        def listing(path: str) -> list[str]:
            found = store.git("ls-tree", "--name-only", f"{patched.commit}:{path}", check=False)
            return found.output.splitlines() if found.returncode == 0 else []

        for spec in self.exp.selftests:
            files = listing(f"{top}/{spec.directory}")
            problem = checks.missing_program(
                spec,
                files,
                lambda: [d for d in listing(top) if "Makefile" in listing(f"{top}/{d}")],
                where,
            )
            if problem is not None:
                raise problem

    def build_checks(self, variant: Variant, patched: series.PatchedTree) -> dict[str, Path]:
        """The experiment's checks built from ``variant``'s patched tree (its own selftests,
        which the series may change too), cached by tree, test and compiler."""
        out: dict[str, Path] = {}
        todo = []
        for spec in self.exp.selftests:
            key = stable_hash(
                {"tree": patched.tree_id, "test": spec.test, "tools": self.tools,
                 "v": CHECKS_RECIPE}
            )  # fmt: skip
            final = self.cache / "checks" / key
            if (final / spec.program).is_file():
                out[spec.test] = final / spec.program
            else:
                todo.append((spec, final))
        if not todo:
            return out
        where = f"variant {variant.name} ({self.exp.source_of(variant.name).describe()})"
        wt = patched.source.worktree
        self.progress.stage(variant.name, "checks")
        with locked(wt.lock_file):
            self.sources.store.switch(wt, patched.commit)
            work = temp_dir_beside(self.cache / "checks" / "headers")
            try:
                # find_checks made sure the tree has every program, before any build
                log = self.cache / "logs" / f"{self.exp.name}-{variant.name}-checks.log"
                try:
                    process.run(
                        checks.headers_argv(wt.path, work / "obj", self.exp.arch),
                        log=log,
                        env=self.env,
                        what=f"exporting the headers of {where}",
                    )
                except CommandError as exc:
                    raise BuildError(
                        f"exporting the kernel headers of {where} for its checks failed",
                        argv=exc.argv,
                        returncode=exc.returncode,
                        tail=compiler_errors(log.read_text(errors="replace")),
                        log=str(log),
                    ) from None
                for spec, final in todo:
                    tmp = temp_dir_beside(final)
                    try:
                        checks.build_program(
                            wt.path, spec, work / "obj" / "usr" / "include", tmp, log,
                            where, env=self.env,
                        )  # fmt: skip
                        write_json(
                            tmp / "metadata.json",
                            {"test": spec.test, "patched_tree_id": patched.tree_id,
                             "toolchain": self.tools, "variant": variant.name},
                        )  # fmt: skip
                        for junk in tmp.glob("*.o"):
                            junk.unlink()
                        publish_dir(tmp, final)
                    finally:
                        if tmp.exists():
                            shutil.rmtree(tmp, ignore_errors=True)
                    out[spec.test] = final / spec.program
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return out

    def check_configs_agree(self, variants: list[Variant], configs: dict[str, str]) -> None:
        """Variants of one source tree without their own fragments must end with identical
        .config files (trees differ in their Kconfig, so across trees they may differ)."""
        by_source: dict[SourceSpec, list[Variant]] = {}
        for v in variants:
            if not v.kconfig:
                by_source.setdefault(self.exp.source_of(v.name), []).append(v)
        for plain in by_source.values():
            self._check_agree(plain, configs)

    def _check_agree(self, plain: list[Variant], configs: dict[str, str]) -> None:
        if len(plain) < 2:
            return
        ref = plain[0]
        ref_syms = kconfig.parse_config(configs[ref.name])
        for other in plain[1:]:
            diff = kconfig.differing_symbols(ref_syms, kconfig.parse_config(configs[other.name]))
            if diff:
                raise KconfigError(
                    f"variants {ref.name} and {other.name} end with different .config files although the "
                    f"experiment gives neither its own fragments ({len(diff)} symbol(s)):\n  "
                    + "\n  ".join(diff[:40]),
                    symbols=[d.split(":")[0] for d in diff],
                    hint="a patch changes Kconfig; if that is intended, give the variant its own 'kconfig' "
                    "fragments so the difference is explicit",
                )

    def build_one(self, variant: Variant, patched: series.PatchedTree, config_text: str) -> Build:
        key = self.artifact_key(patched, config_text)
        final = self.cache / "builds" / key
        meta_file = final / "metadata.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            self.progress.stage(variant.name, "cached")
            return Build(variant.name, key, final, True, 0, meta)

        src = patched.source
        wt = src.worktree
        config_sha = sha256_text(config_text)
        objdir = self.cache / "objdirs" / f"{src.tree_id[:20]}-{config_sha[:12]}"
        objdir.mkdir(parents=True, exist_ok=True)
        compiled = 0

        def on_line(line: str) -> None:
            nonlocal compiled
            if _COMPILED.match(line):
                compiled += 1
                self.progress.objects(variant.name, compiled)

        argv = [
            "make", "-C", str(wt.path), f"O={objdir}", *self.vars,
            f"-j{jobs()}", self.exp.make_target,
        ]  # fmt: skip
        with locked(wt.lock_file) as lock_fd:
            if meta_file.exists():  # built by the korch this one waited for
                meta = json.loads(meta_file.read_text())
                self.progress.stage(variant.name, "cached")
                return Build(variant.name, key, final, True, 0, meta)
            tmp = temp_dir_beside(final)
            log = tmp / "build.log"
            try:
                self.progress.stage(variant.name, "checkout")
                self.sources.store.switch(wt, patched.commit)
                cfg = objdir / ".config"
                # Only rewrite .config when it differs: kbuild then has nothing to redo.
                if not cfg.exists() or cfg.read_text() != config_text:
                    atomic_write(cfg, config_text)
                self.progress.stage(variant.name, "build")
                start = time.monotonic()
                try:
                    process.run(
                        argv,
                        env=self.env,
                        log=log,
                        on_line=on_line,
                        what=f"building {variant.name}",
                        # make and its jobs hold the work tree's lock while any of them runs
                        pass_fds=(lock_fd,),
                    )
                except CommandError as exc:
                    said = log.read_text(errors="replace")
                    full = "No space left on device" in said
                    raise BuildError(
                        f"build of variant {variant.name} failed (make exited with {exc.returncode})"
                        + (f": the disk is full where it builds ({objdir})" if full else "")
                        + "; the compiler said:",
                        argv=argv,
                        returncode=exc.returncode,
                        tail=compiler_errors(said),
                        log=str(self._keep_failed_log(variant, log)),
                        hint=(
                            f"free space on the file system of {objdir} (korch's cache, see"
                            " KORCH_CACHE), then run again"
                            if full
                            else "fix the patch or the configuration"
                        )
                        + "; 'korch build' resumes where make stopped",
                    ) from None
                duration = time.monotonic() - start
                image = objdir / "arch" / "x86" / "boot" / "bzImage"
                for src_path, name in (
                    (image, "bzImage"),
                    (objdir / "System.map", "System.map"),
                    (cfg, "config"),
                ):
                    atomic_copy(src_path, tmp / name)
                release = (objdir / "include" / "config" / "kernel.release").read_text().strip()
                meta = self.metadata(
                    variant,
                    patched,
                    key,
                    config_text,
                    release,
                    duration,
                    compiled,
                    argv,
                    objdir,
                    tmp,
                )
                write_json(tmp / "metadata.json", meta)
                publish_dir(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        self.progress.stage(variant.name, "done")
        return Build(variant.name, key, final, False, compiled, meta)

    def _keep_failed_log(self, variant: Variant, log: Path) -> Path:
        kept = self.cache / "logs" / f"{self.exp.name}-{variant.name}-build-failed.log"
        atomic_copy(log, kept)
        return kept

    def metadata(
        self,
        variant: Variant,
        patched: series.PatchedTree,
        key: str,
        config_text: str,
        release: str,
        duration: float,
        compiled: int,
        argv: list[str],
        objdir: Path,
        tmp: Path,
    ) -> dict[str, Any]:
        src = patched.source
        return {
            "schema": 1,
            "korch_version": __version__,
            "experiment": self.exp.name,
            "experiment_file": str(self.exp.path),
            "variant": variant.name,
            "description": variant.description,
            "key": key,
            "kernel_release": release,
            "kernel_version": src.kernel_version,
            "source": {
                "spec": src.spec.describe(),
                "tree_id": src.tree_id,
                "provenance": src.provenance,
            },
            "patched_tree_id": patched.tree_id,
            "patches": [
                {
                    "file": p.label,
                    "subject": p.subject,
                    "author": p.author,
                    "sha256": p.sha256,
                    "commit": p.commit,
                }
                for p in patched.patches
            ],
            "config_sha256": sha256_text(config_text),
            # fragment symbols this tree does not define (skipped with a warning)
            "kconfig_undefined": self.kconfig_undefined.get(variant.name, []),
            "toolchain": self.tools,
            "arch": self.exp.arch,
            "target": self.exp.make_target,
            "ccache": self.use_ccache,
            "objects_compiled": compiled,
            "durations_s": {
                "build": round(duration, 2),
                "kconfig": self.kconfig_s.get(variant.name, 0.0),
            },
            "hashes": {
                name: sha256_file(tmp / name) for name in ("bzImage", "System.map", "config")
            },
            "host": {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "jobs": jobs(),
            },
            "built_at": now(),
            "make_command": process.display(
                argv, env={k: v for k, v in self.env.items() if k.startswith("KBUILD")}
            ),
            "objdir": str(objdir),
            "reproduce": shlex.join(
                ["korch", "build", str(self.exp.path), "--variant", variant.name]
            ),
        }


EXPORTED = ("bzImage", "System.map", "config", "build.log", "metadata.json")


def load_exported(directory: Path) -> Build:
    """A :class:`Build` from artifacts :func:`export` copied to ``directory``
    (``RUNDIR/build/<variant>/``), for a machine that has neither the source nor the cache.

    The bzImage must match the sha256 its metadata recorded: artifacts travel between CI
    jobs, and a truncated or swapped kernel must not be benchmarked under the wrong name.
    """
    meta_file = directory / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{directory}: no exported build here ({meta_file.name} is missing)",
            hint="run 'korch build --resume RUNDIR' first, or download the build artifact into RUNDIR/build/",
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    missing = [k for k in ("variant", "key", "kernel_release", "config_sha256") if k not in meta]
    if missing:
        raise UserError(f"{meta_file}: not a korch build's metadata (missing {', '.join(missing)})")
    image = directory / "bzImage"
    if not image.is_file():
        raise UserError(f"{directory}: the kernel image bzImage is missing")
    expected = (meta.get("hashes") or {}).get("bzImage")
    if expected and sha256_file(image) != expected:
        raise UserError(
            f"{image}: sha256 differs from the one in {meta_file.name}; the artifact is damaged"
            " or belongs to another build",
            hint="download the build artifact again",
        )
    programs = {
        p.relative_to(directory / "checks").as_posix(): p
        for p in sorted((directory / "checks").rglob("*"))
        if p.is_file()
    }
    return Build(meta["variant"], meta["key"], directory, True, 0, meta, programs)


def export(
    builds: dict[str, Build], out: Path, on_copy: Callable[[Path], None] | None = None
) -> None:
    """Copy artifacts to ``out/build/<variant>/`` (a run directory) through temporary names."""
    for name, b in builds.items():
        dest = out / "build" / name
        for f in EXPORTED:
            if (b.dir / f).exists():
                atomic_copy(b.dir / f, dest / f)
                if on_copy:
                    on_copy(dest / f)
        for test, program in b.checks.items():  # the checks built from this variant's tree
            atomic_copy(program, dest / "checks" / test)
            if on_copy:
                on_copy(dest / "checks" / test)
