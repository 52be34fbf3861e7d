"""guest: {files, packages}: the experiment's additions to the guest image.

Packages are real ones this machine has installed (ccache is in ci/debian-packages.txt);
the image is really built (cpio, ldd); tests/integration/test_guest.py runs them in a guest.
"""

from __future__ import annotations

import gzip
import textwrap
from pathlib import Path

import pytest

from orchestrator import additions, config, image
from orchestrator.additions import GuestFile, GuestSpec
from orchestrator.errors import ConfigError, UserError

HEAD = config.default_experiment_path().read_text().split("\nchecks:")[0] + "\n"


def _load(tmp_path: Path, guest: str) -> config.Experiment:
    path = tmp_path / "e.yaml"
    patches = str(config.default_experiment_path().parent / "patches") + "/"
    path.write_text(HEAD.replace("patches/", patches) + guest)
    return config.load(path)


def test_files_and_packages_in_an_experiment(tmp_path: Path) -> None:
    (tmp_path / "bench").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    exp = _load(
        tmp_path,
        textwrap.dedent(
            """\
            guest:
              files: [bench, {host: data, guest: /srv/data}]
              packages: [ccache]
            """
        ),
    )
    assert exp.guest.files == (
        GuestFile(tmp_path / "bench", "/opt/korch/files/bench"),
        GuestFile(tmp_path / "data", "/srv/data"),
    )
    assert exp.guest.packages == ("ccache",)
    assert additions.expand_files(exp.guest.files) == {
        "/opt/korch/files/bench": tmp_path / "bench",
        "/srv/data/a.txt": tmp_path / "data" / "a.txt",
    }


@pytest.mark.parametrize(
    ("guest", "message"),
    [
        ("guest:\n  files: [missing.bin]\n", "guest.files[0]: {tmp}/missing.bin does not exist"),
        (
            "guest:\n  files: [{host: e.yaml, guest: opt/x}]\n",
            "guest.files[0].guest: must be an absolute path in the guest",
        ),
        ("guest:\n  packages: [Not_A_Package]\n", "not a Debian package name: 'Not_A_Package'"),
        ("guest:\n  programs: [x]\n", "guest.programs: unknown key"),
    ],
)
def test_bad_additions_name_the_line(tmp_path: Path, guest: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, guest)
    text = str(err.value)
    assert message.format(tmp=tmp_path) in text
    line = len(HEAD.splitlines()) + 2
    assert f"e.yaml:{line}:" in text


def test_an_installed_package_brings_its_files_without_documentation() -> None:
    files = additions.package_files("ccache")
    assert files["/usr/bin/ccache"] == Path("/usr/bin/ccache").resolve()
    assert not [g for g in files if g.startswith("/usr/share/doc/")]


def test_a_package_not_installed_says_how_to_install_it() -> None:
    with pytest.raises(UserError) as err:
        additions.package_files("korch-no-such-package")
    assert "korch-no-such-package is not installed on this machine" in str(err.value)
    assert "apt-get install korch-no-such-package" in str(err.value)


def test_the_image_holds_the_additions_and_their_libraries(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("from the experiment\n")
    spec = GuestSpec((GuestFile(tmp_path / "note.txt", "/srv/note.txt"),), ("ccache",))
    img = image.build_image(additions.guest_files(spec), cache=tmp_path / "cache")
    members = image.read_cpio(gzip.decompress(img.initrd.read_bytes()))
    assert members["/srv/note.txt"].data == b"from the experiment\n"
    assert members["/usr/bin/ccache"].data == Path("/usr/bin/ccache").read_bytes()
    # ccache is dynamic: ldd's libraries came along (libzstd on Debian 12)
    needed = image.shared_libraries(Path("/usr/bin/ccache"))
    assert needed and all(lib in members for lib in needed)
    # cached by content: the same additions give the same image, another file another
    assert image.build_image(additions.guest_files(spec), cache=tmp_path / "cache") == img
    (tmp_path / "note.txt").write_text("changed\n")
    other = image.build_image(additions.guest_files(spec), cache=tmp_path / "cache")
    assert other.content_id != img.content_id


def test_korch_files_win_over_an_experiments(tmp_path: Path) -> None:
    mine, theirs = Path("/a"), Path("/b")
    assert additions.merge({"/opt/korch/bin/x": mine}, {"/opt/korch/bin/x": theirs}) == {
        "/opt/korch/bin/x": mine
    }
