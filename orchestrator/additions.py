"""What an experiment adds to the guest image (``guest: {files, packages}``).

``files`` are host files or directories (relative to the experiment file) copied to a guest
path; ``packages`` are Debian packages installed on this machine, whose files go into the
guest where the package put them on the host (documentation left out). Dynamic executables
bring their shared libraries either way (:func:`orchestrator.image.build_image` runs ``ldd``).
The image stays cached by content: the same additions give the same image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import process
from .errors import UserError

DEFAULT_DIR = "/opt/korch/files"  # where a file given without a guest path lands
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
# what a benchmark never needs in the guest
SKIPPED = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
           "/usr/share/lintian/", "/usr/share/bug/")  # fmt: skip


@dataclass(frozen=True)
class GuestFile:
    """A host file or directory and the guest path it is copied to."""

    host: Path
    guest: str


@dataclass(frozen=True)
class GuestSpec:
    """An experiment's ``guest:`` section."""

    files: tuple[GuestFile, ...] = ()
    packages: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.packages)


def guest_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a guest path, or None."""
    if not path.startswith("/"):
        return "must be an absolute path in the guest"
    if ".." in PurePosixPath(path).parts:
        return "must not contain '..'"
    return None


def expand_files(files: tuple[GuestFile, ...]) -> dict[str, Path]:
    """guest path -> host file for every file, directories walked (symlinks followed)."""
    out: dict[str, Path] = {}
    for f in files:
        if f.host.is_dir():
            for p in sorted(f.host.rglob("*")):
                if p.is_file():
                    out[f"{f.guest.rstrip('/')}/{p.relative_to(f.host).as_posix()}"] = p
        elif f.host.is_file():
            out[f.guest] = f.host
        else:
            raise UserError(
                f"guest.files: {f.host} is neither a file nor a directory (any more)",
                hint="the experiment names it; restore it or drop it from guest.files",
            )
    return out


def package_files(package: str) -> dict[str, Path]:
    """guest path -> host file for every file the installed ``package`` holds (dpkg's list),
    documentation left out. A package this machine has not installed is a :class:`UserError`
    that says how to install it."""
    process.require("dpkg-query", "dpkg")
    status = process.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
        check=False,
        what=f"dpkg-query {package}",
    )
    if status.returncode != 0 or status.output.strip() != "installed":
        raise UserError(
            f"guest.packages: {package} is not installed on this machine; korch copies the"
            " files of installed packages into the guest",
            hint=f"apt-get install {package} (the name as apt knows it), or drop it",
        )
    listing = process.run(["dpkg-query", "-L", package], what=f"dpkg-query -L {package}")
    out: dict[str, Path] = {}
    for line in listing.output.splitlines():
        path = line.strip()
        if not path.startswith("/") or path.startswith(SKIPPED):
            continue
        host = Path(path)
        # a symlink brings its target's content (the guest has no need of the link itself)
        if host.is_file():
            out[path] = host.resolve()
    if not out:
        raise UserError(f"guest.packages: {package} installs no file korch would copy")
    return out


def guest_files(spec: GuestSpec) -> dict[str, Path]:
    """Every file ``spec`` adds: packages' first, then files (which win on a clash)."""
    out: dict[str, Path] = {}
    for package in spec.packages:
        out.update(package_files(package))
    out.update(expand_files(spec.files))
    return out


def merge(base: Mapping[str, Path], added: Mapping[str, Path]) -> dict[str, Path]:
    """korch's own guest files with an experiment's added; korch's win (its workload must
    run as built)."""
    return {**added, **base}
