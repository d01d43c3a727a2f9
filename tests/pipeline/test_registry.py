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
    with_conv = [{"valid_ctcvr_logloss": 0.01, "valid_ctr_logloss": 0.1}]
    assert registry.ranking_metric(cfg, with_conv) == ("valid_ctcvr_logloss", "min")
    click_only = [{"valid_ctr_logloss": 0.1}, {"valid_ctcvr_logloss": math.nan}]
    assert registry.ranking_metric(cfg, click_only) == ("valid_ctr_logloss", "min")
    auc = EvaluateConfig(champion_metric="valid_ctr_auc", champion_mode="max")
    assert registry.ranking_metric(auc, [{"valid_ctr_auc": 0.7}]) == ("valid_ctr_auc", "max")


def test_best_model_follows_metric_and_mode() -> None:
    ne = {"valid_ctr_ne_oof": 0.9}
    per_model = {
        "lightgbm": {"valid_ctcvr_logloss": 0.02, "valid_ctr_auc": 0.80, "valid_ctr_logloss": 0.2},
        "neural": {"valid_ctcvr_logloss": 0.01, "valid_ctr_auc": 0.70, "valid_ctr_logloss": 0.3},
    }
    per_model = {k: m | ne for k, m in per_model.items()}
    assert registry.best_model(EvaluateConfig(), per_model) == "neural"
    by_auc = EvaluateConfig(champion_metric="valid_ctr_auc", champion_mode="max")
    assert registry.best_model(by_auc, per_model) == "lightgbm"
    click_only = {
        k: {"valid_ctr_logloss": m["valid_ctr_logloss"]} | ne for k, m in per_model.items()
    }
    assert registry.best_model(EvaluateConfig(), click_only) == "lightgbm"
    assert registry.best_model(EvaluateConfig(), {"neural": {}}) is None


class _TestUnread(dict):
    """Metrics whose test values raise when read."""

    def __getitem__(self, key: str) -> float:
        assert not key.startswith("test_"), f"the champion choice read {key}"
        return super().__getitem__(key)

    def get(self, key: str, default: float | None = None) -> float | None:
        assert not key.startswith("test_"), f"the champion choice read {key}"
        return super().get(key, default)

    def items(self):
        raise AssertionError("the champion choice read every value, test ones included")

    values = items


def test_the_champion_choice_never_reads_a_test_metric() -> None:
    per_model = {
        "lightgbm": _TestUnread(
            valid_ctcvr_logloss=0.02, valid_ctr_ne_oof=0.9, test_ctcvr_logloss=0.001
        ),
        "neural": _TestUnread(
            valid_ctcvr_logloss=0.01, valid_ctr_ne_oof=0.9, test_ctcvr_logloss=0.5
        ),
    }
    assert registry.best_model(EvaluateConfig(), per_model) == "neural"
    # a test metric the valid ones lack does not become the fallback either
    click_only = {k: _TestUnread(valid_ctr_ne_oof=0.9, test_ctr_logloss=0.1) for k in per_model}
    assert registry.best_model(EvaluateConfig(), click_only) is None


def test_a_model_no_better_than_the_base_rate_is_never_champion() -> None:
    per_model = {
        "lightgbm": {
            "valid_ctcvr_logloss": 0.01,
            "valid_ctr_ne_oof": 1.02,
        },  # best, but barred
        "neural": {"valid_ctcvr_logloss": 0.02, "valid_ctr_ne_oof": 0.95},
    }
    assert registry.best_model(EvaluateConfig(), per_model) == "neural"
    assert registry.not_eligible(per_model) == {
        "lightgbm": "valid_ctr_ne_oof 1.0200 >= 0.999: no better than the base rate"
    }
    per_model["neural"]["valid_ctr_ne_oof"] = 0.99975  # a constant prediction, out of fold
    assert registry.best_model(EvaluateConfig(), per_model) is None
    assert set(registry.not_eligible({"neural": {}})) == {"neural"}


def test_no_champion_reason_reads_what_evaluate_wrote(tmp_path) -> None:
    layout = Layout(tmp_path)
    assert registry.no_champion_reason(layout) is None  # evaluate never ran
    layout.evaluation.mkdir(parents=True)
    barred = {"neural": "valid_ctr_ne_oof 1.0100 >= 1: no better than the base rate"}
    layout.evaluation_metrics.write_text(
        json.dumps({"champion": None, "selection": {"not_eligible": barred}})
    )
    assert registry.no_champion_reason(layout) == f"neural: {barred['neural']}"
    layout.evaluation_metrics.write_text(json.dumps({"champion": "neural", "selection": {}}))
    assert registry.no_champion_reason(layout) is None
