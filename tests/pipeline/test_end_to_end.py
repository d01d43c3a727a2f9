"""End to end on the `small` experiment (the session fixture `small_pipeline` ran every stage as
a user would): manifests everywhere, no leakage of the simulator's hidden state into features,
and the MLflow store a user opens afterwards (tagged runs, metrics, champion alias)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from pipeline import featurize
from pipeline.config import load_experiment
from pipeline.datasets import with_interest
from pipeline.io import MANIFEST, input_digest, read_manifest, read_table
from pipeline.sources.simulated.vocabulary import SUBTOPICS

pytestmark = pytest.mark.slow

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
MODELS = ("lightgbm", "neural", "logreg")
SPLITS = ("train", "valid", "test")
REQUIRED_METRICS = (
    "test_ctr_auc",
    "test_ctr_logloss",
    "test_ctr_ne",
    "test_ctr_calibration",
    "test_cvr_auc",
    "test_ctcvr_auc",
    "oracle_ctr_auc",
    "oracle_ctr_logloss",
)
HIDDEN_NAMES = ("p_click", "p_conversion", "subtopic", "taste", "oracle")


@pytest.fixture(scope="module")
def client(small_pipeline) -> MlflowClient:
    mlflow.set_tracking_uri(small_pipeline.tracking_uri)
    return MlflowClient(tracking_uri=small_pipeline.tracking_uri)


@pytest.fixture(scope="module")
def experiment_id(client: MlflowClient) -> str:
    found = client.get_experiment_by_name("small")
    assert found is not None, "no MLflow experiment 'small'"
    return found.experiment_id


def runs(client: MlflowClient, experiment_id: str, query: str) -> list:
    return client.search_runs([experiment_id], filter_string=query, order_by=["start_time DESC"])


def features(small_pipeline) -> dict[str, pl.DataFrame]:
    root = small_pipeline.root / "features"
    return {s: read_table(root, s).collect() for s in SPLITS}


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sub",
    [
        "raw",
        "oracle",
        "embeddings",
        "features",
        "models/lightgbm/predictions",
        "models/neural/predictions",
        "models/logreg/predictions",
    ],
)
def test_stage_output_has_a_manifest(small_pipeline, sub: str) -> None:
    folder = small_pipeline.root / sub
    manifest = read_manifest(folder)
    assert manifest["config_hash"] and manifest["code_version"] and manifest["created_at"]
    for name, meta in manifest["tables"].items():
        frame = pl.read_parquet(folder / f"{name}.parquet")
        assert frame.height == meta["rows"], (sub, name)
        assert {c: str(t) for c, t in frame.schema.items()} == meta["schema"], (sub, name)


def test_every_parquet_folder_is_a_published_output(small_pipeline) -> None:
    """No Parquet file outside a folder with a manifest, and no crashed-write leftovers."""
    for path in small_pipeline.root.rglob("*.parquet"):
        folder = path.parent
        assert (folder / MANIFEST).is_file(), path
        manifest = read_manifest(folder)  # a stage's tables, or an export version's table
        assert path.stem in manifest.get("tables", {}) or manifest.get("table") == path.name, path
    stray = [p for p in small_pipeline.root.rglob(".*") if p.name.startswith((".tmp-", ".old-"))]
    assert stray == []


@pytest.mark.parametrize("sub", ["models/lightgbm", "models/neural", "models/logreg", "evaluation"])
def test_model_and_evaluation_outputs_have_a_manifest(small_pipeline, sub: str) -> None:
    assert (small_pipeline.root / sub / MANIFEST).is_file()


def test_feature_manifest_does_not_take_the_oracle_as_input(small_pipeline) -> None:
    manifest = read_manifest(small_pipeline.root / "features")
    assert manifest["inputs"], "features manifest records no inputs"
    assert not any("oracle" in k for k in manifest["inputs"])
    raw_digest = manifest["inputs"].get("raw")
    assert raw_digest is not None
    oracle_digest = (small_pipeline.root / "oracle" / MANIFEST).read_bytes()
    assert raw_digest not in oracle_digest.decode()


# --- no leakage of the hidden state into features ------------------------------------------


def test_feature_columns_do_not_name_the_hidden_state(small_pipeline) -> None:
    spec = json.loads((small_pipeline.root / "features" / "feature_spec.json").read_text())
    for split, frame in features(small_pipeline).items():
        for column in frame.columns:
            assert not any(h in column.lower() for h in HIDDEN_NAMES), (split, column)
    for entry in spec["features"]:
        assert not any(h in entry["source"].lower() for h in HIDDEN_NAMES), entry
    # logged money columns ride along for bidding, but no model reads them as features
    sources = {entry["source"] for entry in spec["features"]}
    assert not sources & {"market_price", "cost", "click", "conversion"}


def test_feature_values_are_not_the_hidden_state(small_pipeline) -> None:
    keys = sorted(s.key for s in SUBTOPICS)
    oracle = read_table(small_pipeline.root / "oracle", "impressions").collect()
    for split, frame in features(small_pipeline).items():
        joined = frame.join(oracle, on="impression_id", how="left")
        assert joined["p_click"].is_not_null().all()
        truth = {"p_click": joined["p_click"].to_numpy(), "p_conv": joined["p_conversion"]}
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                assert frame[column].drop_nulls().str.contains_any(keys).sum() == 0, column
            elif dtype.is_numeric() and column != "impression_id":
                values = frame[column].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
                if values.std() == 0:
                    continue
                for name, target in truth.items():
                    r = np.corrcoef(values, np.asarray(target))[0, 1]
                    assert abs(r) < 0.95, (split, column, name, r)


def test_features_are_the_same_without_the_oracle(small_pipeline, tmp_path: Path) -> None:
    """Rebuild the features where oracle/ does not exist: the tables must not change."""
    data = tmp_path / "data"
    for sub in ("raw", "embeddings"):
        if (small_pipeline.root / sub).is_dir():
            shutil.copytree(small_pipeline.root / sub, data / "small" / sub)
    cache = small_pipeline.data_root / "_cache"
    if cache.is_dir():
        shutil.copytree(cache, data / "_cache")
    exp = load_experiment("small", [f"data.root={data}"], directory=EXPERIMENTS)
    featurize.run(exp)
    assert not (data / "small" / "oracle").exists()
    for split, frame in features(small_pipeline).items():
        rebuilt = read_table(data / "small" / "features", split).collect()
        assert rebuilt.equals(frame), split


# --- MLflow --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODELS)
def test_model_run_carries_the_metrics(client, experiment_id, kind: str) -> None:
    found = runs(client, experiment_id, f"tags.model = '{kind}' AND tags.stage = 'train'")
    assert found, f"no train run tagged model={kind}"
    run = found[0]
    assert run.data.tags["experiment"] == "small"
    metrics = run.data.metrics
    missing = [m for m in REQUIRED_METRICS if m not in metrics]
    assert not missing, f"{kind} run lacks {missing}"
    assert 0.5 < metrics["test_ctr_auc"] <= 1.0
    # a few dozen test conversions on `small`: CVR AUCs are defined but noisy
    assert 0.0 <= metrics["test_cvr_auc"] <= 1.0
    assert 0.5 < metrics["test_ctcvr_auc"] <= 1.0
    assert 0 < metrics["test_ctr_logloss"] < 0.693
    assert 0 < metrics["test_ctr_ne"] < 1.1
    assert 0.3 < metrics["test_ctr_calibration"] < 3.0
    assert 0.70 <= metrics["oracle_ctr_auc"] <= 0.85
    # a model far better than the simulator's true probabilities would be a leak
    assert metrics["test_ctr_auc"] < metrics["oracle_ctr_auc"] + 0.03
    assert metrics["test_ctr_logloss"] > metrics["oracle_ctr_logloss"] - 0.005


@pytest.mark.parametrize("kind", MODELS)
def test_model_run_logs_the_config(client, experiment_id, kind: str) -> None:
    run = runs(client, experiment_id, f"tags.model = '{kind}' AND tags.stage = 'train'")[0]
    params = run.data.params
    assert params["market.n_impressions"] == "20000"
    assert params["neural.epochs"] == "2"  # the fixture's --set override is what was logged
    assert params["data.seed"] == "7"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "config")]
    assert "config/small.toml" in artifacts


def test_comparison_run_names_a_champion(client, experiment_id, small_pipeline) -> None:
    found = runs(client, experiment_id, "tags.stage = 'evaluate'")
    assert found, "no evaluate run"
    run = found[0]
    champion = run.data.tags.get("champion")
    assert champion in MODELS
    assert run.data.tags["experiment"] == "small"
    assert run.data.tags["champion_model_uri"] == f"models:/adctr-small-{champion}@champion"
    for kind in MODELS:
        assert f"{kind}_test_ctr_auc" in run.data.metrics
    assert "oracle_test_ctr_auc" in run.data.metrics
    on_disk = json.loads((small_pipeline.root / "evaluation" / "metrics.json").read_text())
    assert on_disk["champion"] == champion
    assert on_disk["run_id"] == run.info.run_id


def _test_rows(root: Path, rows: int) -> pl.DataFrame:
    """The first test rows as a model is served them: the interest vectors, not their codes."""
    features = root / "features"
    return with_interest(read_table(features, "test").collect().head(rows), features)


def test_champion_alias_resolves_and_predicts(client, experiment_id, small_pipeline) -> None:
    champion = runs(client, experiment_id, "tags.stage = 'evaluate'")[0].data.tags["champion"]
    name = f"adctr-small-{champion}"
    version = client.get_model_version_by_alias(name, "champion")
    train_run = runs(client, experiment_id, f"tags.model = '{champion}' AND tags.stage = 'train'")
    assert version.run_id == train_run[0].info.run_id
    for other in set(MODELS) - {champion}:
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_model_version_by_alias(f"adctr-small-{other}", "champion")

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    test = _test_rows(small_pipeline.root, 50)
    out = model.predict(test.to_pandas())
    assert list(out.columns) == ["pctr", "pcvr", "pctcvr"]
    assert len(out) == 50
    values = out.to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    assert np.allclose(out["pctcvr"], out["pctr"] * out["pcvr"])
    # the registered model reproduces the train stage's calibrated test predictions
    stored = (
        read_table(small_pipeline.root / "models" / champion / "predictions", "predictions")
        .filter(pl.col("split") == "test")
        .collect()
    )
    expected = test.select("impression_id").join(stored, on="impression_id", how="left")
    assert np.allclose(out["pctr"].to_numpy(), expected["pctr"].to_numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", MODELS)
def test_each_registered_model_loads_and_predicts(client, small_pipeline, kind: str) -> None:
    model = mlflow.pyfunc.load_model(f"models:/adctr-small-{kind}/1")
    test = _test_rows(small_pipeline.root, 20)
    out = model.predict(test.to_pandas())
    assert list(out.columns) == ["pctr", "pcvr", "pctcvr"]
    assert ((out["pctr"] > 0) & (out["pctr"] < 1)).all()
    # through pandas (the history codes as list cells) the same predictions as the train stage
    stored = read_table(small_pipeline.root / "models" / kind / "predictions", "predictions")
    expected = test.select("impression_id").join(stored.collect(), on="impression_id")
    np.testing.assert_allclose(out["pctr"].to_numpy(), expected["pctr"].to_numpy(), atol=1e-5)


def test_neural_attends_over_the_history_items(small_pipeline) -> None:
    spec = json.loads((small_pipeline.root / "features" / "feature_spec.json").read_text())
    items = {f["name"]: f for f in spec["features"] if f["kind"] == "item"}
    assert set(items) == {"s_ad_item", "s_history"} and items["s_history"]["dim"] == 10
    table = read_table(small_pipeline.root / "features", "item_vectors").collect()
    assert table.height + 1 == items["s_history"]["cardinality"]
    config = small_pipeline.root / "models" / "neural" / "model" / "config.json"
    meta = json.loads(config.read_text())
    assert meta["item_names"] == ["s_ad_item", "s_history"]
    assert meta["item_table_shape"][0] == table.height + 1


def _logged_table(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> list[dict]:
    """The rows of a table logged with `mlflow.log_table` (its JSON: columns and data)."""
    local = client.download_artifacts(run_id, path, str(tmp_path))
    table = json.loads(Path(local).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def test_the_comparison_run_reads_on_its_first_page(
    client, experiment_id, small_pipeline, tmp_path
) -> None:
    """At most 60 metric keys (the headline ones of every model), the ★ table as its
    description, and nothing lost: every metric evaluate computed is in the logged table."""
    run = runs(client, experiment_id, "tags.stage = 'evaluate'")[0]
    assert len(run.data.metrics) <= 60, sorted(run.data.metrics)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("| metric |") and "★" in note and "test_ctr_auc" in note
    rows = _logged_table(client, run.info.run_id, "tables/test_metrics.json", tmp_path)
    logged = {(r["model"], r["metric"]): r["value"] for r in rows}
    on_disk = json.loads((small_pipeline.root / "evaluation" / "metrics.json").read_text())
    for model, metrics in on_disk["metrics"].items():
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):  # an undefined metric: not logged
                assert logged[(model, key)] == pytest.approx(value), (model, key)
    assert any(k.startswith("test_placement_") for _, k in logged)
    kind = client.get_experiment(experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"  # the UI shows model training, not GenAI


@pytest.mark.parametrize("kind", MODELS)
def test_a_model_run_has_a_description_its_slices_and_its_dataset(
    client, experiment_id, small_pipeline, tmp_path, kind: str
) -> None:
    run = runs(client, experiment_id, f"tags.model = '{kind}' AND tags.stage = 'train'")[0]
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**{kind}**") and "Rank " in note and "gap to oracle" in note
    assert {"test_ctr_auc", "test_cold_ctr_auc", "oracle_ctr_auc"} <= set(run.data.metrics)
    assert not any(k.startswith("test_placement_") for k in run.data.metrics)  # in the table
    rows = _logged_table(client, run.info.run_id, "tables/test_metrics.json", tmp_path)
    assert any(r["metric"].startswith("test_placement_") for r in rows)
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.name == "small-features"
    assert dataset.digest == input_digest(small_pipeline.root / "features")[:12]


def test_the_report_is_one_page_with_its_plots(small_pipeline) -> None:
    page = (small_pipeline.root / "evaluation" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 6
    assert "<table>" in page and "oracle" in page and "test_cvr_auc" in page
    assert "http://" not in page and "https://" not in page
