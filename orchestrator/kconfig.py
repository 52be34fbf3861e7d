"""Kernel configuration: a base plus fragments, merged by the tree's own tools and verified.

The base is ``tinyconfig``, ``defconfig``, ``allnoconfig`` or a ``.config`` file. Fragments
are named files in kconfigs/ (``korch kconfigs`` lists them) or paths. They are merged
with the kernel's ``scripts/kconfig/merge_config.sh`` and completed by ``olddefconfig``;
then every symbol a fragment sets must hold in the final ``.config``. A symbol that
Kconfig dropped (an unmet dependency) stops the build with its name. A symbol that the tree
does not define at all is a warning that names it: the fragments serve many kernels, and a
tree that removed a symbol (``PROC_SYSCTL`` is gone from 7.3) has moved on, it is not
misconfigured. A typo is such a symbol too, which is why the warning names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import process
from .errors import KconfigError, UserError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_DEFINES = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*(?:#.*)?$", re.MULTILINE)
# ARCH= values whose Kconfig lives in another arch/ directory (the kernel's SRCARCH)
_SRCARCH = {"x86_64": "x86", "i386": "x86", "arm64": "arm64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    description: str
    symbols: dict[str, str]  # CONFIG_X -> value, "n" for "is not set"


def fragments_dir() -> Path:
    """kconfigs/ of a source checkout, else the copy installed with the package."""
    here = Path(__file__).resolve().parent.parent / "kconfigs"
    if here.is_dir():
        return here
    return Path(str(resources.files("orchestrator.kconfigs")))


def parse_config(text: str, origin: str = "<config>", strict: bool = False) -> dict[str, str]:
    """Symbols of a .config or fragment. ``strict`` rejects lines that are neither."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if m := _SET.match(line):
            out[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            out[m.group(1)] = "n"
        elif line.startswith("#"):
            continue
        elif strict:
            raise UserError(
                f"{origin}:{n}: not a Kconfig line: {raw!r}",
                hint="write CONFIG_NAME=value or '# CONFIG_NAME is not set'",
            )
    return out


def load_fragment(path: Path, name: str | None = None) -> Fragment:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"kconfig fragment {path} does not exist") from None
    desc = ""
    for line in text.splitlines():
        if line.startswith("#") and not _UNSET.match(line.strip()):
            desc = line.lstrip("# ").strip()
            break
    return Fragment(name or path.stem, path, desc, parse_config(text, str(path), strict=True))


def list_fragments() -> list[Fragment]:
    return [load_fragment(p) for p in sorted(fragments_dir().glob("*.config"))]


def resolve(ref: str) -> Fragment:
    """A fragment by name (kconfigs/NAME.config) or by path (already made absolute)."""
    if "/" in ref:
        return load_fragment(Path(ref))
    path = fragments_dir() / f"{ref}.config"
    if not path.is_file():
        names = ", ".join(f.name for f in list_fragments())
        raise UserError(
            f"kconfig fragment {ref!r} is not in {fragments_dir()}",
            hint=f"known fragments: {names}; or give a path to a fragment file",
        )
    return load_fragment(path, ref)


def affects_kconfig(path: str) -> bool:
    """Whether a changed file can change what Kconfig produces: Kconfig files, the kconfig
    tools and scripts it calls, stock configs and fragments, and the top Makefile."""
    name = path.rsplit("/", 1)[-1]
    return (
        name.startswith("Kconfig")
        or path.startswith("scripts/")
        or "/configs/" in path
        or path.endswith(".config")
        or path == "Makefile"
    )


def dropped_symbols(
    final: Mapping[str, str], fragments: list[Fragment], undefined: Iterable[str] = ()
) -> list[str]:
    """One line per fragment symbol whose value did not survive into ``final``, leaving out
    the symbols in ``undefined`` (those the tree does not define)."""
    skip = set(undefined)
    problems = []
    for frag in fragments:
        for sym, want in frag.symbols.items():
            got = final.get(sym, "n")
            if got != want and sym not in skip:
                shown = "not set" if got == "n" else got
                problems.append(f"{sym}={want} (from {frag.name}) ended up {shown}")
    return problems


