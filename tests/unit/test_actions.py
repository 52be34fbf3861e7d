"""The local workflow executor (tests/actions.py) that the stages test runs korch.yml with:
its expressions, conditions, step files, artifacts and caches behave as the Actions runner's
do, on small workflows whose outcome is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.actions import (
    Executor,
    WorkflowError,
    condition,
    evaluate,
    read_command_file,
    substitute,
)

REPO = Path(__file__).parents[2]

CTX = {
    "env": {"RUNDIR": "run", "EMPTY": ""},
    "matrix": {"dir": "shards/2", "shard": "2"},
    "inputs": {"shards": "", "runs": "3"},
    "needs": {"plan": {"result": "success", "outputs": {"m": '{"include": [{"a": "1"}]}'}}},
    "steps": {"s": {"outputs": {"key": "k1"}}},
    "github": {"event_name": "pull_request"},
}


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("inputs.shards || '2'", "2"),
        ("inputs.runs || '2'", "3"),
        (
            "matrix.dir == '.' && env.RUNDIR || format('{0}/{1}', env.RUNDIR, matrix.dir)",
            "run/shards/2",
        ),
        ("github.event_name == 'PULL_REQUEST'", True),  # strings compare ignoring case
        ("github.event_name != 'schedule'", True),
        ("steps.s.outputs.key != steps.t.outputs.key", True),
        ("!env.EMPTY", True),
        ("fromJSON(needs.plan.outputs.m).include[0].a", "1"),
        ("fromJSON('3') == 3", True),
        ("contains('korch-build-x', 'BUILD')", True),
        ("needs.plan.result == 'success' && 'yes'", "yes"),
    ],
)
def test_expressions(expr: str, value: object) -> None:
    assert evaluate(expr, CTX) == value


def test_expression_errors_name_the_expression() -> None:
    with pytest.raises(WorkflowError, match="unknown context 'secrets'"):
        evaluate("secrets.TOKEN", CTX)
    with pytest.raises(WorkflowError, match="hashFiles"):
        evaluate("hashFiles('x')", CTX)
    with pytest.raises(WorkflowError, match="only valid in an if"):
        evaluate("success()", CTX)


def test_substitute_keeps_a_whole_expression_s_type() -> None:
    assert substitute("${{ fromJSON(needs.plan.outputs.m) }}", CTX) == {"include": [{"a": "1"}]}
    assert substitute("x-${{ matrix.shard }}-${{ inputs.shards }}", CTX) == "x-2-"
    assert substitute({"a": ["${{ env.RUNDIR }}/"]}, CTX) == {"a": ["run/"]}


def test_conditions_add_success_unless_a_status_is_asked() -> None:
    ok = {"success": True, "failure": False, "cancelled": False, "always": True}
    failed = {**ok, "success": False, "failure": True}
    assert condition(None, CTX, ok.__getitem__)
    assert not condition(None, CTX, failed.__getitem__)
    # a plain condition runs only after success
    assert not condition("github.event_name == 'pull_request'", CTX, failed.__getitem__)
    # !cancelled() runs after a failure as well
    assert condition("${{ !cancelled() && env.RUNDIR == 'run' }}", CTX, failed.__getitem__)
    assert condition("always()", CTX, failed.__getitem__)


def test_command_files(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("a=1\nb=x=y\n\ntext<<EOF\nline 1\nline 2\nEOF\n")
    assert read_command_file(f) == {"a": "1", "b": "x=y", "text": "line 1\nline 2"}
    f.write_text("text<<EOF\nunclosed\n")
    with pytest.raises(WorkflowError, match="no closing 'EOF'"):
        read_command_file(f)


WORKFLOW = """
name: t
on:
  workflow_dispatch:
    inputs:
      n: {default: "2"}
env:
  OUT: out
jobs:
  first:
    runs-on: ubuntu-latest
    outputs:
      list: ${{ steps.m.outputs.list }}
    steps:
      - id: m
        run: |
          mkdir -p "$OUT/sub" "$OUT/skip"
          echo one > "$OUT/a.txt"; echo two > "$OUT/sub/b.txt"; echo no > "$OUT/skip/c.txt"
          echo 'list={"include": [{"i": "1"}, {"i": "2"}]}' >> "$GITHUB_OUTPUT"
          echo "FROM_ENV=set" >> "$GITHUB_ENV"
      - run: test "$FROM_ENV" = set
      - uses: actions/upload-artifact@v4
        with:
          name: art
          path: |
            ${{ env.OUT }}/
            !${{ env.OUT }}/skip/
  second:
    needs: first
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.first.outputs.list) }}
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: art
          path: got
      - name: Check ${{ matrix.i }}
        run: |
          test -f got/a.txt && test -f got/sub/b.txt && test ! -e got/skip
          echo "shard ${{ matrix.i }}" >> "$GITHUB_STEP_SUMMARY"
          test "${{ matrix.i }}" != 2
      - name: Only after a failure
        if: failure()
        run: echo recovered
      - uses: actions/upload-artifact@v4
        if: ${{ !cancelled() }}
        with:
          name: part-${{ matrix.i }}
          path: got/a.txt
  last:
    needs: [first, second]
    if: ${{ !cancelled() && needs.first.result == 'success' }}
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          pattern: part-*
          path: parts
      - name: Exit code of the matrix
        env:
          RESULT: ${{ needs.second.result }}
        run: |
          ls parts > listing
          test "$RESULT" = failure
          exit 3
  never:
    needs: second
    runs-on: ubuntu-latest
    steps:
      - run: echo never
