"""Patch series: ordering, providers, and failures that name the patch, file and hunk."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.config import SeriesSpec, SourceSpec
from orchestrator.errors import ApplyError, UserError
from orchestrator.series import describe_failure, hunks_of, prepare, read_series
from orchestrator.source import SourceCache
from tests.conftest import make_fake_kernel

BASE = "".join(f"line {i}\n" for i in range(1, 31))


def mail_patch(subject: str, old: str, new: str, path: str = "fs/a.c") -> str:
    """A git-format patch changing ``old`` to ``new`` in ``path`` (one hunk)."""
    o, n = old.splitlines(keepends=True), new.splitlines(keepends=True)
    import difflib

    body = "".join(difflib.unified_diff(o, n, f"a/{path}", f"b/{path}"))
    return (
        f"From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001\n"
        f"From: Dev Eloper <dev@example.org>\nDate: Tue, 1 Sep 2026 10:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\nWhy it matters.\n---\n"
        f"diff --git a/{path} b/{path}\n{body}"
    )


@pytest.fixture
def source(tmp_path: Path):
    tree = make_fake_kernel(tmp_path / "linux", {"fs/a.c": BASE})
    cache = SourceCache(tmp_path / "cache")
    return cache, cache.get(SourceSpec("path", str(tree)))


def test_directory_series_in_name_order(tmp_path: Path) -> None:
    d = tmp_path / "series"
    d.mkdir()
    for name in ("0002-b.patch", "0010-c.patch", "0001-a.patch", "notes.txt"):
        (d / name).write_text(name)
    got = [p.label for p in read_series(SeriesSpec("dir", path=d), tmp_path)]
    assert got == ["0001-a.patch", "0002-b.patch", "0010-c.patch"]


def test_series_applies_as_one_commit_per_patch(tmp_path: Path, source) -> None:
    cache, src = source
    step1 = BASE.replace("line 5\n", "line five\n")
    step2 = step1.replace("line 25\n", "line twenty-five\n")
    files = [tmp_path / "1.patch", tmp_path / "2.patch"]
    files[0].write_text(mail_patch("fs: five", BASE, step1))
    files[1].write_text(mail_patch("fs: twenty-five", step1, step2))
    patched = prepare(cache.store, src, SeriesSpec("files", files=tuple(files)))
    assert [p.subject for p in patched.patches] == ["fs: five", "fs: twenty-five"]
    assert patched.patches[0].author == "Dev Eloper <dev@example.org>"
    assert cache.store.out("show", f"{patched.commit}:fs/a.c") + "\n" == step2
    parent = cache.store.out("rev-parse", f"{patched.commit}^")
    assert parent == patched.patches[0].commit
    assert cache.store.out("rev-parse", f"{parent}^") == src.commit
    # Same series again: same commits (deterministic), no new work.
    assert (
        prepare(cache.store, src, SeriesSpec("files", files=tuple(files))).commit == patched.commit
    )


def test_failure_names_patch_subject_file_and_hunk(tmp_path: Path, source) -> None:
    cache, src = source
    wrong = BASE.replace("line 20\n", "something else\n")
    good = mail_patch("fs: ok", BASE, BASE.replace("line 2\n", "line two\n"))
    # Two hunks: the first applies, the second targets text that is not there.
    bad = mail_patch(
        "fs: second hunk is stale",
        wrong,
        wrong.replace("line 10\n", "10\n").replace("something else\n", "x\n"),
    )
    (tmp_path / "0001-ok.patch").write_text(good)
    (tmp_path / "0002-bad.patch").write_text(bad)
    spec = SeriesSpec("files", files=(tmp_path / "0001-ok.patch", tmp_path / "0002-bad.patch"))
    with pytest.raises(ApplyError) as exc:
        prepare(cache.store, src, spec)
    e = exc.value
    assert e.patch == "0002-bad.patch" and e.subject == "fs: second hunk is stale"
    assert e.file == "fs/a.c" and e.hunk == 2
    assert "2 of 2" in str(e) and "hunk #2" in str(e)
    # The pristine source is untouched: the work tree still holds the original file.
    assert (src.worktree.path / "fs/a.c").read_text() == BASE
    assert src.worktree.head() == src.commit


def test_a_damaged_patch_is_not_called_stale(tmp_path: Path, source) -> None:
    # a hunk whose line counts are wrong (a hand edit, a mail client's wrapping) got the
    # "rebase the series" hint, which sends the developer after the wrong problem
    cache, src = source
    good = mail_patch("fs: five", BASE, BASE.replace("line 5\n", "line five\n"))
    damaged = good.replace("@@ -2,7 +2,7 @@", "@@ -2,9 +2,9 @@")
    assert damaged != good
    p = tmp_path / "0001-damaged.patch"
    p.write_text(damaged)
    with pytest.raises(ApplyError) as exc:
        prepare(cache.store, src, SeriesSpec("files", files=(p,)))
    text = str(exc.value)
    assert "0001-damaged.patch" in text and "is damaged" in text and "corrupt patch" in text
    assert "fetch it again" in text and "rebase the series onto" not in text


def test_missing_file_is_named(tmp_path: Path, source) -> None:
    cache, src = source
    p = tmp_path / "x.patch"
    p.write_text(mail_patch("mm: new thing", "a\n", "b\n", path="mm/none.c"))
    with pytest.raises(ApplyError) as exc:
        prepare(cache.store, src, SeriesSpec("files", files=(p,)))
    assert exc.value.file == "mm/none.c"
    assert "does not exist in this source" in str(exc.value)


def test_mbox_and_git_range(tmp_path: Path, source) -> None:
    cache, src = source
    step1 = BASE.replace("line 5\n", "line five\n")
    step2 = step1.replace("line 25\n", "line twenty-five\n")
    mbox = tmp_path / "s.mbox"
    mbox.write_text(
        mail_patch("fs: five", BASE, step1) + "\n" + mail_patch("fs: twenty-five", step1, step2)
    )
    patched = prepare(cache.store, src, SeriesSpec("mbox", path=mbox))
    assert [p.label for p in patched.patches] == ["s.mbox#1", "s.mbox#2"]

    repo = make_fake_kernel(tmp_path / "repo", {"fs/a.c": BASE})

    def run(*a: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    run("init", "-q")
    run("add", "-A")
    run("commit", "-qm", "base")
    run("tag", "base")
    (repo / "fs/a.c").write_text(step1)
    run("commit", "-qam", "fs: five")
    (repo / "fs/a.c").write_text(step2)
    run("commit", "-qam", "fs: twenty-five")
    ranged = prepare(cache.store, src, SeriesSpec("git", path=repo, spec="base..HEAD"))
    assert [p.subject for p in ranged.patches] == ["fs: five", "fs: twenty-five"]
    assert ranged.tree_id == patched.tree_id


def test_a_prefix_is_the_first_patches_of_any_series_form(tmp_path: Path, source) -> None:
    """korch bisect's prefixes: ``first: k`` keeps the first k patches of an mbox, a
    directory or a git range, each the same commits as the whole series' first k."""
    cache, src = source
    step1 = BASE.replace("line 5\n", "line five\n")
    step2 = step1.replace("line 25\n", "line twenty-five\n")
    texts = [mail_patch("fs: five", BASE, step1), mail_patch("fs: twenty-five", step1, step2)]
    mbox = tmp_path / "s.mbox"
    mbox.write_text("\n".join(texts))
    d = tmp_path / "dir"
    d.mkdir()
    for i, t in enumerate(texts, 1):
        (d / f"000{i}.patch").write_text(t)
    for spec in (SeriesSpec("mbox", path=mbox), SeriesSpec("dir", path=d)):
        whole = prepare(cache.store, src, spec)
        one = prepare(cache.store, src, replace(spec, first=1))
        none = prepare(cache.store, src, replace(spec, first=0))
        assert [p.subject for p in one.patches] == ["fs: five"]
        assert one.commit == whole.patches[0].commit
        assert none.commit == src.commit and none.patches == ()
        assert whole.patches[1].commit == prepare(cache.store, src, replace(spec, first=2)).commit
        assert replace(spec, first=1).describe().startswith("the first 1 patch(es) of ")


