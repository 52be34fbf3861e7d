"""Guest images: a gzipped initramfs built from a declarative recipe in ``images/``.

A recipe is a directory ``images/<name>/`` holding ``recipe.yaml`` (host binaries, directories,
device nodes, small files, where the SSH keys go) and an ``init`` template. :func:`build_image`
turns it, plus the files an experiment adds, into a :class:`GuestImage` cached by content under
``cache_root()/images/<key>``. Each image gets its own ed25519 host and client keys, so the
client can pin the guest's host key instead of accepting whatever answers on the port.

The cpio archive is written here rather than by the host's ``cpio``: that makes it
deterministic (sorted, uid 0, mtime 0) and lets it hold ``/dev/console`` without root.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

from . import process
from .errors import ConfigError, InfraError, ToolMissing, UserError
from .fsutil import (
    atomic_write,
    cache_root,
    locked,
    publish_dir,
    sha256_file,
    stable_hash,
    sweep_stale,
    temp_dir_beside,
)

# Bump when the archive layout or the key handling changes, so old cache entries are not reused.
IMAGE_FORMAT = 1
DEFAULT_RECIPE = "initramfs"

INITRD_NAME = "initramfs.cpio.gz"
CLIENT_KEY_NAME = "client_ed25519"
MANIFEST_NAME = "manifest.json"

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def recipes_dir() -> Path:
    """``$KORCH_IMAGES`` if set, else images/ of a source checkout, else the installed copy."""
    explicit = os.environ.get("KORCH_IMAGES")
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve().parent.parent / "images"
    if here.is_dir():
        return here
    # installed: pyproject maps the package orchestrator.images to images/
    return Path(__file__).resolve().parent / "images"


@dataclass(frozen=True)
class Binary:
    """A host executable copied into the guest together with the libraries it links."""

    guest: str
    host: Path
    package: str


@dataclass(frozen=True)
class Node:
    """A device node written into the archive (no root needed: it is only a cpio header)."""

    kind: str  # "char" or "block"
    major: int
    minor: int
    mode: int


@dataclass(frozen=True)
class Recipe:
    """An image recipe as loaded from ``images/<name>/recipe.yaml``."""

    name: str
    directory: Path
    description: str
    init_template: str
    params: Mapping[str, str]
    binaries: tuple[Binary, ...]
    symlinks: Mapping[str, str]
    directories: Mapping[str, int]
    nodes: Mapping[str, Node]
    files: Mapping[str, tuple[int, str]]
    host_key_path: str
    authorized_keys_path: str
    user: str

    @property
    def ready_marker(self) -> str:
        return self.params["READY_MARKER"]

    def render_init(self) -> str:
        """The init script with every ``@NAME@`` replaced; an unknown name is an error."""
        values = dict(self.params, HOST_KEY=self.host_key_path)
        missing = sorted({m for m in _PLACEHOLDER.findall(self.init_template) if m not in values})
        if missing:
            raise ConfigError(
                [f"{self.directory / 'init'}: no value for @{name}@" for name in missing],
                hint=f"add them under 'params' in {self.directory / 'recipe.yaml'}",
            )
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.init_template)


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: what QEMU boots and what the SSH client needs to log in."""

    initrd: Path
    client_key: Path
    host_public_key: str  # "ssh-ed25519 AAAA...", the only key the client accepts
    content_id: str
    ready_marker: str = "korch-guest: ready"
    user: str = "root"

    @property
    def directory(self) -> Path:
        return self.initrd.parent


def available_recipes() -> list[str]:
    """Names of the recipes found in :func:`recipes_dir` (for ``--help`` and error messages)."""
    root = recipes_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/recipe.yaml"))


