"""`features/` is pure feature code: no data source lives there and no module of it imports the
job code (`pipeline`, where the simulator and the dataset adapters live)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import features

FEATURES = Path(features.__file__).resolve().parent
MODULES = sorted(FEATURES.glob("*.py"))
SIMULATOR = ("marketplace", "market_events", "market", "impressions", "vocabulary", "generate")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, at any depth (relative ones resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = ["features", node.module] if node.level else [node.module]
            names.add(".".join(part for part in parts if part))
    return names


def test_the_simulator_is_not_a_feature_module() -> None:
    assert len(MODULES) > 5, FEATURES  # the glob found the package
    assert not [p.name for p in MODULES if p.stem in SIMULATOR]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_feature_module_imports_the_job_code(path: Path) -> None:
    job = sorted(n for n in imported_modules(path) if n.split(".")[0] == "pipeline")
    assert job == [], f"{path.name} imports {job}"
    # nor reaches it by name (importlib, a docstring pointing at a source)
    text = path.read_text(encoding="utf-8")
    assert "pipeline." not in text and "pipeline/" not in text, path.name


def test_the_import_scan_sees_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import numpy\n"
        "def f():\n"
        "    from pipeline.sources.simulated.vocabulary import SUBTOPICS\n"
        "from . import schema\n"
    )
    assert imported_modules(planted) == {
        "numpy",
        "pipeline.sources.simulated.vocabulary",
        "features",
    }
