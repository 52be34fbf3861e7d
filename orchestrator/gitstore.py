"""The cache's git object store: pristine sources, patched trees and their work trees.

Every kernel source korch sees is imported into one bare repository under the cache.
Its git *tree id* is the source's content id: the same files give the same id whichever
provider brought them. Patches become commits made without touching any work tree
(a temporary index, ``git apply --cached``), so a patch that fails leaves nothing half
applied. A work tree is switched between variants with a two-tree ``read-tree -m -u``,
which rewrites only the files that differ; make then recompiles only what they touch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import process
from .errors import InfraError
from .fsutil import atomic_write, locked, temp_dir

# Fixed identity and dates: the same tree and message always give the same commit id.
_IDENT = {
    "GIT_COMMITTER_NAME": "korch",
    "GIT_COMMITTER_EMAIL": "korch@localhost",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00+0000",
}


@dataclass(frozen=True)
class WorkTree:
    """A checked-out copy of some tree in the cache, with its own index."""

    path: Path
    index: Path
    head_file: Path
    lock_file: Path

    def head(self) -> str | None:
        try:
            return self.head_file.read_text().strip() or None
        except FileNotFoundError:
            return None


class GitStore:
    """Thin wrapper around ``git`` with ``GIT_DIR`` pointing at the cache repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.git_dir = root / "git"
        self.trees_dir = root / "trees"

    # -- plumbing ------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {"GIT_DIR": str(self.git_dir), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
        env.update(extra)
        return env

    def git(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> process.Result:
        full = self.env()
        if env:
            full.update(env)
        # A user's ~/.gitconfig must not change what korch's private repository does.
        full.setdefault("HOME", str(self.root))
        full["XDG_CONFIG_HOME"] = str(self.root)
        return process.run(["git", *args], env=full, **kw)

    def out(self, *args: str, **kw: Any) -> str:
        return self.git(*args, **kw).output.strip()

    def ensure(self) -> None:
        """Create the bare repository on first use."""
        if (self.git_dir / "HEAD").exists():
            return
        process.require("git", "git")
        with locked(self.root / "git.lock"):
            if (self.git_dir / "HEAD").exists():
                return
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            process.run(["git", "init", "-q", "--bare", str(self.git_dir)])
            for key, value in (
                ("core.compression", "1"),
                ("gc.auto", "0"),
                ("core.bigFileThreshold", "8m"),
            ):
                self.git("config", key, value)

    def has(self, object_id: str) -> bool:
        res = self.git("cat-file", "-e", object_id, check=False)
        return res.returncode == 0

    # -- importing sources ---------------------------------------------------------

    def import_dir(
        self, directory: Path, index: Path, *, force: bool = True, pathspec_nul: bytes | None = None
    ) -> str:
        """Hash every file below ``directory`` into the store; return the tree id.

        ``index`` keeps git's stat cache, so importing an unchanged directory again only
        stats its files. ``force`` adds files that .gitignore patterns would skip (a
        tarball's contents are all source). ``pathspec_nul`` limits the import to a
        NUL-separated list of paths.
        """
        env = {"GIT_WORK_TREE": str(directory), "GIT_INDEX_FILE": str(index)}
        if pathspec_nul is not None:
            # Start from an empty index so that files gone from the list go away.
            with contextlib.suppress(FileNotFoundError):
                index.unlink()
            self.git(
                "add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul",
                env=env, cwd=directory, input=pathspec_nul, what=f"importing {directory}",
            )  # fmt: skip
        else:
            args = ["add", "-A"] + (["-f"] if force else []) + ["."]
            self.git(*args, env=env, cwd=directory, what=f"importing {directory}")
        return self.out("write-tree", env=env)

    def commit(
        self,
        tree: str,
        message: str,
        parent: str | None = None,
        author: dict[str, str] | None = None,
    ) -> str:
        """Make a commit object for ``tree`` (deterministic for the same inputs)."""
        env = dict(_IDENT)
        env.update(
            author
            or {
                "GIT_AUTHOR_NAME": "korch",
                "GIT_AUTHOR_EMAIL": "korch@localhost",
                "GIT_AUTHOR_DATE": "1970-01-01T00:00:00+0000",
            }
        )
        args = ["commit-tree", tree]
        if parent:
            args += ["-p", parent]
        return self.git(*args, "-F", "-", env=env, input=message.encode()).output.strip()

    def tree_of(self, commit: str) -> str:
        return self.out("rev-parse", f"{commit}^{{tree}}")

    def set_ref(self, name: str, commit: str) -> None:
        self.git("update-ref", name, commit)

    # -- work trees ----------------------------------------------------------------

    def worktree(self, tree_id: str) -> WorkTree:
        base = self.trees_dir / tree_id[:20]
        return WorkTree(
            path=base,
            index=base.with_name(base.name + ".index"),
            head_file=base.with_name(base.name + ".head"),
            lock_file=base.with_name(base.name + ".lock"),
        )

    def adopt_worktree(self, directory: Path, index: Path, tree_id: str, commit: str) -> WorkTree:
        """Turn a directory just imported with ``index`` into the work tree for ``tree_id``."""
        wt = self.worktree(tree_id)
        wt.path.parent.mkdir(parents=True, exist_ok=True)
        if wt.path.exists():
            shutil.rmtree(directory, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                index.unlink()
            return wt
        os.replace(index, wt.index)
        atomic_write(wt.head_file, commit + "\n")
        os.rename(directory, wt.path)
        return wt

    def checkout_new(self, tree_id: str, commit: str) -> WorkTree:
        """Check ``commit`` out into a fresh work tree for ``tree_id`` (temporary name, then rename)."""
        wt = self.worktree(tree_id)
        if wt.path.exists():
            return wt
        wt.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(wt.path.parent, wt.path.name)
        idx = tmp.with_name(tmp.name.removesuffix(".tmp") + "-index.tmp")
        try:
            self._checkout_all(tmp, idx, commit)
            return self.adopt_worktree(tmp, idx, tree_id, commit)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                idx.unlink()
            raise

    def switch(self, wt: WorkTree, commit: str) -> None:
        """Make ``wt`` hold ``commit``, rewriting only the files that differ."""
        current = wt.head()
        if current == commit:
            return
        env = {"GIT_WORK_TREE": str(wt.path), "GIT_INDEX_FILE": str(wt.index)}
        if current and self.has(current):
            self.git(
                "read-tree",
                "-m",
                "-u",
                current,
                commit,
                env=env,
                cwd=wt.path,
                what=f"switching {wt.path} to {commit[:12]}",
            )
        else:
            self._checkout_all(wt.path, wt.index, commit)
        atomic_write(wt.head_file, commit + "\n")

    def _checkout_all(self, directory: Path, index: Path, commit: str) -> None:
        """Write every file of ``commit`` into ``directory`` (no earlier state to merge from)."""
        env = {"GIT_WORK_TREE": str(directory), "GIT_INDEX_FILE": str(index)}
        self.git(
            "read-tree",
            "-u",
            "--reset",
            commit,
            env=env,
            cwd=directory,
            what=f"checking out {commit[:12]}",
        )

    @contextlib.contextmanager
    def temp_index(self, commit: str) -> Iterator[dict[str, str]]:
        """An environment with a private index holding ``commit``'s tree (no work tree)."""
        fd, idx = tempfile.mkstemp(prefix="korch-index-", dir=self.root)
        os.close(fd)
        os.unlink(idx)
        env = {"GIT_INDEX_FILE": idx}
        try:
            self.git("read-tree", commit, env=env)
            yield env
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(idx)


def read_index_map(path: Path) -> str | None:
    """Small key -> value files under the cache (source key -> tree id)."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def require_git_ok(store: GitStore, object_id: str, what: str) -> None:
    if not store.has(object_id):
        raise InfraError(
            f"{what}: object {object_id[:12]} is missing from the cache repository {store.git_dir}",
            hint="the cache was pruned or damaged; remove that directory and run again",
        )