"""


def test_a_workflow_runs_job_by_job(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(WORKFLOW)
    run = Executor(wf, REPO, tmp_path / "root").run()
    assert run.result("first") == "success", run.describe()
    # the matrix from the first job's output: entry 2 fails its step, entry 1 does not
    one, two = run.jobs["second"]
    assert (one.matrix, one.result, two.matrix, two.result) == (
        {"i": "1"}, "success", {"i": "2"}, "failure",
    )  # fmt: skip
    assert two.step("Check 2").code == 1 and "shard 2" in two.summary
    assert two.step("Only after a failure").outcome == "success"
    assert one.step("Only after a failure").outcome == "skipped"
    # !cancelled() uploads the failed job's files as well; pattern without merge-multiple
    # puts each artifact in a directory of its name
    (last,) = run.jobs["last"]
    assert (last.workspace / "listing").read_text().split() == ["part-1", "part-2"]
    assert (last.workspace / "parts" / "part-2" / "a.txt").read_text() == "one\n"
    assert last.steps[-1].code == 3 and last.result == "failure"
    # a job after a failed one does not run
    assert run.jobs["never"] == [] and run.result("never") == "skipped"


def test_artifact_root_and_errors(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: {workflow_dispatch: {}}\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        "      - run: mkdir -p run/shards/1/results run/build && touch run/shards/1/results/r.json"
        " run/build/k\n"
        "      - uses: actions/upload-artifact@v4\n        with:\n          name: x\n"
        "          path: |\n            run/shards/1/\n            !run/build/\n"
        "      - uses: actions/upload-artifact@v4\n        with:\n          name: none\n"
        "          path: nothing/\n          if-no-files-found: error\n"
    )
    ex = Executor(wf, REPO, tmp_path / "root")
    run = ex.run()
    # the least common ancestor of the paths is the artifact's root
    assert [p.name for p in (ex.artifacts / "x").iterdir()] == ["results"]
    (job,) = run.jobs["a"]
    assert job.steps[-1].outcome == "failure" and "no files found" in job.steps[-1].log


def test_cache_restore_by_prefix(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: {workflow_dispatch: {}}\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        "      - id: r\n        uses: actions/cache/restore@v4\n        with:\n"
        "          path: c/d\n          key: k-${{ github.run_id }}\n          restore-keys: k-\n"
        "      - run: |\n          test -f c/d/f\n"
        "          echo 'hit=${{ steps.r.outputs.cache-hit }} ${{ steps.r.outputs.cache-matched-key }}'"
        " > seen\n"
    )
    store = tmp_path / "warm"
    store.mkdir()
    (store / "f").write_text("x")
    ex = Executor(wf, REPO, tmp_path / "root")
    ex.seed_cache("k-warm", {"c/d": store})
    (job,) = ex.run().jobs["a"]
    assert job.result == "success", job.steps[-1].log
    assert (job.workspace / "seen").read_text().strip() == "hit=false k-warm"


def test_setup_and_skip_must_name_steps(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text("on: {workflow_dispatch: {}}\njobs:\n  a:\n    runs-on: x\n    steps:\n"
                  "      - name: Real\n        run: exit 0\n")  # fmt: skip
    with pytest.raises(WorkflowError, match="no step named \\['Renamed'\\]"):
        Executor(wf, REPO, tmp_path / "root", skip={"Renamed": "why"})
    with pytest.raises(WorkflowError, match="declares no input"):
        Executor(wf, REPO, tmp_path / "root2", inputs={"x": "1"})


def test_korch_workflow_parses_for_the_executor(tmp_path: Path) -> None:
    # every action korch.yml uses is one the executor models, and its steps are named as
    # the stages test expects
    ex = Executor(
        REPO / "ci" / "github" / "korch.yml", REPO, tmp_path / "root",
        setup={"Install korch": "true"}, skip={"Enable KVM": "no KVM"},
    )  # fmt: skip
    actions = {
        s["uses"].split("@")[0] for j in ex.doc["jobs"].values() for s in j["steps"] if "uses" in s
    }
    assert actions <= {
        "actions/checkout", "actions/upload-artifact", "actions/download-artifact",
        "actions/cache/restore", "actions/cache/save",
    }  # fmt: skip
    # the dispatch the stages test runs takes the inputs, and defaults, a calling workflow has
    called = ex.triggers["workflow_call"]["inputs"]
    assert ex.inputs == {k: v["default"] for k, v in called.items()}


def test_a_step_past_the_job_timeout_is_stopped_whole(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: {workflow_dispatch: {}}\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: 0.02\n"
        "    steps:\n      - run: |\n          sleep 300 &\n          echo $! > child\n"
        "          sleep 300\n"
    )
    (job,) = Executor(wf, REPO, tmp_path / "root").run().jobs["a"]
    assert job.result == "failure" and job.steps[0].code == 124
    assert "timeout-minutes ran out" in job.steps[0].log
    child = int((job.workspace / "child").read_text())
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
