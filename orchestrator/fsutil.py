"""Small file-system helpers: atomic writes, cache locations, locks, hashing, and the UTC
timestamp korch writes into its files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$KORCH_CACHE``, else ``$XDG_CACHE_HOME/korch``, else ``~/.cache/korch``."""
    explicit = os.environ.get("KORCH_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "korch"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object in canonical form (the cache keys use it)."""
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))


# Temporary names carry the pid of the korch that made them (".NAME.k<pid>.<random>.tmp"),
# so a later korch can tell the leftovers of one that was killed outright (SIGKILL, power
# loss: no cleanup code runs) from the work in progress of one still running.
_STALE = re.compile(r"^\..*\.k(\d+)\.[^.]*\.tmp(?:\.index)?$")


def temp_prefix(name: str) -> str:
    """The prefix of a temporary name for ``name`` (use with suffix ".tmp")."""
    return f".{name}.k{os.getpid()}."


def temp_dir(parent: Path, name: str) -> Path:
    """A fresh temporary directory in ``parent``, named for ``name`` and this process."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".tmp", dir=parent))


def temp_file(parent: Path, name: str) -> tuple[int, Path]:
    """A fresh temporary file in ``parent`` (open descriptor and path)."""
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=".tmp", dir=parent)
    return fd, Path(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_stale(*parents: Path) -> list[Path]:
    """Remove the temporaries in ``parents`` that a korch no longer alive left behind;
    returns what was removed. Safe at any time: a live korch's temporaries are kept."""
    removed = []
    for parent in parents:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            m = _STALE.match(entry.name)
            if not m or _alive(int(m.group(1))):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                continue  # not ours to remove after all (permissions): leave it
            removed.append(entry)
    return removed


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _naming(exc, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it has none: a write to a full disk
    fails on a file descriptor, and "No space left on device" alone does not say where."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary name in the destination directory."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dst.name), suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _naming(exc, dst) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def now() -> str:
    """The current time as korch records it in its files: UTC, ``2026-11-26T21:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def temp_dir_beside(final: Path) -> Path:
    """A fresh temporary directory next to ``final`` (same file system, so rename works)."""
    return temp_dir(final.parent, final.name)


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename a completed temporary directory to its final name; if another process won
    the race, keep theirs and drop ours."""
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[int]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block; the
    block gets the lock's file descriptor.

    Waiting for another holder is said on standard error (a silent minute looks like a
    hang). The lock is released by closing, not unlocking: a child given the descriptor
    (``process.run(pass_fds=...)``, e.g. make) keeps holding it until it and every process
    it started are gone, so an interrupted korch's orphaned compilers still keep the next
    korch out of the same work tree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"korch: waiting for another korch that is using {path.parent}\n")
            sys.stderr.flush()
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield fh.fileno()
