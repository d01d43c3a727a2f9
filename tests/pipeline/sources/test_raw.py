"""The `raw` stage runs the source that `data.source` names; `generate` and `ingest` stay stage
names of their own and refuse the other kind of source with a one-line error (exit 2)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from pipeline.__main__ import HELP, STAGES, main
from pipeline.config import ConfigError, Experiment, load_experiment
from pipeline.io import MANIFEST, file_digest, read_manifest
from pipeline.sources import raw
from pipeline.sources.simulated import generate
from pipeline.stage import Layout

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"
TINY = ("market.n_impressions=1500", "market.n_users=200", "market.n_ads=80")


def small(root: Path, *overrides: str) -> Experiment:
    return load_experiment("small", [f"data.root={root}", *overrides], directory=EXPERIMENTS)


def criteo_folder(tmp_path: Path) -> Path:
    """A Criteo dataset of 5 rows in its own train / dev / test files."""
    folder = tmp_path / "criteo"
    folder.mkdir()
    row = "\t".join(["1", *["3"] * 13, *[f"{k:08x}" for k in range(26)]])
    for name, rows in (("train", 3), ("dev", 1), ("test", 1)):
        (folder / f"{name}.tsv").write_text((row + "\n") * rows)
    return folder


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_raw_runs_the_simulator_for_the_simulated_source(tmp_path: Path) -> None:
    exp = small(tmp_path / "a", *TINY)
    summary = raw.run(exp)
    assert summary.stage == "generate" and summary.rows_out == 1500
    layout = Layout.of(exp)
    assert read_manifest(layout.raw)["source"] == "simulated"
    assert (layout.oracle / MANIFEST).is_file()
    # the very tables the generate stage writes
    direct = small(tmp_path / "b", *TINY)
    generate.run(direct)
    for sub in ("raw", "oracle"):
        ours, theirs = layout.root / sub, Layout.of(direct).root / sub
        names = sorted(p.name for p in ours.glob("*.parquet"))
        assert names == sorted(p.name for p in theirs.glob("*.parquet")) and names
        assert all(file_digest(ours / n) == file_digest(theirs / n) for n in names), sub


def test_raw_runs_the_adapter_for_a_dataset(tmp_path: Path) -> None:
    exp = small(tmp_path / "data", "data.source=criteo", f"data.path={criteo_folder(tmp_path)}")
    summary = raw.run(exp)
    assert summary.stage == "ingest" and summary.rows_out == 5
    layout = Layout.of(exp)
    assert read_manifest(layout.raw)["source"] == "criteo"
    assert not layout.oracle.exists()  # only the simulator knows the truth


def test_raw_names_every_source_for_an_unknown_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("data.source = 'criteoo'")) as info:
        raw.run(small(tmp_path, "data.source=criteoo"))
    assert "simulated, criteo" in str(info.value) and "generic" in str(info.value)
    assert not any(tmp_path.iterdir())


def test_cli_raw_on_a_dataset_prints_the_ingest_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    sets = [f"data.root={root}", "data.source=criteo", f"data.path={criteo_folder(tmp_path)}"]
    code = main(["raw", "--experiment", "small", *(a for s in sets for a in ("--set", s))])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("[ingest]") and str(root / "small" / "raw") in out
    assert (root / "small" / "raw" / MANIFEST).is_file()


@pytest.mark.parametrize(
    ("stage", "source", "needles"),
    [
        ("generate", "criteo", ["`generate`", "data.source = 'criteo'", "`raw`"]),
        ("ingest", "simulated", ["data.source = 'simulated'", "`raw`"]),
    ],
)
def test_a_stage_for_the_other_kind_of_source_is_a_one_line_error(
    stage: str, source: str, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    sets = [f"data.root={root}", f"data.source={source}", f"data.path={criteo_folder(tmp_path)}"]
    code = main([stage, "--experiment", "small", *(a for s in sets for a in ("--set", s))])
    assert code == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and all(n in errors[0] for n in needles), errors
    # refused before anything was written (the stage's lock folder aside)
    written = [p for p in root.rglob("*") if ".locks" not in p.parts] if root.exists() else []
    assert [p for p in written if p.is_file()] == []


def test_each_source_stage_names_a_module_with_run() -> None:
    for name in ("raw", "generate", "ingest"):
        assert name in HELP
        module = importlib.import_module(STAGES[name])
        assert module.__name__.startswith("pipeline.sources.") and callable(module.run)


def test_the_config_knows_every_adapter_by_name() -> None:
    from pipeline.sources import ADAPTER_NAMES, KNOWN_SOURCES, SIMULATED
    from pipeline.sources.ingest import ADAPTERS

    assert tuple(ADAPTERS) == ADAPTER_NAMES
    assert {SIMULATED, *ADAPTERS} <= set(KNOWN_SOURCES)