def test_b4_with_a_local_mbox(tmp_path: Path, source) -> None:
    """The lore path cannot reach lore from here; b4 am -m exercises the same code with a local thread."""
    import shutil

    if shutil.which("b4") is None:
        pytest.skip("b4 is not installed (apt-get install b4)")
    cache, src = source
    step1 = BASE.replace("line 5\n", "line five\n")
    msg = mail_patch("fs: five", BASE, step1).replace(
        "Subject:", "Message-Id: <20260901-five-v1-1@example.org>\nTo: list@example.org\nSubject:"
    )
    mbox = tmp_path / "thread.mbox"
    mbox.write_text(msg)
    patched = prepare(
        cache.store, src, SeriesSpec("b4", path=mbox, spec="20260901-five-v1-1@example.org")
    )
    assert [p.subject for p in patched.patches] == ["fs: five"]
    with pytest.raises(UserError, match="b4 could not fetch"):
        prepare(cache.store, src, SeriesSpec("b4", path=mbox, spec="nothing-here@example.org"))


def test_hunk_parsing() -> None:
    diff = b"--- a/x.c\n+++ b/x.c\n@@ -3,2 +3,2 @@\n-a\n+b\n@@ -40,1 +40,1 @@ fn\n-c\n+d\n"
    assert hunks_of(diff) == {"x.c": [(3, "@@ -3,2 +3,2 @@"), (40, "@@ -40,1 +40,1 @@ fn")]}
    file, hunk, summary = describe_failure(
        "error: patch failed: x.c:40\nerror: x.c: patch does not apply", diff
    )
    assert (file, hunk) == ("x.c", 2) and "hunk #2" in summary


