"""image.py: recipes, the cpio writer, and real image builds from the host's packages."""

from __future__ import annotations

import gzip
import io
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from orchestrator import image
from orchestrator.errors import ConfigError, ToolMissing, UserError

HAVE_GUEST_TOOLS = (
    all(
        Path(p).exists()
        for p in ("/bin/busybox", "/usr/sbin/dropbear", "/usr/lib/openssh/sftp-server")
    )
    and shutil.which("dropbearkey") is not None
)
needs_guest_tools = pytest.mark.skipif(
    not HAVE_GUEST_TOOLS, reason="busybox-static, dropbear-bin, openssh-sftp-server needed"
)


# --- recipes ---------------------------------------------------------------------------------


def test_default_recipe_loads() -> None:
    recipe = image.load_recipe()
    assert "initramfs" in image.available_recipes()
    assert recipe.ready_marker == "korch-guest: ready"
    assert {b.package for b in recipe.binaries} == {
        "busybox-static",
        "dropbear-bin",
        "openssh-sftp-server",
    }
    assert any(b.guest == "/usr/lib/sftp-server" for b in recipe.binaries)
    assert recipe.directories["/root/.ssh"] == 0o700
    assert recipe.nodes["/dev/console"] == image.Node("char", 5, 1, 0o600)
    init = recipe.render_init()
    assert not re.search(r"@[A-Z_]+@", init)
    for needed in (
        "mount -t proc",
        "mount -t sysfs",
        "mount -t devtmpfs",
        "mount -t devpts",
        "mount -t tmpfs",
        "ip link set lo up",
        "10.0.2.15/24",
        "default via 10.0.2.2",
        recipe.host_key_path,
        "korch-guest: ready",
    ):
        assert needed in init


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown image recipe 'nope'") as info:
        image.load_recipe("nope")
    assert "initramfs" in str(info.value)


def _recipe(root: Path, yaml_text: str, init: str = "#!/bin/sh\necho @READY_MARKER@\n") -> None:
    d = root / "bad"
    d.mkdir(parents=True)
    (d / "recipe.yaml").write_text(yaml_text)
    (d / "init").write_text(init)


def test_recipe_problems_are_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORCH_IMAGES", str(tmp_path))
    _recipe(
        tmp_path,
        "init: init\n"
        "params: {}\n"
        "binaries: [{guest: bin/relative, host: /bin/true, package: coreutils}]\n"
        "directories: {/tmp: 1777}\n"
        "keys: {host_key: /etc/key}\n",
    )
    with pytest.raises(ConfigError) as info:
        image.load_recipe("bad")
    text = str(info.value)
    assert "READY_MARKER" in text
    assert "guest paths must be absolute" in text
    assert "octal string" in text  # 1777 unquoted is an int, not the mode the author meant
    assert "keys.authorized_keys" in text and "keys.user" in text


def test_unknown_placeholder_in_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORCH_IMAGES", str(tmp_path))
    _recipe(
        tmp_path,
        "params: {READY_MARKER: up}\n"
        "keys: {host_key: /etc/key, authorized_keys: /root/.ssh/authorized_keys, user: root}\n",
        init="#!/bin/sh\nip addr add @ADDRESS@ dev eth0\necho @READY_MARKER@\n",
    )
    recipe = image.load_recipe("bad")
    with pytest.raises(ConfigError, match="no value for @ADDRESS@"):
        recipe.render_init()


# --- cpio ------------------------------------------------------------------------------------


