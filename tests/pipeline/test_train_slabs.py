"""The train stage past `train.max_in_memory_rows`: the neural model streams the splits slab by
slab, LightGBM and logreg fit on every click and a share of the non-clicks, their predictions
are recalibrated, and the rate and the correction are on their MLflow runs."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import polars as pl
import pytest

from models.sampling import CORRECTION
from tests.conftest import PipelineRun, run_stage


@pytest.fixture(scope="module")
def capped(small_pipeline, tmp_path_factory) -> tuple[PipelineRun, str]:
    base = tmp_path_factory.mktemp("capped")
    for folder in ("raw", "features"):
        shutil.copytree(small_pipeline.root / folder, base / "data" / "small" / folder)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    run = PipelineRun(base / "data", uri, {**small_pipeline.env, "MLFLOW_TRACKING_URI": uri})
    sets = ["--set", "train.max_in_memory_rows=4000", "--set", "train.slab_rows=2048"]
    return run, run_stage("train", run, *sets).stderr


def _run(run: PipelineRun, kind: str):
    manifest = run.root / "models" / kind / "predictions" / "_manifest.json"
    mlflow.set_tracking_uri(run.tracking_uri)
    return mlflow.MlflowClient().get_run(json.loads(manifest.read_text())["run_id"])


def _test_predictions(run: PipelineRun, kind: str) -> pl.DataFrame:
    path = run.root / "models" / kind / "predictions" / "predictions.parquet"
    return pl.read_parquet(path).filter(pl.col("split") == "test")


def test_the_neural_model_streams_the_splits_in_slabs(capped) -> None:
    run, log = capped
    assert "training neural on" in log and " slabs (" in log
    assert "negative_rate" not in _run(run, "neural").data.params


@pytest.mark.parametrize("kind", ["lightgbm", "logreg"])
def test_in_memory_models_fit_on_sampled_negatives_and_undo_it(
    small_pipeline, capped, kind
) -> None:
    run, log = capped
    params, tags = _run(run, kind).data.params, _run(run, kind).data.tags
    rate = float(params["negative_rate"])
    assert 0.0 < rate < 0.5 and float(params[f"derived.{kind}.negative_rate"]) == rate
    assert tags["negative_correction"] == CORRECTION
    assert f"{kind}: fitted on every click and {rate:.4f} of the non-clicks" in log
    # the raw (uncalibrated) predictions sit where the model fitted on every row puts them:
    # the correction, not the calibrator, undid the sampling (uncorrected, a sample's odds are
    # 1 / rate times the full data's)
    ratio = (
        _test_predictions(run, kind)["pctr_raw"].mean()
        / _test_predictions(small_pipeline, kind)["pctr_raw"].mean()
    )
    assert 0.7 < ratio < 1.4, ratio


def test_capped_models_rank_about_as_well_as_uncapped(small_pipeline, capped) -> None:
    run, _ = capped
    for kind in ("lightgbm", "neural"):
        capped_auc = _run(run, kind).data.metrics["test_ctr_auc"]
        full_auc = _run(small_pipeline, kind).data.metrics["test_ctr_auc"]
        assert np.isfinite(capped_auc) and abs(capped_auc - full_auc) < 0.04, kind
