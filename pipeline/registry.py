"""The MLflow model registry, named in one place: every trained model is registered as
`adctr-<experiment>-<kind>`; `evaluate` points the alias `champion` at the best one
(`models:/adctr-<experiment>-<kind>@champion`) and names its kind in
`evaluation/metrics.json`; `export` and `replay` look it up here. The metric the champion is
ranked by (`evaluate.champion_metric`) is resolved here too, for evaluate's ranking and for
export's guardrail alike.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pipeline.config import EvaluateConfig
from pipeline.stage import Layout

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
# ranks the models where none has the configured metric (e.g. data without conversions)
FALLBACK_METRIC, FALLBACK_MODE = "valid_ctr_logloss", "min"
# a model whose valid CTR NE is 1 or more predicts no better than the train click rate; judged
# on calibrated predictions whose calibrator did not see the row (2-fold, out of fold)
BASE_RATE_METRIC = "valid_ctr_ne_oof"
# ... and must be below 1 by more than this: a constant prediction, calibrated out of fold,
# lands within a hair of 1 on either side (0.99975 seen on clicks that are pure noise)
BASE_RATE_MARGIN = 0.001


def model_name(experiment: str, kind: str) -> str:
    """The registered model of one model kind: `adctr-<experiment>-<kind>`."""
    return f"adctr-{experiment}-{kind}"


def champion_uri(experiment: str, kind: str) -> str:
    """`models:/adctr-<experiment>-<kind>@champion`, loadable with `mlflow.pyfunc.load_model`."""
    return f"models:/{model_name(experiment, kind)}@{CHAMPION}"


def champion_kind(layout: Layout) -> str | None:
    """The champion's kind named by `evaluate` (None before it ran, or without a champion)."""
    path = layout.evaluation_metrics
    return json.loads(path.read_text()).get("champion") if path.is_file() else None


def no_champion_reason(layout: Layout) -> str | None:
    """Why the last `evaluate` crowned no model, or None (it crowned one, or never ran)."""
    path = layout.evaluation_metrics
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    if done.get("champion"):
        return None
    barred = done.get("selection", {}).get("not_eligible", {})
    return "; ".join(f"{k}: {why}" for k, why in barred.items()) or "no model has the metric"


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and not math.isinf(value)


def ranking_metric(cfg: EvaluateConfig, metrics: Iterable[Mapping[str, float]]) -> tuple[str, str]:
    """(metric, mode) to rank by: `cfg.champion_metric` / `cfg.champion_mode` when any of
    `metrics` has a finite value of it, else test_ctr_logloss / min."""
    if any(_finite(m.get(cfg.champion_metric)) for m in metrics):
        return cfg.champion_metric, cfg.champion_mode
    return FALLBACK_METRIC, FALLBACK_MODE


def not_eligible(per_model: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """The kinds that cannot be champion, with why: a valid CTR NE of 1 or more (no better than
    predicting the train click rate), or none at all."""
    out = {}
    for kind, m in per_model.items():
        ne = m.get(BASE_RATE_METRIC)
        if not _finite(ne):
            out[kind] = f"no finite {BASE_RATE_METRIC}"
        elif ne >= 1.0 - BASE_RATE_MARGIN:
            out[kind] = (
                f"{BASE_RATE_METRIC} {ne:.4f} >= {1 - BASE_RATE_MARGIN:g}: no better than the "
                "base rate"
            )
    return out


def _valid_only(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics of `metrics` that may choose: all but the test ones (whose values are not
    even read)."""
    return {name: metrics[name] for name in metrics if not name.startswith("test_")}


def best_model(cfg: EvaluateConfig, per_model: Mapping[str, Mapping[str, float]]) -> str | None:
    """The eligible kind (`not_eligible`) with the best `ranking_metric` (first on a tie), None
    when no eligible model has it. Only valid metrics are read: test is reported, never used to
    choose."""
    per_model = {k: _valid_only(m) for k, m in per_model.items()}  # test is never read
    barred = not_eligible(per_model)
    per_model = {k: m for k, m in per_model.items() if k not in barred}
    metric, mode = ranking_metric(cfg, per_model.values())
    scored = {k: m[metric] for k, m in per_model.items() if _finite(m.get(metric))}
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda k: sign * scored[k])


def set_champion(
    experiment: str, champion: str | None, versions: Mapping[str, str | int | None]
) -> str | None:
    """Point `champion` at `champion`'s registered version and drop it from the other kinds'
    models (`versions`: kind -> registered version; `champion` None drops it from every one);
    the champion's URI."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    for kind, version in versions.items():
        name = model_name(experiment, kind)
        if kind == champion and version is not None:
            client.set_registered_model_alias(name, CHAMPION, str(version))
        else:
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model_alias(name, CHAMPION)
    return champion_uri(experiment, champion) if champion else None


def find_champion(
    experiment: str, layout: Layout, kinds: Iterable[str]
) -> tuple[str, ModelVersion] | None:
    """(kind, model version) of the `champion` alias: of the kind `evaluate` named, else of the
    first of `kinds` that carries the alias; None when none does."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if no_champion_reason(layout):
        return None
    named = champion_kind(layout)
    for kind in [named] if named else list(kinds):
        try:
            return kind, client.get_model_version_by_alias(model_name(experiment, kind), CHAMPION)
        except MlflowException:
            continue
    return None