def load_recipe(name: str = DEFAULT_RECIPE) -> Recipe:
    """Load and validate ``images/<name>/recipe.yaml``; every problem is reported at once."""
    directory = recipes_dir() / name
    path = directory / "recipe.yaml"
    if not path.is_file():
        known = ", ".join(available_recipes()) or "none"
        raise UserError(
            f"unknown image recipe '{name}' (looked for {path})", hint=f"known recipes: {known}"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    problems: list[str] = []

    def want(key: str, kind: type, default: Any = None) -> Any:
        value = data.get(key, default)
        if value is None or not isinstance(value, kind):
            problems.append(f"{path}: '{key}' must be a {kind.__name__}")
            return kind()
        return value

    def mode(where: str, value: Any) -> int:
        # YAML 1.1 would read 0755 as octal but 0o755 as a string; quoted strings avoid both traps
        if isinstance(value, str) and re.fullmatch(r"[0-7]{3,4}", value):
            return int(value, 8)
        problems.append(f'{path}: {where}: mode must be an octal string such as "755"')
        return 0o644

    def guest_path(where: str, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            problems.append(f"{path}: {where}: guest paths must be absolute")
            return "/invalid"
        return value

    init_name = want("init", str, "init")
    init_path = directory / init_name
    init_template = ""
    if init_path.is_file():
        init_template = init_path.read_text()
    else:
        problems.append(f"{path}: init template {init_path} does not exist")

    params = {str(k): str(v) for k, v in want("params", dict, {}).items()}
    if "READY_MARKER" not in params:
        problems.append(f"{path}: params must define READY_MARKER (vm.py waits for it)")

    binaries = []
    for i, entry in enumerate(want("binaries", list, [])):
        if not isinstance(entry, dict) or not {"guest", "host", "package"} <= entry.keys():
            problems.append(f"{path}: binaries[{i}] needs guest, host and package")
            continue
        binaries.append(
            Binary(
                guest_path(f"binaries[{i}]", entry["guest"]),
                Path(entry["host"]),
                str(entry["package"]),
            )
        )

    symlinks = {
        guest_path(f"symlinks[{k}]", k): str(v) for k, v in want("symlinks", dict, {}).items()
    }
    directories = {
        guest_path(f"directories[{k}]", k): mode(f"directories[{k}]", v)
        for k, v in want("directories", dict, {}).items()
    }
    nodes = {}
    for k, v in want("nodes", dict, {}).items():
        if not isinstance(v, dict) or v.get("type") not in ("char", "block"):
            problems.append(f"{path}: nodes[{k}]: type must be char or block")
            continue
        major, minor = v.get("major", 0), v.get("minor", 0)
        if not isinstance(major, int) or not isinstance(minor, int):
            problems.append(f"{path}: nodes[{k}]: major and minor must be integers")
            continue
        nodes[guest_path(f"nodes[{k}]", k)] = Node(
            v["type"], major, minor, mode(f"nodes[{k}]", v.get("mode"))
        )
    files = {}
    for k, v in want("files", dict, {}).items():
        if not isinstance(v, dict) or not isinstance(v.get("text"), str):
            problems.append(f"{path}: files[{k}] needs a 'text'")
            continue
        files[guest_path(f"files[{k}]", k)] = (mode(f"files[{k}]", v.get("mode", "644")), v["text"])

    keys = want("keys", dict, {})
    for key in ("host_key", "authorized_keys", "user"):
        if key not in keys:
            problems.append(f"{path}: keys.{key} is missing")
    host_key_path = guest_path("keys.host_key", keys.get("host_key", "/"))
    authorized_keys_path = guest_path("keys.authorized_keys", keys.get("authorized_keys", "/"))
    if problems:
        raise ConfigError(problems)
    return Recipe(
        name=name,
        directory=directory,
        description=str(data.get("description", "")),
        init_template=init_template,
        params=params,
        binaries=tuple(binaries),
        symlinks=symlinks,
        directories=directories,
        nodes=nodes,
        files=files,
        host_key_path=host_key_path,
        authorized_keys_path=authorized_keys_path,
        user=str(keys["user"]),
    )


# --- cpio (newc) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One archive member. ``data`` holds file contents or a symlink's target."""

    path: str  # absolute guest path
    mode: int  # full st_mode: type bits and permissions
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    source: Path | None = field(default=None, compare=False)  # read lazily when data is empty


def _sort_key(path: str) -> tuple[str, ...]:
    # component-wise so a directory always precedes what it contains
    return PurePosixPath(path).parts


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            p = str(parent)
            if p != "/" and p not in by_path:
                by_path[p] = Entry(p, stat.S_IFDIR | 0o755)
    return [by_path[p] for p in sorted(by_path, key=_sort_key)]


def _header(
    ino: int, entry_mode: int, nlink: int, size: int, rdev: tuple[int, int], name: bytes
) -> bytes:
    fields = (ino, entry_mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_cpio(entries: Iterable[Entry], out: IO[bytes] | gzip.GzipFile) -> None:
    """Write ``entries`` (plus any missing parent directories) as a newc cpio archive.

    Deterministic: members sorted by path, inode numbers in that order, uid/gid 0, mtime 0.
    """
    for ino, entry in enumerate(_with_parents(entries), start=1):
        data = entry.data
        if not data and entry.source is not None:
            data = entry.source.read_bytes()
        name = entry.path.lstrip("/").encode()
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        head = _header(ino, entry.mode, nlink, len(data), entry.rdev, name)
        out.write(head + _pad(len(head)))
        out.write(data + _pad(len(data)))
    trailer = _header(0, 0, 1, 0, (0, 0), b"TRAILER!!!")
    out.write(trailer + _pad(len(trailer)))


def read_cpio(data: bytes) -> dict[str, Entry]:
    """Parse a newc archive (tests and ``korch doctor`` use it to look inside an image)."""
    members: dict[str, Entry] = {}
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"not a newc cpio header at offset {pos}")
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return members
        members["/" + name] = Entry("/" + name, mode, body, (rmaj, rmin))


# --- inputs ----------------------------------------------------------------------------------

_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def shared_libraries(binary: Path) -> list[str]:
    """Absolute paths of the shared libraries (and loader) ``ldd`` names for ``binary``.

    Static executables and non-ELF files (scripts) have none. A library ldd cannot find is
    an error: the guest would fail to run the program much later and much less clearly.
    """
    if not _is_elf(binary):
        return []
    process.require("ldd", "libc-bin")
    result = process.run(["ldd", str(binary)], check=False, what=f"ldd {binary}")
    if "not a dynamic executable" in result.output or "statically linked" in result.output:
        return []
    missing = [line.split()[0] for line in result.output.splitlines() if "not found" in line]
    if missing or result.returncode != 0:
        raise InfraError(
            f"{binary}: shared libraries not found on the host: {', '.join(missing) or '?'}",
            hint="install the packages that provide them (apt-file search NAME)",
        )
    libs = []
    for line in result.output.splitlines():
        m = _LDD_LINE.match(line)
        if m:
            libs.append(m.group(2))
    return libs


def _inputs(recipe: Recipe, extra_files: Mapping[str, Path]) -> dict[str, Path]:
    """guest path -> host file, for every copied file (binaries, their libraries, extras)."""
    files: dict[str, Path] = {}
    problems: list[str] = []
    for binary in recipe.binaries:
        if not binary.host.is_file():
            raise ToolMissing(str(binary.host), binary.package)
        files[binary.guest] = binary.host
        for lib in shared_libraries(binary.host):
            files.setdefault(lib, Path(lib))
    for guest, host in sorted(extra_files.items()):
        if not guest.startswith("/"):
            problems.append(f"extra file {guest!r}: the guest path must be absolute")
            continue
        if not host.is_file():
            problems.append(f"extra file {guest!r}: {host} is not a file")
            continue
        files[guest] = host
        for lib in shared_libraries(host):
            files.setdefault(lib, Path(lib))
    if problems:
        raise UserError("cannot add files to the guest image:\n  " + "\n  ".join(problems))
    return files


def image_key(recipe: Recipe, files: Mapping[str, Path]) -> str:
    """The cache key: the recipe's own files plus the content and mode of every copied file."""
    recipe_files = {
        p.name: sha256_file(p) for p in sorted(recipe.directory.iterdir()) if p.is_file()
    }
    copied = {guest: [sha256_file(host), _exec_mode(host)] for guest, host in sorted(files.items())}
    return stable_hash(
        {
            "format": IMAGE_FORMAT,
            "recipe": recipe.name,
            "recipe_files": recipe_files,
            "files": copied,
        }
    )[:24]


def _exec_mode(host: Path) -> int:
    return 0o755 if os.stat(host).st_mode & 0o111 else 0o644


# --- keys ------------------------------------------------------------------------------------


def _client_keypair() -> tuple[bytes, str]:
    """A fresh ed25519 key: (OpenSSH private key file contents, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + " korch-client"


def _host_keypair(workdir: Path) -> tuple[bytes, str]:
    """A fresh dropbear host key: (key file in dropbear's format, public key line).

    dropbearkey writes it, so the format always matches the dropbear that will read it.
    """
    tool = process.require("dropbearkey", "dropbear-bin")
    target = workdir / "host_ed25519"
    result = process.run([tool, "-t", "ed25519", "-f", str(target)], what="dropbearkey")
    public = next(
        (line.strip() for line in result.output.splitlines() if line.startswith("ssh-ed25519 ")),
        None,
    )
    if public is None:
        raise InfraError(
            "dropbearkey did not print an ed25519 public key",
            hint="check that dropbear-bin is 2020.79 or newer (ed25519 support)",
        )
    data = target.read_bytes()
    target.unlink()
    # keep "type base64" only: the comment holds the build host's name
    return data, " ".join(public.split()[:2])


# --- build -----------------------------------------------------------------------------------


def image_entries(
    recipe: Recipe, files: Mapping[str, Path], *, host_key: bytes, authorized_key: str
) -> list[Entry]:
    """Every member of the archive for ``recipe``, given the copied files and the keys."""
    entries: dict[str, Entry] = {}
    for path, dmode in recipe.directories.items():
        entries[path] = Entry(path, stat.S_IFDIR | dmode)
    for guest, host in files.items():
        entries[guest] = Entry(guest, stat.S_IFREG | _exec_mode(host), source=host)
    for path, target in recipe.symlinks.items():
        entries[path] = Entry(path, stat.S_IFLNK | 0o777, target.encode())
    for path, node in recipe.nodes.items():
        kind = stat.S_IFCHR if node.kind == "char" else stat.S_IFBLK
        entries[path] = Entry(path, kind | node.mode, rdev=(node.major, node.minor))
    for path, (fmode, text) in recipe.files.items():
        entries[path] = Entry(path, stat.S_IFREG | fmode, text.encode())
    entries["/init"] = Entry("/init", stat.S_IFREG | 0o755, recipe.render_init().encode())
    entries[recipe.host_key_path] = Entry(recipe.host_key_path, stat.S_IFREG | 0o600, host_key)
    entries[recipe.authorized_keys_path] = Entry(
        recipe.authorized_keys_path, stat.S_IFREG | 0o600, (authorized_key + "\n").encode()
    )
    return list(entries.values())


def build_image(
    extra_files: Mapping[str, Path | str] | None = None,
    *,
    recipe: str = DEFAULT_RECIPE,
    cache: Path | None = None,
) -> GuestImage:
    """Build (or reuse) the guest image for ``recipe`` with ``extra_files`` added.

    ``extra_files`` maps absolute guest paths to host files (the workload's binaries); dynamic
    executables bring their shared libraries. The image lands in ``<cache>/images/<key>``
    (default cache: :func:`~orchestrator.fsutil.cache_root`), built in a temporary directory
    and renamed, so a half-built image is never used. Keys and the initrd are mode 0600.
    """
    loaded = load_recipe(recipe)
    extras = {g: Path(h) for g, h in (extra_files or {}).items()}
    files = _inputs(loaded, extras)
    key = image_key(loaded, files)
    root = (cache or cache_root()) / "images"
    final = root / key
    if (final / MANIFEST_NAME).is_file():
        return _load(final)
    with locked(root / f".{key}.lock"):
        if (final / MANIFEST_NAME).is_file():
            return _load(final)
        sweep_stale(root)
        tmp = temp_dir_beside(final)
        host_key, host_public = _host_keypair(tmp)
        client_private, client_public = _client_keypair()
        entries = image_entries(loaded, files, host_key=host_key, authorized_key=client_public)
        initrd = tmp / INITRD_NAME
        fd = os.open(initrd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (
            open(fd, "wb") as raw,
            # level 6: a third of level 9's time for an archive 0.5% larger
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        ):
            write_cpio(entries, gz)
        atomic_write(tmp / CLIENT_KEY_NAME, client_private, mode=0o600)
        atomic_write(tmp / (CLIENT_KEY_NAME + ".pub"), client_public + "\n", mode=0o600)
        manifest = {
            "format": IMAGE_FORMAT,
            "content_id": key,
            "recipe": loaded.name,
            "ready_marker": loaded.ready_marker,
            "user": loaded.user,
            "host_public_key": host_public,
            "initrd_sha256": sha256_file(initrd),
            "files": {g: str(h) for g, h in sorted(files.items())},
            "extra_files": sorted(extras),
        }
        atomic_write(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        publish_dir(tmp, final)
    return _load(final)


def _load(directory: Path) -> GuestImage:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    return GuestImage(
        initrd=directory / INITRD_NAME,
        client_key=directory / CLIENT_KEY_NAME,
        host_public_key=manifest["host_public_key"],
        content_id=manifest["content_id"],
        ready_marker=manifest["ready_marker"],
        user=manifest["user"],
    )