def defined_symbols(srctree: Path, arch: str) -> set[str]:
    """Every ``CONFIG_`` symbol that a Kconfig file of ``srctree`` defines for ``arch``
    (``config`` or ``menuconfig`` lines; other architectures' arch/ directories skipped)."""
    srcarch = _SRCARCH.get(arch, arch)
    found: set[str] = set()
    for top, dirs, files in os.walk(srctree):
        here = Path(top)
        if here == srctree:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        elif here == srctree / "arch":
            dirs[:] = [d for d in dirs if d == srcarch]
        for name in files:
            if name.startswith("Kconfig"):
                try:
                    text = (here / name).read_text(errors="replace")
                except OSError:
                    continue
                found.update("CONFIG_" + m for m in _DEFINES.findall(text))
    return found


def undefined_symbols(fragments: list[Fragment], defined: set[str]) -> list[str]:
    """Fragment symbols that the tree does not define, each once, in fragment order."""
    out: list[str] = []
    for frag in fragments:
        for sym in frag.symbols:
            if sym not in defined and sym not in out:
                out.append(sym)
    return out


def undefined_warning(symbols: list[str], fragments: list[Fragment], tree: str) -> str:
    """The warning for fragment symbols that ``tree`` does not define."""
    where = {s: f.name for f in reversed(fragments) for s in f.symbols}
    named = ", ".join(f"{s} (from {where.get(s, '?')})" for s in symbols)
    return (
        f"{tree} does not define {named}: the tree has no such symbol (removed or renamed"
        " upstream, or a typo), so the fragment's setting is skipped"
    )


def differing_symbols(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    out = []
    for sym in sorted(set(a) | set(b)):
        va, vb = a.get(sym, "n"), b.get(sym, "n")
        if va != vb:
            out.append(f"{sym}: {va} vs {vb}")
    return out


def generate(
    srctree: Path,
    cfgdir: Path,
    base: str,
    fragments: list[Fragment],
    make_vars: list[str],
    env: Mapping[str, str],
    log: Path,
    on_line: Callable[[str], None] | None = None,
    undefined: Iterable[str] = (),
) -> str:
    """Produce the final .config text in ``cfgdir`` (an out-of-tree directory for Kconfig only).

    Fragment symbols in ``undefined`` (see :func:`undefined_symbols`) may end up unset; any
    other fragment symbol that olddefconfig dropped raises :class:`KconfigError`.
    """
    cfgdir.mkdir(parents=True, exist_ok=True)
    make = ["make", "-C", str(srctree), f"O={cfgdir}", *make_vars]
    config = cfgdir / ".config"
    if base in ("tinyconfig", "defconfig", "allnoconfig"):
        process.run([*make, base], env=env, log=log, on_line=on_line, what=f"make {base}")
    else:
        path = Path(base)
        if not path.is_file():
            raise UserError(f"kernel.kconfig[0]: base config {path} does not exist")
        config.write_bytes(path.read_bytes())
    if fragments:
        merge = srctree / "scripts" / "kconfig" / "merge_config.sh"
        if not merge.is_file():
            raise UserError(
                f"{srctree} has no scripts/kconfig/merge_config.sh; is it a Linux source tree?"
            )
        # -m: merge only; olddefconfig below resolves dependencies with the tree's Kconfig.
        process.run(
            ["sh", str(merge), "-m", "-O", str(cfgdir), str(config), *[str(f.path) for f in fragments]],
            cwd=srctree, env=env, log=log, on_line=on_line, what="merge_config.sh",
        )  # fmt: skip
    process.run(
        [*make, "olddefconfig"], env=env, log=log, on_line=on_line, what="make olddefconfig"
    )
    text = config.read_text()
    final = parse_config(text)
    dropped = dropped_symbols(final, fragments, undefined)
    if dropped:
        skipped = list(undefined)
        raise KconfigError(
            f"{len(dropped)} symbol(s) set by the kconfig fragments did not survive olddefconfig:\n  "
            + "\n  ".join(dropped)
            + (
                f"\n(skipped, as the tree does not define them: {', '.join(skipped)})"
                if skipped
                else ""
            ),
            symbols=[d.split("=")[0] for d in dropped],
            hint="the tree defines these symbols but a dependency is missing or excludes them: add the "
            "dependency to the fragment; 'make menuconfig' and search with '/' shows a symbol's "
            "dependencies",
        )
    return text
