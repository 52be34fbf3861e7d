"""Kernel sources: safe extraction, content ids, never touching the user's tree."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator.config import SourceSpec
from orchestrator.errors import InfraError, UserError
from orchestrator.source import SourceCache, kernel_version, safe_extract
from tests.conftest import make_fake_kernel


def tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            data = b"x" if m.isfile() else None
            if data is not None:
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    return path


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    return m


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (info("/etc/evil"), "absolute path"),
        (info("linux/../../evil"), "'..' in its path"),
        (info("linux/up", tarfile.SYMTYPE, "../../etc"), "symlink pointing outside"),
        (info("linux/abs", tarfile.SYMTYPE, "/etc/passwd"), "symlink to an absolute path"),
        (info("linux/hard", tarfile.LNKTYPE, "../outside"), "hard link to outside"),
        (info("linux/dev", tarfile.CHRTYPE), "device or FIFO"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    archive = tar_with(tmp_path / "bad.tar", [info("linux/ok"), member])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UserError) as exc:
        safe_extract(archive, dest)
    assert f"refusing member {member.name!r}" in str(exc.value)
    assert why in str(exc.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_writing_through_an_extracted_symlink_is_refused(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path / "bad.tar",
        [info("linux/dir", tarfile.SYMTYPE, "."), info("linux/dir/../../x")],
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UserError):
        safe_extract(archive, dest)
    assert not (tmp_path / "x").exists()


def test_kernel_version_from_makefile(tmp_path: Path) -> None:
    assert kernel_version(make_fake_kernel(tmp_path / "k")) == "7.2.0-test"


def tarball_of(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(tree, arcname="linux-7.2")
    return out


def test_tarball_and_directory_give_the_same_content_id(tmp_path: Path) -> None:
    tree = make_fake_kernel(tmp_path / "src", {"fs/proc/task_mmu.c": "int x;\n"})
    archive = tarball_of(tree, tmp_path / "linux.tar.gz")
    cache = SourceCache(tmp_path / "cache")
    from_tar = cache.get(SourceSpec("tarball", str(archive)))
    from_dir = cache.get(SourceSpec("path", str(tree)))
    assert from_tar.tree_id == from_dir.tree_id
    assert (from_tar.worktree.path / "fs/proc/task_mmu.c").read_text() == "int x;\n"
    assert from_tar.kernel_version == "7.2.0-test"
    # A second lookup extracts nothing: it is found by the tarball's sha256.
    again = cache.get(SourceSpec("tarball", str(archive)))
    assert again.worktree == from_tar.worktree


def test_tarball_checksum_mismatch(tmp_path: Path) -> None:
    archive = tarball_of(make_fake_kernel(tmp_path / "src"), tmp_path / "linux.tar.gz")
    with pytest.raises(UserError, match="expects 0000"):
        SourceCache(tmp_path / "cache").get(SourceSpec("tarball", str(archive), sha256="0" * 64))


def test_directory_source_is_never_modified(tmp_path: Path) -> None:
    tree = make_fake_kernel(tmp_path / "src", {"a.c": "1\n"})
    before = sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*"))
    src = SourceCache(tmp_path / "cache").get(SourceSpec("path", str(tree)))
    after = sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*"))
    assert before == after
    assert src.worktree.path != tree
    # Editing the tree gives a new content id.
    (tree / "a.c").write_text("2\n")
    assert SourceCache(tmp_path / "cache").get(SourceSpec("path", str(tree))).tree_id != src.tree_id


def test_directory_built_in_place_is_refused(tmp_path: Path) -> None:
    tree = make_fake_kernel(tmp_path / "src", {".config": "CONFIG_X=y\n"})
    with pytest.raises(UserError, match="configured or built in place"):
        SourceCache(tmp_path / "cache").get(SourceSpec("path", str(tree)))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_source_shallow_by_ref(tmp_path: Path) -> None:
    repo = make_fake_kernel(tmp_path / "repo", {"mm/x.c": "v1\n"})
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
    git("tag", "v1", cwd=repo)
    (repo / "mm/x.c").write_text("v2\n")
    git("commit", "-qam", "two", cwd=repo)
    src = SourceCache(tmp_path / "cache").get(SourceSpec("git", str(repo), ref="v1"))
    assert (src.worktree.path / "mm/x.c").read_text() == "v1\n"
    assert src.provenance["commit"] == git("rev-parse", "v1", cwd=repo)
    assert src.tree_id == git("rev-parse", "v1^{tree}", cwd=repo)
    with pytest.raises(UserError, match="has no ref 'nope'"):
        SourceCache(tmp_path / "cache").get(SourceSpec("git", str(repo), ref="nope"))


def test_not_a_kernel_tree(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(UserError, match="does not look like a Linux source tree"):
        SourceCache(tmp_path / "cache").get(SourceSpec("path", str(d)))


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real HTTPS server on 127.0.0.1 with a throwaway certificate the client trusts."""
    import http.server
    import shutil
    import ssl
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    served = tmp_path / "www"
    served.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        yield served, f"https://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tarball_over_https_checked_and_cached(tmp_path: Path, https_server) -> None:
    import hashlib

    served, base = https_server
    archive = tarball_of(
        make_fake_kernel(tmp_path / "src", {"x.c": "1\n"}), served / "linux.tar.gz"
    )
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(UserError, match=f"has sha256 {digest}, the experiment expects {'1' * 64}"):
        cache.get(SourceSpec("tarball", f"{base}/linux.tar.gz", sha256="1" * 64))
    src = cache.get(SourceSpec("tarball", f"{base}/linux.tar.gz", sha256=digest))
    assert (src.worktree.path / "x.c").read_text() == "1\n"
    assert (tmp_path / "cache" / "downloads" / digest).is_file()
    archive.unlink()  # a second lookup needs no download
    assert (
        cache.get(SourceSpec("tarball", f"{base}/linux.tar.gz", sha256=digest)).tree_id
        == src.tree_id
    )
    with pytest.raises(InfraError, match=r"downloading .*/missing\.tar\.gz failed"):
        cache.get(SourceSpec("tarball", f"{base}/missing.tar.gz"))


