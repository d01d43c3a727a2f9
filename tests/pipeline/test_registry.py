"""pipeline.registry: model names and URIs, the champion's kind from evaluation/metrics.json,
the metric it is ranked by (with the CTR fallback) and the best model."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline import registry
from pipeline.config import EvaluateConfig
from pipeline.stage import Layout


def test_names_and_uri() -> None:
    assert registry.model_name("small", "neural") == "adctr-small-neural"
    assert registry.champion_uri("small", "lightgbm") == "models:/adctr-small-lightgbm@champion"


def test_champion_kind_from_metrics_json(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "exp")
    assert registry.champion_kind(layout) is None  # evaluate has not run
    layout.evaluation.mkdir(parents=True)
    layout.evaluation_metrics.write_text(json.dumps({"champion": "lightgbm", "metrics": {}}))
    assert registry.champion_kind(layout) == "lightgbm"
    layout.evaluation_metrics.write_text(json.dumps({"champion": None, "metrics": {}}))
    assert registry.champion_kind(layout) is None


def test_ranking_metric_falls_back_to_ctr_logloss() -> None:
    cfg = EvaluateConfig()
    with_conv = [{"test_ctcvr_logloss": 0.01, "test_ctr_logloss": 0.1}]
    assert registry.ranking_metric(cfg, with_conv) == ("test_ctcvr_logloss", "min")
    click_only = [{"test_ctr_logloss": 0.1}, {"test_ctcvr_logloss": math.nan}]
    assert registry.ranking_metric(cfg, click_only) == ("test_ctr_logloss", "min")
    auc = EvaluateConfig(champion_metric="test_ctr_auc", champion_mode="max")
    assert registry.ranking_metric(auc, [{"test_ctr_auc": 0.7}]) == ("test_ctr_auc", "max")


def test_best_model_follows_metric_and_mode() -> None:
    per_model = {
        "lightgbm": {"test_ctcvr_logloss": 0.02, "test_ctr_auc": 0.80, "test_ctr_logloss": 0.2},
        "neural": {"test_ctcvr_logloss": 0.01, "test_ctr_auc": 0.70, "test_ctr_logloss": 0.3},
    }
    assert registry.best_model(EvaluateConfig(), per_model) == "neural"
    by_auc = EvaluateConfig(champion_metric="test_ctr_auc", champion_mode="max")
    assert registry.best_model(by_auc, per_model) == "lightgbm"
    click_only = {k: {"test_ctr_logloss": m["test_ctr_logloss"]} for k, m in per_model.items()}
    assert registry.best_model(EvaluateConfig(), click_only) == "lightgbm"
    assert registry.best_model(EvaluateConfig(), {"neural": {}}) is None
