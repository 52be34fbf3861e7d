"""Compile the guest programs statically on the host, into a content-addressed cache.

Three programs, one source file each plus shared ``common.c`` (and ``hist.c`` for the
mapper): separate binaries keep each program readable against the method and give each
process its own name in ``ps`` inside the guest. Static glibc costs about 0.8 MB per
binary (0.35 MB gzipped in the initramfs), which is cheap next to the guest's other files.

The cache key covers every source file, the full ``gcc --version`` text, the flags and the
static C library itself, so a new compiler or libc rebuilds and a second call compiles
nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ... import process
from ...errors import CommandError
from ...fsutil import cache_root, publish_dir, sha256_file, stable_hash, temp_dir_beside, write_json

SOURCE_DIR = Path(__file__).parent / "c"
CFLAGS = ("-O2", "-static", "-std=gnu11", "-Wall", "-Wextra")
# Binary name -> the source files linked into it.
PROGRAMS: dict[str, tuple[str, ...]] = {
    "maps-mapper": ("mapper.c", "hist.c", "common.c"),
    "maps-scanner": ("scanner.c", "common.c"),
    "maps-busywait": ("busywait.c", "common.c"),
}
HEADERS = ("common.h", "hist.h")
CACHE_KIND = "workloads/maps-contention"


def compile_argv(gcc: str, name: str, out_dir: Path, source_dir: Path | None = None) -> list[str]:
    """The gcc command line that builds program ``name`` into ``out_dir``."""
    sources = [str((source_dir or SOURCE_DIR) / s) for s in PROGRAMS[name]]
    return [gcc, *CFLAGS, "-o", str(out_dir / name), *sources]


def compile_workload(cache: Path | None = None) -> dict[str, Path]:
    """Build the maps-contention programs (or find them cached) and return name -> path.

    ``cache`` defaults to :func:`~orchestrator.fsutil.cache_root`. Compiler errors raise
    :class:`~orchestrator.errors.CommandError` naming the source and quoting gcc.
    """
    root = cache if cache is not None else cache_root()
    gcc = process.require("gcc", "gcc")
    version = process.run([gcc, "--version"], what="gcc --version").output
    libc = process.run([gcc, "-print-file-name=libc.a"], what="locating libc.a").output.strip()
    libc_path = Path(libc)
    if not libc_path.is_absolute() or not libc_path.is_file():
        raise CommandError(
            "gcc finds no static C library (libc.a), needed for static guest programs",
            argv=[gcc, "-print-file-name=libc.a"],
            returncode=0,
            tail=libc,
            hint="install libc6-dev",
        )
    files = sorted({f for sources in PROGRAMS.values() for f in sources} | set(HEADERS))
    inputs = {
        "sources": {f: sha256_file(SOURCE_DIR / f) for f in files},
        "programs": {name: list(sources) for name, sources in PROGRAMS.items()},
        "gcc_version": version,
        "cflags": list(CFLAGS),
        "libc_sha256": sha256_file(libc_path),
    }
    key = stable_hash(inputs)
    final = root / CACHE_KIND / key[:24]
    if not all((final / name).is_file() for name in PROGRAMS):
        if final.exists():
            # Entries are published whole, so a partial one was damaged by hand: rebuild it.
            shutil.rmtree(final)
        tmp = temp_dir_beside(final)
        try:
            argvs = {name: _compile_one(gcc, name, tmp) for name in PROGRAMS}
            write_json(tmp / "metadata.json", {"key": key, "inputs": inputs, "argv": argvs})
            publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {name: final / name for name in PROGRAMS}


def _compile_one(gcc: str, name: str, out_dir: Path) -> list[str]:
    argv = compile_argv(gcc, name, out_dir)
    result = process.run(argv, check=False, what=f"compiling {name}")
    if result.returncode != 0:
        hint = "fix the C source"
        if "cannot find -lc" in result.output:
            hint = "install libc6-dev (static glibc, libc.a)"
        raise CommandError(
            f"compiling the guest program {name} from {', '.join(PROGRAMS[name])} failed"
            f" (gcc exited with {result.returncode})",
            argv=argv,
            returncode=result.returncode,
            tail=result.tail,
            hint=hint,
        )
    return argv