def test_a_tar_cut_inside_a_header_is_refused(tmp_path: Path) -> None:
    # tar's stream reader takes a header cut short for the end of the archive: the tree
    # was extracted without its last files and cached as complete
    whole = tarball_of(make_fake_kernel(tmp_path / "src", {"z.c": "1\n"}), tmp_path / "w.tar.gz")
    with tarfile.open(whole) as tf:
        last = tf.getmembers()[-1].offset
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as out:
            for m in tf.getmembers():
                out.addfile(m, tf.extractfile(m) if m.isfile() else None)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data.getvalue()[: last + 100])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UserError, match="the archive is truncated"):
        safe_extract(cut, dest)
    with pytest.raises(UserError, match="truncated"):
        SourceCache(tmp_path / "cache").get(SourceSpec("tarball", str(cut)))
    assert not list((tmp_path / "cache").rglob(".extract-*"))  # nothing half-kept


def test_a_link_that_leaves_the_kept_top_directory_is_refused(tmp_path: Path) -> None:
    # inside the extraction directory, but outside linux-7.2/, the tree korch keeps
    tree = make_fake_kernel(tmp_path / "src")
    archive = tmp_path / "linux.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(tree, arcname="linux-7.2")
        tf.addfile(info("linux-7.2/escape", tarfile.SYMTYPE, ".."))
    with pytest.raises(UserError, match=r"refusing member 'linux-7\.2/escape'"):
        SourceCache(tmp_path / "cache").get(SourceSpec("tarball", str(archive)))


def test_a_suite_is_fetched_from_the_address_apt_has_for_it() -> None:
    # the security suite lives at another address than the main archive: swapping the
    # suite into the main archive's address gave "does not have a Release file"
    from orchestrator.source import archive_for

    entries = [
        ("http://mirror.example/debian", None, ["bookworm", "bookworm-updates"]),
        ("http://mirror.example/debian-security/", None, ["bookworm-security"]),
        ("https://vendor.example/apt", None, ["stable"]),
    ]
    assert archive_for("bookworm-security", entries)[0] == "http://mirror.example/debian-security"
    # a suite apt does not list takes the address of its kind
    assert archive_for("trixie-security", entries)[0] == "http://mirror.example/debian-security"
    assert archive_for("trixie-backports", entries)[0] == "http://mirror.example/debian"
    assert archive_for(None, entries)[0] == "http://mirror.example/debian"
    with pytest.raises(InfraError, match="no Debian archive"):
        archive_for("bookworm", [("http://mirror.example/debian-security", None, ["x-security"])])
