"""Choices use train and valid only: early stopping never sees the test split, the champion is
chosen on valid metrics of out-of-fold calibrated predictions, and the settings a model derived
from the data's size are on its run."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipeline.config import MODEL_KINDS, load_experiment
from pipeline.datasets import load_spec, load_split, load_tables
from pipeline.mlflow_model import ESTIMATOR_DIR
from pipeline.registry import BASE_RATE_METRIC
from pipeline.stage import Layout
from pipeline.train import fit_model
from tests.conftest import SMALL_OVERRIDES


class _NoTest(dict):
    """The splits, with the test one out of reach."""

    def __getitem__(self, split: str):
        assert split != "test", "a model's fit read the test split"
        return super().__getitem__(split)

    def get(self, split: str, default=None):
        assert split != "test", "a model's fit read the test split"
        return super().get(split, default)


def _small(small_pipeline):
    sets = [SMALL_OVERRIDES[i + 1] for i in range(0, len(SMALL_OVERRIDES), 2)]
    exp = load_experiment("small", [f"data.root={small_pipeline.data_root}", *sets])
    return exp, Layout.of(exp)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_fitting_and_early_stopping_never_read_the_test_split(small_pipeline, kind) -> None:
    exp, layout = _small(small_pipeline)
    spec = load_spec(layout)
    frames = _NoTest({s: load_split(layout, s) for s in ("train", "valid")})
    frames["test"] = None  # present, so a read is caught rather than a KeyError
    model = fit_model(kind, exp, frames, spec, load_tables(layout, spec))
    assert model.predict_proba is not None


def test_the_champion_is_the_best_on_the_valid_metric(small_pipeline) -> None:
    exp, layout = _small(small_pipeline)
    done = json.loads(layout.evaluation_metrics.read_text())
    chosen = done["selection"]
    assert (
        chosen["metric"].startswith("valid_") and chosen["metric"] == exp.evaluate.champion_metric
    )
    mlflow.set_tracking_uri(small_pipeline.tracking_uri)
    client = mlflow.MlflowClient()
    values = {}
    for kind in exp.train.models:
        run_id = json.loads((layout.prediction_dir(kind) / "_manifest.json").read_text())["run_id"]
        metrics = client.get_run(run_id).data.metrics
        values[kind] = metrics[chosen["metric"]]
        # train logged the valid metrics of out-of-fold calibrated predictions: the same
        # numbers evaluate ranked by
        assert metrics[BASE_RATE_METRIC] == pytest.approx(metrics["valid_ctr_ne"], rel=1e-12)
    eligible = {k: v for k, v in values.items() if k not in chosen["not_eligible"]}
    assert done["champion"] == min(eligible, key=eligible.get)


def test_derived_settings_are_logged_as_params(small_pipeline) -> None:
    _, layout = _small(small_pipeline)
    mlflow.set_tracking_uri(small_pipeline.tracking_uri)
    client = mlflow.MlflowClient()
    run_id = json.loads((layout.prediction_dir("neural") / "_manifest.json").read_text())["run_id"]
    params = client.get_run(run_id).data.params
    assert params["neural.batch_size"] == "None"  # unset in the config ...
    assert int(params["derived.neural.batch_size"]) >= 64  # ... so derived, and logged
    assert "derived.neural.epochs" not in params  # set explicitly by the test: it wins
    assert params["neural.epochs"] == "2"
    saved = json.loads((layout.model_dir("neural") / ESTIMATOR_DIR / "config.json").read_text())
    assert saved["config"]["batch_size"] == int(params["derived.neural.batch_size"])
