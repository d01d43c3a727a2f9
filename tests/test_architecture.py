"""The import rule of ARCHITECTURE.md: `pipeline -> features, models`, `features/` and `models/`
never import `pipeline`, and the module graph (every import, lazy or not) has no cycle. Also: no
file of the repository cites a document that is not in it."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "features", "models")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere (top level, in functions, TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) for name, path in mods.items()}


def test_pure_packages_never_import_pipeline() -> None:
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        if mod.split(".")[0] in ("features", "models")
        for dep in deps
        if dep.split(".")[0] == "pipeline"
    ]
    assert not bad, bad


def test_features_hold_no_data_source_nor_name_the_job_code() -> None:
    """The simulator and the adapters live in pipeline/sources/; feature code neither imports
    the job code (above) nor reaches it by name (importlib, a docstring pointing at a source)."""
    mods = {m: p for m, p in modules().items() if m.split(".")[0] == "features"}
    assert len(mods) > 5  # the scan found the package
    simulator = {"marketplace", "market_events", "market", "impressions", "vocabulary"}
    assert not [m for m in mods if m.rpartition(".")[2] in simulator]
    named = [m for m, p in mods.items() if re.search(r"pipeline[./]", p.read_text("utf-8"))]
    assert named == []


def test_the_import_scan_sees_a_planted_import() -> None:
    planted = REPO / "features" / "_planted_by_test.py"
    planted.write_text("def f():\n    from pipeline.sources import raw\nfrom . import schema\n")
    try:
        found = imports(planted, set(modules()))
        assert found == {"pipeline.sources", "pipeline.sources.raw", "features", "features.schema"}
    finally:
        planted.unlink()


def test_features_and_models_are_independent() -> None:
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in graph().items()
        for dep in deps
        if {mod.split(".")[0], dep.split(".")[0]} == {"features", "models"}
    ]
    assert not bad, bad


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    g = graph()
    # a package's __init__ re-exporting its modules is not a cycle of the code
    g = {m: {d for d in deps if not m.startswith(f"{d}.")} for m, deps in g.items()}
    assert find_cycle(g) is None, " -> ".join(find_cycle(g) or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


DOC_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".txt", ""}


def repository_files() -> list[Path]:
    """The files git tracks (or would: untracked but not ignored), else every file under the
    packages and the top level."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return [REPO / name for name in out if (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        tops = [p for p in REPO.iterdir() if p.is_file()]
        return tops + [
            p for d in (*PACKAGES, "tests", "experiments") for p in (REPO / d).rglob("*")
        ]


@pytest.mark.parametrize("doc", ["DESIGN.md", "STYLE.md", "NOTES.md"])
def test_no_reference_to_documents_outside_the_repository(doc: str) -> None:
    hits = []
    for path in repository_files():
        rel = path.relative_to(REPO)
        if path.suffix not in DOC_SUFFIXES or path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(rf"\b{re.escape(doc)}\b", text) and not (REPO / doc).is_file():
            hits.append(str(rel))
    assert not hits, f"{doc} is cited but not in the repository: {hits}"
