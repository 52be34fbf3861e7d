"""Kernel source providers: a local directory, a tarball, git, or a Debian source package.

Each provider brings the files into the cache's git store (see :mod:`gitstore`) and
returns a :class:`Source` whose ``tree_id`` (the git tree id) is its content id. A
provider never modifies what the user points it at. Cache hits cost no download and
no extraction: each provider first derives a cheap key (the tarball's sha256, the
Debian package's sha256 from the archive index, the git commit) and looks it up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import process
from .config import SourceSpec
from .errors import InfraError, UserError
from .fsutil import (
    atomic_write,
    now,
    sha256_file,
    sha256_text,
    sweep_stale,
    temp_dir,
    temp_file,
)
from .gitstore import GitStore, WorkTree, read_index_map

APT_LISTS_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class Source:
    """An unpacked, content-addressed kernel source."""

    spec: SourceSpec
    tree_id: str  # git tree id of the pristine files: the content id
    commit: str  # pristine commit in the cache store
    worktree: WorkTree
    kernel_version: str
    provenance: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- safe tar extraction


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def safe_extract(archive: Path, dest: Path, *, label: str | None = None) -> list[str]:
    """Extract ``archive`` into ``dest``, refusing members that would land outside it;
    return the names of the symbolic links it held (the caller checks them again if it
    keeps only part of the tree, see :func:`check_links`).

    Absolute names, ``..`` components, links pointing out of the tree (or through a link
    extracted earlier) and device files stop the extraction with an error naming the
    member, and so does an archive that ends inside a header (tar's stream reader takes
    that for the end of the archive). The caller extracts into a temporary directory and
    removes it on error, so nothing half-extracted is ever used.
    """
    label = label or str(archive)
    root = os.path.realpath(dest)
    try:
        tf = tarfile.open(archive, mode="r|*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"{label}: not a readable tar archive: {exc}") from None
    links: list[str] = []
    with tf:
        try:
            for member in tf:
                _check_member(member, root, label)
                tf.extract(member, root, set_attrs=True, **_filter_kw())
                if member.issym():
                    links.append(member.name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(
                f"{label}: extraction failed: {exc}",
                hint="the archive is damaged or truncated; fetch it again",
            ) from None
        # a proper end is a whole block of zeros; a stream that stopped short of one was cut
        ended = getattr(tf.fileobj, "pos", tf.offset + tarfile.BLOCKSIZE) - tf.offset
        if ended < tarfile.BLOCKSIZE:
            raise UserError(
                f"{label}: the archive is truncated (it ends {ended} bytes into a header at"
                f" offset {tf.offset}, without tar's end-of-archive block)",
                hint="the download or copy was cut short; fetch it again",
            )
    return links


def check_links(top: Path, extracted: Path, links: list[str], label: str) -> None:
    """After keeping only ``top`` of an extracted tree, refuse a symbolic link that now
    leads out of it (``linux-7.2/x -> ..`` was inside the extraction directory, not inside
    the kept tree)."""
    kept = os.path.realpath(top)
    for name in links:
        path = extracted / name
        if not _inside(kept, os.path.realpath(path.parent)):
            continue  # not in the kept part
        if not _inside(kept, os.path.realpath(path)):
            raise UserError(
                f"{label}: refusing member {name!r}: symlink pointing outside the source tree"
                f" ({os.readlink(path)!r})",
                hint="this archive tries to reach outside its own directory; do not use it",
            )


def _filter_kw() -> dict[str, Any]:
    # The 'data' filter (Python 3.11.4+) is a second line of defence after our own checks.
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(member: tarfile.TarInfo, root: str, label: str) -> None:
    name = member.name

    def refuse(why: str) -> UserError:
        return UserError(
            f"{label}: refusing member {name!r}: {why}",
            hint="this archive tries to write outside its own directory; do not use it",
        )

    if os.path.isabs(name) or name.startswith("/"):
        raise refuse("absolute path")
    if ".." in Path(name).parts:
        raise refuse("'..' in its path")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise refuse("it resolves outside the extraction directory (through a symlink)")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise refuse(f"symlink to an absolute path {member.linkname!r}")
        link_target = os.path.realpath(
            os.path.join(os.path.dirname(os.path.join(root, name)), member.linkname)
        )
        if not _inside(root, link_target):
            raise refuse(f"symlink pointing outside the tree ({member.linkname!r})")
    elif member.islnk():
        link_target = os.path.realpath(os.path.join(root, member.linkname))
        if not _inside(root, link_target):
            raise refuse(f"hard link to outside the tree ({member.linkname!r})")
    elif member.isdev() or member.isfifo():
        raise refuse("device or FIFO")


def _single_top(directory: Path) -> Path:
    """Archives usually hold one top directory (linux-7.2/); use it as the tree's root."""
    entries = list(directory.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return directory


def kernel_version(tree: Path) -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL`` + ``EXTRAVERSION`` read from the top Makefile."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except FileNotFoundError:
        return "unknown"
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        m = re.search(rf"^{key}\s*=\s*(\S*)\s*$", text, re.M)
        vals[key] = m.group(1) if m else ""
    return f"{vals['VERSION']}.{vals['PATCHLEVEL']}.{vals['SUBLEVEL']}{vals['EXTRAVERSION']}"


def _looks_like_kernel(tree: Path) -> bool:
    return (
        (tree / "Makefile").is_file() and (tree / "Kconfig").is_file() and (tree / "arch").is_dir()
    )


# ---------------------------------------------------------------- the provider front


class SourceCache:
    """Resolve a :class:`SourceSpec` to a :class:`Source` in the cache under ``root``."""

    def __init__(self, root: Path, log: Any = None) -> None:
        self.root = root
        self.store = GitStore(root)
        self.index_dir = root / "sources"
        self.log = log or (lambda msg: None)

    def get(self, spec: SourceSpec) -> Source:
        self.store.ensure()
        sweep_stale(self.store.trees_dir, self.root / "downloads")
        getter = {
            "path": self._from_path,
            "tarball": self._from_tarball,
            "git": self._from_git,
            "debian": self._from_debian,
        }[spec.kind]
        return getter(spec)

    # -- shared steps --------------------------------------------------------------

    def _key_file(self, key: str) -> Path:
        return self.index_dir / "keys" / sha256_text(key)

    def _known(self, key: str) -> str | None:
        tree = read_index_map(self._key_file(key))
        if tree and self.store.worktree(tree).path.exists() and self.store.has(tree):
            return tree
        return None

    def _remember(self, key: str, tree: str) -> None:
        atomic_write(self._key_file(key), tree + "\n")

    def _finish(self, spec: SourceSpec, tree: str, provenance: dict[str, Any]) -> Source:
        commit = self.store.commit(tree, f"korch: pristine source\n\n{spec.describe()}\n")
        self.store.set_ref(f"refs/korch/pristine/{tree[:20]}", commit)
        wt = (
            self.store.checkout_new(tree, commit)
            if not self.store.worktree(tree).path.exists()
            else self.store.worktree(tree)
        )
        if not _looks_like_kernel(wt.path):
            raise UserError(
                f"{spec.describe()}: this does not look like a Linux source tree (no Makefile, Kconfig and arch/ at its top)",
                hint="point kernel.source at the top of a kernel tree",
            )
        return Source(spec, tree, commit, wt, kernel_version(wt.path), provenance)

    def _import_extracted(
        self,
        spec: SourceSpec,
        extracted: Path,
        key: str,
        provenance: dict[str, Any],
        links: list[str] | None = None,
    ) -> Source:
        """Import a freshly extracted tree and keep it as the work tree (no second copy)."""
        top = _single_top(extracted)
        if links:
            check_links(top, extracted, links, spec.describe())
        if not _looks_like_kernel(top):
            raise UserError(
                f"{spec.describe()}: the archive does not hold a Linux source tree (no Makefile, Kconfig and arch/ at its top)"
            )
        index = Path(str(extracted) + ".index")
        self.log(f"hashing {top} into the source cache")
        tree = self.store.import_dir(top, index, force=True)
        commit = self.store.commit(tree, f"korch: pristine source\n\n{spec.describe()}\n")
        self.store.adopt_worktree(top, index, tree, commit)
        self._remember(key, tree)
        return self._finish(spec, tree, provenance)

    # -- local directory -----------------------------------------------------------

    def _from_path(self, spec: SourceSpec) -> Source:
        src = Path(spec.location)
        if not src.is_dir():
            raise UserError(
                f"kernel.source.path: {src} is not a directory",
                hint="give the top of a kernel tree",
            )
        if not _looks_like_kernel(src):
            raise UserError(
                f"kernel.source.path: {src} does not look like a Linux source tree (no Makefile, Kconfig and arch/)"
            )
        for dirt in (".config", "include/config/auto.conf", "include/generated"):
            if (src / dirt).exists():
                raise UserError(
                    f"kernel.source.path: {src} has been configured or built in place ({dirt} exists); "
                    "korch builds out of tree and the kernel refuses that from an unclean tree",
                    hint=f"run 'make mrproper' in {src} or point korch at a clean copy",
                )
        index = self.index_dir / "path-index" / (sha256_text(str(src.resolve()))[:32] + ".index")
        index.parent.mkdir(parents=True, exist_ok=True)
        provenance: dict[str, Any] = {"path": str(src)}
        is_git = (src / ".git").exists()
        self.log(f"hashing {src}")
        if is_git:
            # Respect the checkout's own .gitignore (build products stay out), then add the
            # few files upstream tracks although an ignore pattern matches them.
            tree = self.store.import_dir(src, index, force=False)
            ignored = process.run(
                [
                    "git",
                    "-C",
                    str(src),
                    "ls-files",
                    "-z",
                    "--cached",
                    "--ignored",
                    "--exclude-standard",
                ],
                check=False,
            ).output
            if ignored.strip("\0\n"):
                env = {"GIT_WORK_TREE": str(src), "GIT_INDEX_FILE": str(index)}
                self.store.git("add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul", env=env, cwd=src,
                               input=ignored.encode())  # fmt: skip
                tree = self.store.out("write-tree", env=env)
            head = process.run(
                ["git", "-C", str(src), "rev-parse", "HEAD"], check=False
            ).output.strip()
            provenance["git_head"] = head
        else:
            tree = self.store.import_dir(src, index, force=True)
        return self._finish(spec, tree, provenance)

    # -- tarball -------------------------------------------------------------------

    def _download(self, url: str, expected: str | None) -> tuple[Path, str]:
        downloads = self.root / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        if expected and (downloads / expected).exists():
            return downloads / expected, expected
        fd, tmp_path = temp_file(downloads, "download")
        tmp = str(tmp_path)
        h = hashlib.sha256()
        try:
            self.log(f"downloading {url}")
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
            digest = h.hexdigest()
            if expected and digest != expected:
                raise UserError(
                    f"kernel.source.tarball: {url} has sha256 {digest}, the experiment expects {expected}",
                    hint="the file changed upstream or the checksum is wrong; check which",
                )
            final = downloads / digest
            os.replace(tmp, final)
            return final, digest
        except OSError as exc:
            raise InfraError(
                f"kernel.source.tarball: downloading {url} failed: {exc}",
                hint="check the URL and the network; safe to retry",
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _from_tarball(self, spec: SourceSpec) -> Source:
        if spec.location.startswith("https://"):
            url_key = f"url:{spec.location}"
            if not spec.sha256:
                known_sha = read_index_map(self._key_file(url_key))
                if known_sha and (tree := self._known(f"tarball:{known_sha}")):
                    return self._finish(spec, tree, {"url": spec.location, "sha256": known_sha})
            archive, digest = self._download(spec.location, spec.sha256)
            atomic_write(self._key_file(url_key), digest + "\n")
        else:
            archive = Path(spec.location)
            if not archive.is_file():
                raise UserError(f"kernel.source.tarball: {archive} does not exist")
            digest = sha256_file(archive)
            if spec.sha256 and digest != spec.sha256:
                raise UserError(
                    f"kernel.source.tarball: {archive} has sha256 {digest}, the experiment expects {spec.sha256}"
                )
        provenance = {"tarball": spec.location, "sha256": digest}
        return self._from_archive(spec, archive, f"tarball:{digest}", provenance)

    def _from_archive(
        self, spec: SourceSpec, archive: Path, key: str, provenance: dict[str, Any]
    ) -> Source:
        if tree := self._known(key):
            return self._finish(spec, tree, provenance)
        tmp = temp_dir(self._trees_parent(), "extract")
        try:
            self.log(f"extracting {archive.name}")
            start = time.monotonic()
            links = safe_extract(archive, tmp, label=spec.describe())
            provenance = dict(provenance, extract_s=round(time.monotonic() - start, 1))
            return self._import_extracted(spec, tmp, key, provenance, links)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(tmp) + ".index")

    def _trees_parent(self) -> Path:
        self.store.trees_dir.mkdir(parents=True, exist_ok=True)
        return self.store.trees_dir

    # -- git -----------------------------------------------------------------------

    def _from_git(self, spec: SourceSpec) -> Source:
        url = spec.location
        ref = spec.ref or "HEAD"
        if os.path.isabs(url):
            if not Path(url).exists():
                raise UserError(f"kernel.source.git: {url} does not exist")
            url = "file://" + url  # shallow fetches need a URL, not a plain path
        local = None
        if os.path.isabs(spec.location) and not re.fullmatch(r"[0-9a-f]{40}", ref):
            # a repository on this machine resolves any revision (HEAD^1, origin/main~3):
            # a pull request's merge commit names its base as HEAD^1 and its head as HEAD^2
            local = process.run(
                ["git", "-C", spec.location, "rev-parse", "--verify", "--quiet", ref + "^{commit}"],
                check=False,
                what=f"git rev-parse {ref}",
            )
        if re.fullmatch(r"[0-9a-f]{40}", ref):
            sha = ref
        elif local is not None and local.returncode == 0:
            sha = local.output.strip()
        else:
            res = self.store.git("ls-remote", url, ref, check=False, timeout=120)
            lines = [line.split("\t") for line in res.output.splitlines() if "\t" in line]
            if res.returncode != 0:
                raise InfraError(
                    f"kernel.source.git: cannot list {spec.location}: {res.tail}",
                    hint="check the URL; safe to retry",
                )
            if not lines:
                raise UserError(
                    f"kernel.source.git: {spec.location} has no ref {ref!r}",
                    hint="give a branch, a tag or a full commit id",
                )
            # Prefer the peeled commit of an annotated tag.
            peeled = [sha for sha, name in lines if name.endswith("^{}")]
            sha = peeled[0] if peeled else lines[0][0]
        key = f"git:{sha}"
        provenance = {"git": spec.location, "ref": ref, "commit": sha}
        if tree := self._known(key):
            return self._finish(spec, tree, provenance)
        if not self.store.has(sha):
            self.log(f"fetching {spec.location} {ref}")
            res = self.store.git(
                "fetch", "-q", "--depth=1", "--no-tags", url, sha, check=False, timeout=3600
            )
            if res.returncode != 0:
                # Some servers (and local repositories) refuse a bare commit id in a shallow fetch.
                res = self.store.git(
                    "fetch", "-q", "--no-tags", url, ref, check=False, timeout=3600
                )
            if res.returncode != 0 or not self.store.has(sha):
                raise InfraError(
                    f"kernel.source.git: fetching {ref} from {spec.location} failed:\n{res.tail}"
                )
        tree = self.store.tree_of(sha)
        self._remember(key, tree)
        return self._finish(spec, tree, provenance)

    # -- Debian source package -----------------------------------------------------

    def _from_debian(self, spec: SourceSpec) -> Source:
        apt = DebianArchive(self.root / "apt", spec.suite or "trixie-backports", self.log)
        info = apt.show(spec.location, spec.version)
        key = f"deb:{info['SHA256']}"
        provenance = {
            "debian": spec.location,
            "version": info["Version"],
            "suite": apt.suite,
            "deb_sha256": info["SHA256"],
        }
        if tree := self._known(key):
            return self._finish(spec, tree, provenance)
        deb = apt.download(spec.location, info)
        tmp = temp_dir(self._trees_parent(), "deb")
        try:
            fsys = tmp / "data.tar"
            process.run(
                ["dpkg-deb", "--fsys-tarfile", str(deb)],
                stdout_file=fsys,
                what=f"unpacking {deb.name}",
            )
            inner = _extract_named(
                fsys, re.compile(rf"^(\./)?usr/src/{re.escape(spec.location)}\.tar\.\w+$"), tmp
            )
            fsys.unlink()
            if inner is None:
                raise UserError(
                    f"kernel.source.debian: package {spec.location} holds no /usr/src/{spec.location}.tar.*",
                    hint="name a linux-source-X.Y package",
                )
            source = self._from_archive(spec, inner, key, provenance)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # The store now holds every file; the package would only take disk space.
        deb.unlink(missing_ok=True)
        return source


def _extract_named(tar_path: Path, pattern: re.Pattern[str], dest: Path) -> Path | None:
    with tarfile.open(tar_path) as tf:
        for member in tf:
            if member.isfile() and pattern.match(member.name):
                out = dest / Path(member.name).name
                src = tf.extractfile(member)
                assert src is not None
                with src, open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
                return out
    return None


class DebianArchive:
    """apt's own client with a private state directory and one suite swapped in.

    The archive's address comes from the machine's apt configuration; nothing in korch
    names a host. The host's package state is never touched.
    """

    def __init__(self, root: Path, suite: str, log: Any = None) -> None:
        self.root = root / re.sub(r"[^A-Za-z0-9.+-]", "_", suite)
        self.suite = suite
        self.log = log or (lambda msg: None)

    def _opts(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r / "state",
            "Dir::State::Lists": r / "state/lists",
            "Dir::State::status": r / "state/status",
            "Dir::Cache": r / "cache",
            "Dir::Cache::archives": r / "cache/archives",
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "1",
        }
        out = []
        for key, value in opts.items():
            if value != "":
                out += ["-o", f"{key}={value}"]
        return out

    def _setup(self) -> None:
        process.require("apt-get", "apt")
        process.require("dpkg-deb", "dpkg")
        for sub in (
            "state/lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for empty in ("state/status", "sources.list", "preferences"):
            p = self.root / empty
            if not p.exists():
                p.write_text("")
        uri, signed_by = machine_debian_archive(self.suite)
        entry = f"Types: deb\nURIs: {uri}\nSuites: {self.suite}\nComponents: main\n"
        if signed_by:
            entry += f"Signed-By: {signed_by}\n"
        target = self.root / "sources.list.d" / "korch.sources"
        if not target.exists() or target.read_text() != entry:
            atomic_write(target, entry)
            with contextlib.suppress(FileNotFoundError):
                (self.root / "updated").unlink()

    def update(self, force: bool = False) -> None:
        self._setup()
        stamp = self.root / "updated"
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < APT_LISTS_MAX_AGE_S
        if fresh and not force:
            return
        self.log(f"reading the package lists of suite {self.suite}")
        process.run(
            ["apt-get", *self._opts(), "-q", "update"],
            timeout=600,
            what=f"apt-get update (suite {self.suite})",
        )
        stamp.write_text(now() + "\n")

    def show(self, package: str, version: str | None) -> dict[str, str]:
        """The archive's record of ``package`` (the newest, or ``version``)."""
        self.update()
        records = self._records(package)
        if not records:
            self.update(force=True)
            records = self._records(package)
        if version:
            records = [r for r in records if r.get("Version") == version]
        if not records:
            what = f"{package}={version}" if version else package
            raise UserError(
                f"kernel.source.debian: suite {self.suite} has no package {what}",
                hint="check the name and version with: apt-cache madison (korch keeps its own lists under the cache); "
                "or set kernel.source.suite",
            )
        best = records[0]
        if len(records) > 1 and not version:
            res = process.run(["dpkg", "--compare-versions", "0", "lt", "1"], check=False)
            if res.returncode == 0:  # dpkg can order versions: take the newest
                for r in records[1:]:
                    newer = process.run(
                        ["dpkg", "--compare-versions", r["Version"], "gt", best["Version"]],
                        check=False,
                    )
                    if newer.returncode == 0:
                        best = r
        return best

    def _records(self, package: str) -> list[dict[str, str]]:
        res = process.run(["apt-cache", *self._opts(), "show", package], check=False)
        if res.returncode != 0:
            return []
        records: list[dict[str, str]] = []
        cur: dict[str, str] = {}
        for line in [*res.output.splitlines(), ""]:
            if not line.strip():
                if cur.get("Package") == package:
                    records.append(cur)
                cur = {}
            elif not line.startswith(" ") and ":" in line:
                k, _, v = line.partition(":")
                cur[k] = v.strip()
        return records

    def download(self, package: str, info: dict[str, str]) -> Path:
        downloads = self.root / "debs"
        downloads.mkdir(parents=True, exist_ok=True)
        final = downloads / f"{info['SHA256']}.deb"
        if final.exists():
            return final
        sweep_stale(downloads)
        tmp = temp_dir(downloads, "dl")
        try:
            self.log(f"downloading {package} {info['Version']}")
            process.run(
                ["apt-get", *self._opts(), "-q", "download", f"{package}={info['Version']}"],
                cwd=tmp, timeout=3600, what=f"apt-get download {package}={info['Version']}",
            )  # fmt: skip
            debs = list(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise InfraError(
                    f"apt-get download {package} left {len(debs)} files", hint="safe to retry"
                )
            digest = sha256_file(debs[0])
            if digest != info["SHA256"]:
                raise InfraError(
                    f"{debs[0].name}: sha256 {digest} does not match the archive's {info['SHA256']}",
                    hint="safe to retry",
                )
            os.replace(debs[0], final)
            return final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def machine_debian_archive(suite: str | None = None) -> tuple[str, str | None]:
    """The Debian archive URI (and its Signed-By keyring) that serves ``suite``, from the
    machine's apt sources as they are (see :func:`archive_for`)."""
    return archive_for(suite, _machine_apt_entries())


def archive_for(
    suite: str | None, candidates: list[tuple[str, str | None, list[str]]]
) -> tuple[str, str | None]:
    """Of apt's ``(uri, signed_by, suites)`` entries, the one that serves ``suite``: an
    entry that names the suite itself; else, for a ``-security`` suite, the security
    archive's entry (it lives at another address than the main archive); else the main
    archive (an entry with a plain release suite), whose address serves every other suite
    of the distribution (backports, updates, newer releases)."""

    def keyring(signed_by: str | None) -> str | None:
        # a keyring that is not there: apt then uses its trusted keyrings
        return signed_by if signed_by and Path(signed_by).exists() else None

    if suite:
        for uri, signed_by, suites in candidates:
            if suite in suites:
                return uri.rstrip("/"), keyring(signed_by)
        if suite.endswith("-security"):
            for uri, signed_by, suites in candidates:
                if any(s.endswith("-security") for s in suites):
                    return uri.rstrip("/"), keyring(signed_by)
    for uri, signed_by, suites in candidates:
        # The main archive carries the plain release suite (no -security, -updates, ...).
        if any("-" not in s and "/" not in s for s in suites) and "security" not in uri:
            return uri.rstrip("/"), keyring(signed_by)
    raise InfraError(
        "no Debian archive in this machine's apt sources (looked for a 'deb' entry with a release suite)",
        hint="use kernel.source.tarball or kernel.source.git instead, or add the archive to apt's sources",
    )


def _machine_apt_entries() -> list[tuple[str, str | None, list[str]]]:
    """Every enabled 'deb' entry of the machine's apt sources (deb822 and one-line)."""
    res = process.run(
        [
            "apt-config",
            "shell",
            "LIST",
            "Dir::Etc::sourcelist/f",
            "PARTS",
            "Dir::Etc::sourceparts/d",
        ],
        check=False,
    )
    paths = dict(re.findall(r"(LIST|PARTS)='([^']*)'", res.output))
    candidates: list[tuple[str, str | None, list[str]]] = []
    parts = Path(paths.get("PARTS", "/etc/apt/sources.list.d"))
    for f in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line.startswith(" "):
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    candidates.append(
                        (uri, fields.get("signed-by"), fields.get("suites", "").split())
                    )
    lists = [Path(paths.get("LIST", "/etc/apt/sources.list"))]
    if parts.is_dir():
        lists += sorted(parts.glob("*.list"))
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                opts = m.group(1) or ""
                sb = re.search(r"signed-by=(\S+?)\]?(\s|$)", opts)
                candidates.append((m.group(2), sb.group(1) if sb else None, [m.group(3)]))
    return candidates