def _entries() -> list[image.Entry]:
    return [
        image.Entry("/usr/bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        image.Entry("/init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
        image.Entry("/bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        image.Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        image.Entry("/root/.ssh", stat.S_IFDIR | 0o700),
        image.Entry("/root/.ssh/authorized_keys", stat.S_IFREG | 0o600, b"ssh-ed25519 AAAA x\n"),
    ]


def _cpio(entries: list[image.Entry]) -> bytes:
    out = io.BytesIO()
    image.write_cpio(entries, out)
    return out.getvalue()


def test_cpio_round_trip_with_parents() -> None:
    members = image.read_cpio(_cpio(_entries()))
    assert list(members) == [
        "/bin",
        "/bin/sh",
        "/dev",
        "/dev/console",
        "/init",
        "/root",
        "/root/.ssh",
        "/root/.ssh/authorized_keys",
        "/usr",
        "/usr/bin",
        "/usr/bin/tool",
    ]
    assert members["/usr/bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert stat.S_ISLNK(members["/bin/sh"].mode) and members["/bin/sh"].data == b"busybox"
    assert stat.S_ISCHR(members["/dev/console"].mode) and members["/dev/console"].rdev == (5, 1)
    assert stat.S_IMODE(members["/root/.ssh"].mode) == 0o700
    assert stat.S_IMODE(members["/usr"].mode) == 0o755  # an implied parent


def test_cpio_is_deterministic() -> None:
    entries = _entries()
    assert _cpio(entries) == _cpio(list(reversed(entries)))
    data = _cpio(entries)
    assert len(data) % 4 == 0
    # mtime field (the sixth) is zero in every header
    assert data[6 + 8 * 5 : 6 + 8 * 6] == b"00000000"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_host_cpio_reads_the_archive(tmp_path: Path) -> None:
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=_cpio(_entries()), capture_output=True, check=True
    ).stdout.decode()
    assert "root/.ssh/authorized_keys" in listing
    assert "bin/sh -> busybox" in listing
    assert "5,   1" in listing  # the console device node


# --- inputs ----------------------------------------------------------------------------------


@needs_guest_tools
def test_shared_libraries() -> None:
    assert image.shared_libraries(Path("/bin/busybox")) == []  # busybox-static
    libs = image.shared_libraries(Path("/usr/sbin/dropbear"))
    assert any(lib.endswith("/libc.so.6") for lib in libs)
    assert any("ld-linux" in lib for lib in libs)


def test_scripts_have_no_libraries(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    assert image.shared_libraries(script) == []


def test_missing_recipe_binary_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KORCH_IMAGES", str(tmp_path))
    _recipe(
        tmp_path,
        "params: {READY_MARKER: up}\n"
        "binaries: [{guest: /bin/x, host: /nonexistent/x, package: x-tools}]\n"
        "keys: {host_key: /etc/key, authorized_keys: /root/.ssh/authorized_keys, user: root}\n",
    )
    with pytest.raises(ToolMissing, match="x-tools"):
        image.build_image(recipe="bad")


@needs_guest_tools
def test_bad_extra_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        image.build_image({"relative/path": tmp_path, "/bin/missing": tmp_path / "missing"})
    text = str(info.value)
    assert "must be absolute" in text and "is not a file" in text


# --- builds ----------------------------------------------------------------------------------


@needs_guest_tools
def test_build_image_cached_by_content(tmp_path: Path) -> None:
    first = image.build_image()
    again = image.build_image()
    assert again == first
    assert first.initrd.parent.parent == image.cache_root() / "images"
    assert first.initrd.parent.name == first.content_id
    for private in (first.initrd, first.client_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert first.host_public_key.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(first.initrd.parent.stat().st_mode) == 0o700

    extra = tmp_path / "workload.sh"
    extra.write_text("#!/bin/sh\necho working\n")
    extra.chmod(0o755)
    with_extra = image.build_image({"/usr/bin/workload": extra})
    assert with_extra.content_id != first.content_id
    assert with_extra.host_public_key != first.host_public_key  # fresh keys per image

    members = image.read_cpio(gzip.decompress(with_extra.initrd.read_bytes()))
    assert members["/usr/bin/workload"].data == extra.read_bytes()
    assert stat.S_IMODE(members["/usr/bin/workload"].mode) == 0o755
    assert "/bin/sh" not in members  # init links it, see the recipe
    assert "/usr/lib/sftp-server" in members
    assert any(p.endswith("libc.so.6") for p in members)
    init = members["/init"]
    assert stat.S_IMODE(init.mode) == 0o755 and b"korch-guest: ready" in init.data
    client_pub = (with_extra.client_key.parent / "client_ed25519.pub").read_text().split()[:2]
    assert members["/root/.ssh/authorized_keys"].data.split()[:2] == [
        part.encode() for part in client_pub
    ]
    host_key = members["/etc/dropbear/dropbear_ed25519_host_key"]
    assert stat.S_IMODE(host_key.mode) == 0o600

    # the key dropbear will load is the one the client pins
    key_file = tmp_path / "host_key"
    key_file.write_bytes(host_key.data)
    shown = subprocess.run(
        ["dropbearkey", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True
    ).stdout
    assert with_extra.host_public_key in shown


@needs_guest_tools
def test_changed_extra_file_changes_the_key(tmp_path: Path) -> None:
    extra = tmp_path / "data"
    extra.write_text("one")
    a = image.build_image({"/data": extra})
    extra.write_text("two")
    b = image.build_image({"/data": extra})
    assert a.content_id != b.content_id


@needs_guest_tools
def test_archive_bytes_depend_only_on_inputs_and_keys() -> None:
    recipe = image.load_recipe()
    files = image._inputs(recipe, {})
    entries = image.image_entries(
        recipe, files, host_key=b"HOSTKEY", authorized_key="ssh-ed25519 K"
    )
    assert _cpio(entries) == _cpio(list(reversed(entries)))
