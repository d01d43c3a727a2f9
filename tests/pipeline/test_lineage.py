"""Lineage: a stage refuses inputs built from another version of their own upstream (one
`error:` line naming both versions and the command to rerun), and `train` publishes a model
with its predictions as one unit (a pair from two runs is refused)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from fault_cases import BASE_TOML, LOG, base_log, csv, toml_text
from harness import stage_env

from pipeline.io import (
    MANIFEST,
    DataError,
    input_digest,
    read_manifest,
    write_file_manifest,
    write_tables,
)
from pipeline.lineage import check_lineage, check_same_run

NAME = "lineage"
REL = Path("data") / NAME  # how the stages name their paths (relative to the working dir)

# ---------------------------------------------------------------- unit


def _out(path: Path, inputs: dict[str, Path] | None = None, **extra: str) -> Path:
    write_tables(
        path, {"t": pl.DataFrame({"x": [1]})}, config_digest="c", inputs=inputs, extra=extra
    )
    return path


def test_check_lineage_accepts_the_current_input_and_names_both_versions_of_a_stale_one(
    tmp_path: Path,
) -> None:
    up = _out(tmp_path / "features")
    down = _out(tmp_path / "predictions", {"features": up})
    check_lineage(down, {"features": up}, "make train")
    old = read_manifest(down)["inputs"]["features"]
    _out(up, note="again")  # the same table, rewritten: a new version
    new = input_digest(up)
    assert new != old
    with pytest.raises(DataError) as info:
        check_lineage(down, {"features": up}, "make train")
    assert str(info.value) == (
        f"{down} was built from features {old[:8]}, but {up} is now {new[:8]}: run `make train`"
    )


def test_check_lineage_refuses_a_missing_input_and_warns_on_an_unrecorded_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    up = _out(tmp_path / "raw")
    down = _out(tmp_path / "features", {"raw": up})
    shutil.rmtree(up)
    with pytest.raises(DataError, match=r"is now missing: run `make features`"):
        check_lineage(down, {"raw": up}, "make features")
    older = _out(tmp_path / "older")  # an output of a version that recorded no inputs
    check_lineage(older, {"raw": up}, "make features")
    assert "records no digest of its raw input" in caplog.text


def test_check_same_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "models" / "neural"
    model.mkdir(parents=True)
    write_file_manifest(model, config_digest="c", extra={"run_id": "aaa"})
    pred = _out(tmp_path / "predictions" / "neural", run_id="aaa")
    check_same_run(model, pred, "make train")
    _out(pred, run_id="bbb")
    with pytest.raises(DataError) as info:
        check_same_run(model, pred, "make train")
    assert str(info.value) == f"{model} is from run aaa, {pred} from run bbb: run `make train`"
    _out(pred)  # no run id recorded: accepted, with a warning
    check_same_run(model, pred, "make train")
    assert "records no run id" in caplog.text


# ---------------------------------------------------------------- stages, as a user runs them


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@dataclass(frozen=True)
class Work:
    """A working directory with the experiment TOML, the log, `data/` and an MLflow store."""

    path: Path

    @property
    def data(self) -> Path:
        return self.path / "data" / NAME

    def run(self, stage: str, *sets: str) -> Run:
        env = stage_env(self.path / "mlflow.db")
        args = [arg for s in sets for arg in ("--set", s)]
        cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", NAME, *args]
        proc = subprocess.run(
            cmd, cwd=self.path, env=env, capture_output=True, text=True, timeout=600
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return Run(proc.returncode, proc.stderr)

    def ok(self, *stages: str) -> None:
        for stage in stages:
            done = self.run(stage)
            assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"


def refused(done: Run, *needles: str) -> str:
    """The one `error:` line of a stage that exited 2; it contains every needle."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.errors) == 1, done.errors
    line = done.errors[0]
    assert all(n in line for n in needles), line
    return line


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Work:
    """raw, features, train and evaluate on the generic log (LightGBM only, no text)."""
    work = Work(tmp_path_factory.mktemp("lineage"))
    (work.path / "experiments").mkdir()
    (work.path / "experiments" / f"{NAME}.toml").write_text(toml_text(BASE_TOML))
    (work.path / LOG).write_bytes(csv(base_log()))
    work.ok("raw", "features", "train", "evaluate")
    return work


@pytest.fixture
def work(built: Work, tmp_path: Path) -> Work:
    """A copy of `built` for one test to change."""
    shutil.copytree(built.path, tmp_path / "w", symlinks=True)
    return Work(tmp_path / "w")


@pytest.mark.slow
def test_outputs_of_older_features_are_refused_until_their_stage_reruns(work: Work) -> None:
    evaluation = (work.data / "evaluation" / MANIFEST).read_bytes()
    old = read_manifest(work.data / "features")
    assert work.run("features", "features.windows_days=[1,7]").returncode == 0
    new = read_manifest(work.data / "features")
    pred = work.data / "models" / "lightgbm" / "predictions"
    line = refused(
        work.run("evaluate"), f"{REL}/models/lightgbm/predictions was built", "make train"
    )
    recorded = read_manifest(pred)["inputs"]["features"]
    assert recorded[:8] in line and recorded != new["inputs"].get("features")
    assert old != new
    assert (work.data / "evaluation" / MANIFEST).read_bytes() == evaluation  # nothing written
    refused(work.run("export"), "make train")
    assert not (work.data / "exports").exists()
    work.ok("train")
    refused(work.run("export"), f"{REL}/evaluation was built", "make evaluate")
    work.ok("evaluate", "export")


@pytest.mark.slow
def test_features_of_another_raw_are_refused_by_train(work: Work) -> None:
    work.ok("raw")  # a new raw/ (same log, a new manifest) without new features
    refused(work.run("train"), f"{REL}/features was built from raw", "make features")
    work.ok("features", "train", "evaluate")
