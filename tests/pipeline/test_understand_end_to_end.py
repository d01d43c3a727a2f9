"""`small` (sized down) through raw -> understand (the tiny random BERT, a few steps) -> embed
-> features, as a user runs it: every distinct query of the log labelled, the metrics and the
MLflow run, an empty quarantine on clean data, the query features and their ablation switch,
the same labels for the same seed, and `--if-needed` finding the labels up to date."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.text import text_key
from pipeline.__main__ import main
from pipeline.io import read_table
from pipeline.stage import Layout

pytestmark = pytest.mark.slow

SIZE = {
    "market.n_impressions": 4000,
    "market.n_users": 400,
    "market.n_ads": 150,
    "market.n_advertisers": 40,
    "market.n_annotations": 300,
}
TAGGER = {"understand.max_steps": 20, "understand.eval_every": 10, "understand.dtype": "float32"}
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Built:
    root: Path  # data.root
    store: str  # the MLflow tracking URI
    sets: list[str]
    first: pl.DataFrame  # queries.parquet of the first understand run
    second: pl.DataFrame  # ... of the second, same settings and seed
    features: dict[str, pl.DataFrame]  # split -> table, with the query features
    spec: dict
    ablated: dict[str, pl.DataFrame]  # the same with features.query_understanding=false
    ablated_spec: dict

    @property
    def layout(self) -> Layout:
        return Layout(self.root / "small")


def cli(stage: str, sets: list[str], *flags: str) -> int:
    return main([stage, *flags, "--experiment", "small", *(a for s in sets for a in ("--set", s))])


def snapshot(layout: Layout) -> tuple[dict[str, pl.DataFrame], dict]:
    tables = {s: read_table(layout.features, s).collect() for s in SPLITS}
    return tables, json.loads((layout.features / "feature_spec.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Built:
    base = tmp_path_factory.mktemp("understand_e2e")
    store = f"sqlite:///{base / 'mlflow.db'}"
    values = {**SIZE, **TAGGER, "data.root": base / "data", "understand.base": tiny_bert_dir,
              "embed.encoder": tiny_bert_dir}  # fmt: skip
    sets = [f"{k}={v}" for k, v in values.items()]
    layout = Layout(base / "data" / "small")
    queries = layout.queries / "queries.parquet"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", store)
    try:
        assert cli("raw", sets) == 0
        assert cli("understand", sets) == 0
        first = pl.read_parquet(queries)
        assert cli("understand", sets) == 0  # again: the same seed
        second = pl.read_parquet(queries)
        assert cli("embed", sets) == 0
        assert cli("features", sets) == 0
        features, spec = snapshot(layout)
        assert cli("features", [*sets, "features.query_understanding=false"]) == 0
        ablated, ablated_spec = snapshot(layout)
    finally:
        mp.undo()
    return Built(base / "data", store, sets, first, second, features, spec, ablated, ablated_spec)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "_manifest.json").read_text())


def test_every_distinct_query_of_the_log_is_labelled_once(built: Built) -> None:
    raw = built.layout.raw
    imp = pl.read_parquet(raw / "impressions.parquet")["query"]
    beh = pl.read_parquet(raw / "behaviour.parquet").filter(pl.col("event") == "search")["query"]
    distinct = set(pl.concat([imp, beh]).drop_nulls().to_list())
    table = built.second
    assert table.height == len(distinct) == table["query"].n_unique()
    assert set(table["query"].to_list()) == distinct
    assert table["query_key"].to_list() == [text_key(q) for q in table["query"]]
    p = table.select(pl.col("^p_intent_.*$")).to_numpy()
    assert p.shape[1] >= 2
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert manifest(built.layout.queries)["tables"]["queries"]["rows"] == table.height


def test_the_manifest_and_the_mlflow_run_carry_the_metrics_and_the_confusion_plot(
    built: Built,
) -> None:
    from mlflow import MlflowClient

    found = manifest(built.layout.queries)
    metrics = found["metrics"]
    for name in (
        "test_intent_macro_f1",
        "tfidf_test_intent_macro_f1",
        "gazetteer_test_entity_micro_f1",
        "truth_test_intent_macro_f1",
    ):
        assert name in metrics and 0.0 <= metrics[name] <= 1.0, name
    assert found["counts"]["later_period"] == 0 and found["counts"]["quarantined"] == 0
    client = MlflowClient(tracking_uri=built.store)
    run = client.get_run(found["run_id"])
    assert run.data.tags["stage"] == "understand"
    assert run.data.metrics["test_intent_macro_f1"] == pytest.approx(
        metrics["test_intent_macro_f1"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "confusion_intent.png" in artifacts


def test_clean_simulated_annotations_quarantine_nothing(built: Built) -> None:
    folder = built.layout.understand_quarantine
    assert (folder / "_manifest.json").is_file()
    bad = pl.read_parquet(folder / "annotations.parquet")
    assert bad.height == 0 and {"query", "reason"} <= set(bad.columns)


def query_names(spec: dict) -> list[str]:
    return [f["name"] for f in spec["features"] if f.get("family") == "query"]


def test_features_carry_the_query_family_and_the_switch_removes_only_it(built: Built) -> None:
    names = query_names(built.spec)
    assert {n for n in names if n.startswith("n_q_intent_")}, names
    assert {n for n in names if n.startswith("n_u_intent_")}, names
    assert "n_q_brand_match" in names
    assert all(n in built.features["train"].columns for n in names)
    assert query_names(built.ablated_spec) == []
    others = [f for f in built.spec["features"] if f.get("family") != "query"]
    assert others == built.ablated_spec["features"]
    for split in SPLITS:
        with_q, without = built.features[split], built.ablated[split]
        assert not set(names) & set(without.columns)
        assert with_q.drop(names).equals(without), split  # every other column, value for value
    assert built.features["train"][names[0]].is_not_null().any()


def test_the_same_seed_labels_every_query_the_same(built: Built) -> None:
    assert built.first.equals(built.second)


def test_if_needed_finds_the_labels_up_to_date(
    built: Built, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.config import load_experiment
    from pipeline.understand import run_if_needed, skip_reason

    monkeypatch.setenv("MLFLOW_TRACKING_URI", built.store)
    before = manifest(built.layout.queries)
    assert run_if_needed(load_experiment("small", built.sets)).notes == {"skipped": "up to date"}
    capsys.readouterr()
    assert cli("understand", built.sets, "--if-needed") == 0
    assert "skipped=up to date" in capsys.readouterr().out
    assert manifest(built.layout.queries)["run_id"] == before["run_id"]  # not rerun
    other = load_experiment("small", [*built.sets, "understand.max_steps=10"])
    assert skip_reason(other) is None  # other settings: stale
