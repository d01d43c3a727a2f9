"""Shared fixtures. `small_pipeline` runs every stage of the `small` experiment once per test
session (as a user would, through `python -m pipeline`) into a temporary data root and MLflow
store; end-to-end, contract and browser tests read what it made."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class PipelineRun:
    data_root: Path
    tracking_uri: str
    env: dict[str, str]

    @property
    def root(self) -> Path:
        return self.data_root / "small"


# fast settings so the whole small pipeline stays well under a minute on 2 cores
SMALL_OVERRIDES = ["--set", "neural.epochs=2", "--set", "lightgbm.num_boost_round=200"]


def run_stage(stage: str, run: PipelineRun, *extra: str, check: bool = True):
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        stage,
        "--experiment",
        "small",
        "--set",
        f"data.root={run.data_root}",
        *SMALL_OVERRIDES,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=run.env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    base = tmp_path_factory.mktemp("small_pipeline")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    run = PipelineRun(base / "data", uri, env)
    for stage in ("raw", "embed", "features", "train", "evaluate"):
        run_stage(stage, run)
    return run
