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
FALLBACK_METRIC, FALLBACK_MODE = "test_ctr_logloss", "min"


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


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and not math.isinf(value)


def ranking_metric(cfg: EvaluateConfig, metrics: Iterable[Mapping[str, float]]) -> tuple[str, str]:
    """(metric, mode) to rank by: `cfg.champion_metric` / `cfg.champion_mode` when any of
    `metrics` has a finite value of it, else test_ctr_logloss / min."""
    if any(_finite(m.get(cfg.champion_metric)) for m in metrics):
        return cfg.champion_metric, cfg.champion_mode
    return FALLBACK_METRIC, FALLBACK_MODE


def best_model(cfg: EvaluateConfig, per_model: Mapping[str, Mapping[str, float]]) -> str | None:
    """The kind with the best `ranking_metric` (first on a tie), None when no model has it."""
    metric, mode = ranking_metric(cfg, per_model.values())
    scored = {k: m[metric] for k, m in per_model.items() if _finite(m.get(metric))}
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda k: sign * scored[k])


def set_champion(experiment: str, champion: str, versions: Mapping[str, str | int | None]) -> str:
    """Point `champion` at `champion`'s registered version and drop it from the other kinds'
    models (`versions`: kind -> registered version); the champion's URI."""
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
    return champion_uri(experiment, champion)


def find_champion(
    experiment: str, layout: Layout, kinds: Iterable[str]
) -> tuple[str, ModelVersion] | None:
    """(kind, model version) of the `champion` alias: of the kind `evaluate` named, else of the
    first of `kinds` that carries the alias; None when none does."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    named = champion_kind(layout)
    for kind in [named] if named else list(kinds):
        try:
            return kind, client.get_model_version_by_alias(model_name(experiment, kind), CHAMPION)
        except MlflowException:
            continue
    return None
