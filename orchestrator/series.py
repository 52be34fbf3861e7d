"""Patch series: explicit files, a directory of patches, an mbox, a git range, a lore thread.

Every provider yields :class:`PatchFile` objects in order. :func:`apply_series` turns them
into one commit per patch on top of the pristine source, in the cache's object store and
without touching any work tree: a patch that does not apply raises :class:`ApplyError`
naming the patch file, its subject and the first file and hunk that failed, and the
pristine source stays exactly as it was.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import process
from .config import SeriesSpec
from .errors import ApplyError, CommandError, UserError
from .fsutil import atomic_write, sha256_text, stable_hash
from .gitstore import GitStore, read_index_map
from .source import Source


@dataclass(frozen=True)
class PatchFile:
    """One patch as read from its provider (before it is applied)."""

    label: str  # what to call it in messages: a file name, or mbox#N
    text: bytes

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)


@dataclass(frozen=True)
class AppliedPatch:
    label: str
    subject: str
    author: str
    sha256: str
    commit: str


@dataclass(frozen=True)
class PatchedTree:
    """A source with a series applied: the commit and the tree id that a build uses."""

    source: Source
    commit: str
    tree_id: str
    patches: tuple[AppliedPatch, ...]


# ---------------------------------------------------------------- reading series


def read_series(spec: SeriesSpec, scratch: Path) -> list[PatchFile]:
    """The patches of ``spec`` in application order. ``scratch`` is a temporary directory."""
    if spec.kind == "files":
        out = []
        for path in spec.files:
            if not path.is_file():
                raise UserError(
                    f"patch {path} does not exist",
                    hint="paths in 'patches' are relative to the experiment file",
                )
            out.append(PatchFile(path.name, path.read_bytes()))
        return out
    if spec.kind == "dir":
        assert spec.path is not None
        if not spec.path.is_dir():
            raise UserError(f"series directory {spec.path} does not exist")
        files = sorted(spec.path.glob("*.patch"), key=lambda p: p.name)
        if not files:
            raise UserError(f"series directory {spec.path} holds no *.patch files")
        return [PatchFile(p.name, p.read_bytes()) for p in files]
    if spec.kind == "mbox":
        assert spec.path is not None
        if not spec.path.is_file():
            raise UserError(f"mbox {spec.path} does not exist")
        return split_mbox(spec.path, scratch, spec.path.name)
    if spec.kind == "git":
        repo = spec.path
        if repo is None or (not (repo / ".git").exists() and not (repo / "HEAD").exists()):
            raise UserError(
                f"series.repo {repo} is not a git repository",
                hint="give the repository that holds the range",
            )
        assert spec.spec is not None
        res = process.run(
            ["git", "-C", str(repo), "format-patch", "--stdout", "--no-signature", spec.spec],
            check=False,
            what=f"git format-patch {spec.spec}",
        )
        if res.returncode != 0:
            raise UserError(f"series: git range {spec.spec} in {repo}: {res.tail}")
        mbox = scratch / "range.mbox"
        mbox.write_text(res.output + "\n")
        patches = split_mbox(mbox, scratch / "split", spec.spec)
        if not patches:
            raise UserError(f"series: git range {spec.spec} in {repo} holds no commits")
        return patches
    if spec.kind == "b4":
        return _read_b4(spec, scratch)
    raise AssertionError(spec.kind)


def _read_b4(spec: SeriesSpec, scratch: Path) -> list[PatchFile]:
    process.require("b4", "b4")
    assert spec.spec is not None
    out = scratch / "b4"
    out.mkdir()
    argv = ["b4", "am", "-o", str(out), "-n", "series", "--no-cover"]
    if spec.path is not None:
        if not spec.path.is_file():
            raise UserError(f"series.mbox {spec.path} does not exist")
        argv += ["-m", str(spec.path)]
    argv.append(spec.spec)
    env = {
        "XDG_CACHE_HOME": str(scratch / "cache"),
        # b4 stops without a word when git has no user identity (a fresh CI machine).
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "user.name",
        "GIT_CONFIG_VALUE_0": "korch",
        "GIT_CONFIG_KEY_1": "user.email",
        "GIT_CONFIG_VALUE_1": "korch@localhost",
    }
    res = process.run(argv, check=False, timeout=600, cwd=scratch, env=env)
    mboxes = sorted(out.glob("*.mbx"))
    if res.returncode != 0 or not mboxes:
        source = f"local mbox {spec.path}" if spec.path else "lore"
        raise UserError(
            f"series: b4 could not fetch message-id {spec.spec} from {source}:\n{res.tail}",
            hint="check the message-id; without network access give series.mbox, a local copy of the thread",
        )
    return split_mbox(mboxes[0], scratch / "split", f"b4:{spec.spec}")


def split_mbox(mbox: Path, dest: Path, label: str) -> list[PatchFile]:
    """Split an mbox into its messages (git mailsplit) in order."""
    dest.mkdir(parents=True, exist_ok=True)
    if not mbox.is_file():
        raise UserError(f"mbox {mbox}: no such file", hint="check the series' mbox path")
    res = process.run(
        ["git", "mailsplit", "-o" + str(dest), str(mbox)],
        what=f"splitting mbox {mbox}",
        check=False,
    )
    files = sorted(p for p in dest.iterdir() if re.fullmatch(r"\d+", p.name))
    if res.returncode != 0 or not files:
        # an empty or garbled file is the input's fault, not the machine's: no retry helps
        said = res.tail.strip().replace("\n", "; ")
        raise UserError(
            f"mbox {mbox} holds no messages" + (f" (git mailsplit: {said})" if said else ""),
            hint="give an mbox of patch mails: 'b4 am' or 'git format-patch --stdout' writes one",
        )
    return [PatchFile(f"{label}#{i}", p.read_bytes()) for i, p in enumerate(files, 1)]


# ---------------------------------------------------------------- applying


@dataclass(frozen=True)
class _MailInfo:
    subject: str
    author_name: str
    author_email: str
    date: str
    message: str
    diff: bytes


def _mailinfo(patch: PatchFile, scratch: Path) -> _MailInfo:
    msg, diff = scratch / "msg", scratch / "diff"
    res = process.run(
        ["git", "mailinfo", "-k", str(msg), str(diff)],
        input=patch.text,
        what=f"reading {patch.label}",
    )
    fields = {}
    for line in res.output.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key] = value
    subject = fields.get("Subject", "").strip()
    subject = re.sub(r"^\s*(\[[^\]]*\]\s*)+", "", subject) or Path(patch.label).stem
    body = msg.read_text(errors="replace").strip()
    return _MailInfo(
        subject=subject,
        author_name=fields.get("Author") or "unknown",
        author_email=fields.get("Email") or "unknown@localhost",
        date=fields.get("Date", ""),
        message=subject + ("\n\n" + body if body else "") + "\n",
        diff=diff.read_bytes(),
    )


def hunks_of(diff: bytes) -> dict[str, list[tuple[int, str]]]:
    """Per file (old name), the hunks as (old start line, header line), in order."""
    out: dict[str, list[tuple[int, str]]] = {}
    current: str | None = None
    for raw in diff.decode("utf-8", errors="replace").splitlines():
        if raw.startswith("--- "):
            name = raw[4:].split("\t")[0].strip()
            current = name[2:] if name.startswith(("a/", "b/")) else name
            out.setdefault(current, [])
        elif raw.startswith("@@ ") and current is not None:
            m = re.match(r"@@ -(\d+)", raw)
            if m:
                out[current].append((int(m.group(1)), raw))
    return out


# what git apply says about a patch file that is broken in itself, not one that meets a
# kernel it was not written for
DAMAGED = re.compile(
    r"corrupt patch at line \d+|patch fragment without header at line \d+[^\n]*"
    r"|patch with only garbage at line \d+"
)


def describe_failure(output: str, diff: bytes) -> tuple[str | None, int | None, str]:
    """From ``git apply`` errors: the first failing file, the hunk number and a summary."""
    m = re.search(r"error: patch failed: (.+):(\d+)", output)
    if m:
        file, line = m.group(1), int(m.group(2))
        for i, (start, header) in enumerate(hunks_of(diff).get(file, []), 1):
            if start == line:
                return file, i, f"{file}: hunk #{i} ({header.strip()}) does not apply"
        return file, None, f"{file}: the hunk at line {line} does not apply"
    m = re.search(r"error: (.+?): (does not exist in index|No such file or directory)", output)
    if m:
        return m.group(1), None, f"{m.group(1)}: the file does not exist in this source"
    m = re.search(r"error: (.+?): already exists in index", output)
    if m:
        return m.group(1), None, f"{m.group(1)}: the patch creates it but it already exists"
    m = re.search(r"error: (.+)", output)
    return (
        None,
        None,
        m.group(1)
        if m
        else output.strip().splitlines()[-1]
        if output.strip()
        else "git apply failed",
    )


def apply_series(
    store: GitStore, source: Source, patches: list[PatchFile], series_label: str
) -> PatchedTree:
    """Apply ``patches`` on top of ``source`` as one commit each (cached by content)."""
    if not patches:
        return PatchedTree(source, source.commit, source.tree_id, ())
    key = stable_hash({"base": source.commit, "patches": [p.sha256 for p in patches], "v": 1})
    memo = store.root / "sources" / "series" / key
    cached = read_index_map(memo)
    if cached:
        lines = cached.splitlines()
        if lines and all(store.has(c.split("\t")[0]) for c in lines):
            applied = []
            for p, line in zip(patches, lines, strict=True):
                commit, subject, author = ([*line.split("\t"), "", ""])[:3]
                applied.append(AppliedPatch(p.label, subject, author, p.sha256, commit))
            head = applied[-1].commit
            return PatchedTree(source, head, store.tree_of(head), tuple(applied))

    scratch = Path(tempfile.mkdtemp(prefix="korch-apply-"))
    try:
        parent = source.commit
        applied = []
        with store.temp_index(parent) as env:
            for n, patch in enumerate(patches, 1):
                info = _mailinfo(patch, scratch)
                if not info.diff.strip():
                    raise ApplyError(
                        f"patch {patch.label} (\"{info.subject}\", {n} of {len(patches)} in {series_label}) holds no diff",
                        patch=patch.label, subject=info.subject,
                        hint="is it a cover letter or an empty file? remove it from the series",
                    )  # fmt: skip
                res = store.git(
                    "apply", "--cached", "--whitespace=nowarn", "-",
                    env=env, input=info.diff, check=False, cwd=scratch,
                )  # fmt: skip
                if res.returncode != 0:
                    file, hunk, summary = describe_failure(res.output, info.diff)
                    damaged = DAMAGED.search(res.output)
                    if damaged:
                        raise ApplyError(
                            f"patch {patch.label} (\"{info.subject}\", {n} of {len(patches)} in {series_label}) is"
                            f" damaged: git apply says {damaged.group(0)!r}\n"
                            + "\n".join("  | " + line for line in res.output.strip().splitlines()[-8:]),
                            patch=patch.label, subject=info.subject,
                            hint="the file itself is broken (a wrapped line, stripped whitespace, a"
                            " hand edit that left hunk counts wrong); fetch it again (b4 am,"
                            " git format-patch) rather than rebasing the series",
                        )  # fmt: skip
                    raise ApplyError(
                        f"patch {patch.label} (\"{info.subject}\", {n} of {len(patches)} in {series_label}) does not "
                        f"apply to {source.spec.describe()} (Linux {source.kernel_version}): {summary}\n"
                        + "\n".join("  | " + line for line in res.output.strip().splitlines()[-8:]),
                        patch=patch.label, subject=info.subject, file=file, hunk=hunk,
                        hint="rebase the series onto this kernel, or pick the kernel source it was written for; "
                        "the pristine source is untouched",
                    )  # fmt: skip
                tree = store.out("write-tree", env=env)
                author_env = {
                    "GIT_AUTHOR_NAME": info.author_name,
                    "GIT_AUTHOR_EMAIL": info.author_email,
                    "GIT_AUTHOR_DATE": info.date or "1970-01-01T00:00:00+0000",
                }
                try:
                    commit = store.commit(tree, info.message, parent=parent, author=author_env)
                except CommandError:
                    # git refuses some dates that mail clients write; the date is not worth failing for
                    author_env["GIT_AUTHOR_DATE"] = "1970-01-01T00:00:00+0000"
                    commit = store.commit(tree, info.message, parent=parent, author=author_env)
                applied.append(
                    AppliedPatch(
                        patch.label,
                        info.subject,
                        f"{info.author_name} <{info.author_email}>",
                        patch.sha256,
                        commit,
                    )
                )
                parent = commit
        atomic_write(memo, "".join(f"{a.commit}\t{a.subject}\t{a.author}\n" for a in applied))
        store.set_ref(f"refs/korch/series/{key[:20]}", parent)
        return PatchedTree(source, parent, store.tree_of(parent), tuple(applied))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare(store: GitStore, source: Source, spec: SeriesSpec) -> PatchedTree:
    """Read ``spec``'s patches and apply them to ``source``."""
    scratch = Path(tempfile.mkdtemp(prefix="korch-series-"))
    try:
        patches = read_series(spec, scratch)
        if spec.first is not None:
            patches = patches[: spec.first]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return apply_series(store, source, patches, spec.describe())
