"""The package's shape: which module may import which.

Read from the source with ast, so the rules hold for imports inside functions too (korch
imports heavy modules lazily, and a lazy import upward is still an upward dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every orchestrator module ``path`` imports, at any depth of its code."""
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("orchestrator")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("orchestrator"):
                target = node.module
            else:
                continue
            out.add(target)
            # "from . import run": the names may be modules themselves
            out |= {f"{target}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_history_store_does_not_import_the_stages_above_it() -> None:
    graph = _graph()
    above = {"orchestrator.stages", "orchestrator.run", "orchestrator.cli"}
    above |= {m for m in graph if m.startswith("orchestrator.report")}
    assert not graph["orchestrator.history"] & above


def test_the_run_directory_layout_has_one_owner() -> None:
    # rundir knows the layout; it needs nothing but results, errors and fsutil
    graph = _graph()
    assert graph["orchestrator.rundir"] <= {
        "orchestrator.errors",
        "orchestrator.fsutil",
        "orchestrator.results",
    }
    for name in ("run", "stages", "history", "bisect", "report", "report.published"):
        assert "orchestrator.rundir" in graph[f"orchestrator.{name}"], name


def test_argparse_stays_in_the_cli() -> None:
    users = sorted(
        _module(p)
        for p in PACKAGE.rglob("*.py")
        if any(
            (isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module == "argparse")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert users == ["orchestrator.cli"]


def test_only_the_process_module_starts_processes() -> None:
    starters = sorted(
        _module(p)
        for p in PACKAGE.rglob("*.py")
        if "subprocess.Popen(" in p.read_text() or "os.fork(" in p.read_text()
    )
    assert starters == ["orchestrator.process"]


def test_the_checks_and_the_low_modules_do_not_reach_the_runner() -> None:
    graph = _graph()
    for low in ("checks", "results", "metrics", "process", "fsutil", "errors", "rundir"):
        reached = _reaches(graph, f"orchestrator.{low}")
        assert "orchestrator.run" not in reached and "orchestrator.cli" not in reached, low


def test_the_library_takes_typed_arguments_not_the_command_line() -> None:
    # cli.py turns argparse's namespace into typed requests (RunRequest, Overrides,
    # BisectRequest); below it no function takes "args" (a *args of strings is fine)
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                names += [a.arg for a in node.args.kwonlyargs]
                if "args" in names:
                    found.append(f"{_module(path)}.{node.name}")
    assert found == []


def test_the_core_knows_a_workload_only_through_its_declaration() -> None:
    # plan, runner, results, report and history reach a workload through the registry and
    # the interface (orchestrator/workloads/api.py); the exceptions are the operation
    # histograms' arithmetic (their bucket layout and thresholds) and the simulator, which
    # models the default experiment's workload on purpose
    graph = _graph()
    shared = {"api", "registry", "protocol", "fake"}
    allowed = {
        "orchestrator.stats",
        "orchestrator.stats.histograms",
        "orchestrator.stats.summary",
        "orchestrator.stats.simulate",
    }
    for name, deps in graph.items():
        if name.startswith("orchestrator.workloads") or name in allowed:
            continue
        own = {d for d in deps if d.startswith("orchestrator.workloads.")}
        assert {d.split(".")[2] for d in own} <= shared, (name, sorted(own))


def test_every_package_is_in_the_wheel() -> None:
    # pyproject.toml lists the packages by hand: one left out imports in a checkout (and an
    # editable install) but not in an installed korch
    import tomllib

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {_module(p) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