@pytest.mark.parametrize("content", ["", "hello\n"])
def test_an_empty_or_garbled_mbox_is_a_usage_error(tmp_path: Path, content: str) -> None:
    # it exited 2 ("infrastructure, safe to retry"): no retry fixes the input
    mbox = tmp_path / "series.mbx"
    mbox.write_text(content)
    with pytest.raises(UserError, match="holds no messages") as exc:
        read_series(SeriesSpec("mbox", path=mbox), tmp_path)
    assert exc.value.exit_code == 64 and "series.mbx" in str(exc.value)


def test_pull_request_example_on_a_merge_commit(tmp_path: Path) -> None:
    """ci/github/examples/pull-request.yaml in a kernel tree checked out as a pull request's
    merge commit: the baseline is the base branch (HEAD^1), the candidate the base branch
    with the pull request's commits (HEAD^1..HEAD^2), which here gives the merge's tree."""
    import shutil

    from orchestrator import config

    repo = make_fake_kernel(tmp_path / "linux", {"fs/a.c": BASE, "mm/b.c": "b\n"})

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
            cwd=repo, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("checkout", "-qb", "topic")
    step1 = BASE.replace("line 5\n", "line five\n")
    (repo / "fs/a.c").write_text(step1)
    git("commit", "-qam", "fs: five")
    (repo / "fs/a.c").write_text(step1.replace("line 25\n", "line twenty-five\n"))
    git("commit", "-qam", "fs: twenty-five")
    git("checkout", "-q", "main")
    (repo / "mm/b.c").write_text("b moved on\n")  # the base branch moved on meanwhile
    git("commit", "-qam", "mm: elsewhere")
    base_tip = git("rev-parse", "HEAD")
    git("merge", "-q", "--no-ff", "-m", "Merge topic", "topic")  # refs/pull/N/merge
    exp_file = repo / ".github" / "korch" / "pull-request.yaml"
    exp_file.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[2] / "ci/github/examples/pull-request.yaml", exp_file)

    exp = config.load(exp_file)
    assert exp.source.location == str(repo) and exp.baseline == "base"
    cache = SourceCache(tmp_path / "cache")
    src = cache.get(exp.source)
    assert src.provenance["commit"] == base_tip and src.provenance["ref"] == "HEAD^1"
    assert src.tree_id == git("rev-parse", "HEAD^1^{tree}")
    patched = prepare(cache.store, src, exp.variant("pull-request").series)
    assert [p.subject for p in patched.patches] == ["fs: five", "fs: twenty-five"]
    assert patched.tree_id == git("rev-parse", "HEAD^{tree}")
    # a revision the repository does not have is named
    with pytest.raises(UserError, match="has no ref 'HEAD\\^3'"):
        cache.get(SourceSpec("git", str(repo), ref="HEAD^3"))
