"""What `evaluate` writes onto MLflow runs so that they read well in the dashboard.

- Each model run: the headline test metrics (and the oracle's, as `oracle_*`) as metrics, every
  slice metric in one logged table (`tables/test_metrics.json`) instead of a hundred flat keys,
  and a Markdown description (`mlflow.note.content`): its headline figures, its rank on the
  champion metric (valid) and its gap to the oracle.
- The comparison run: the headline metrics of every model (`<model>_<metric>`, about 30 keys),
  every metric of every model in one logged table, and the ★ comparison table as its
  description, so it is on the run's first page.
- The experiment: the saved runs-table view `make ui` links to (`headline_view`), and the
  `champion` tag of every model run (true for the champion's, false for the others).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from base64 import b64encode
from collections.abc import Mapping

import mlflow

from pipeline.report import HEADLINE_METRICS
from pipeline.tracking import log_metrics, log_new_metrics
from pipeline.ui import HEADLINE_VIEW, SAVED_VIEW_TAG

NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
METRICS_TABLE = "tables/test_metrics.json"
CHAMPION_TAG = "champion"  # on model runs: true for the champion's run, false for the others
# the runs-table columns of the headline view, the AUCs first (on the first screen)
VIEW_METRICS = (
    "test_ctr_auc",
    "test_cvr_auc",
    "test_ctcvr_auc",
    "test_cold_ctr_auc",
    "valid_ctr_auc",
    "valid_cvr_auc",
    "test_ctr_logloss",
    "valid_ctr_logloss",
    "test_cvr_logloss",
    "valid_cvr_logloss",
    "test_ctr_ne",
    "valid_ctr_ne",
    "test_ctr_calibration",
    "valid_ctr_calibration",
)


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The headline keys of one model's metrics (those it has)."""
    return {k: metrics[k] for k in HEADLINE_METRICS if k in metrics}


def oracle_named(metrics: Mapping[str, float]) -> dict[str, float]:
    """The oracle's headline metrics as a model run holds them: test_ctr_auc -> oracle_ctr_auc."""
    return {k.replace("test_", "oracle_", 1): v for k, v in headline(metrics).items()}


def long_table(per_model: Mapping[str, Mapping[str, float]]) -> dict[str, list]:
    """Every metric of every model, one row each: model, metric, value (NaN rows dropped)."""
    rows = [
        (model, key, float(value))
        for model, metrics in per_model.items()
        for key, value in sorted(metrics.items())
        if value is not None and math.isfinite(value)
    ]
    return {name: [r[i] for r in rows] for i, name in enumerate(("model", "metric", "value"))}


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def model_note(
    kind: str,
    metrics: Mapping[str, float],
    oracle: Mapping[str, float] | None,
    rank: tuple[int, int, str] | None,
    champion: str | None,
) -> str:
    """The Markdown description of one model run."""
    lines = [f"**{kind}**" + (" — the champion" if kind == champion else "")]
    if rank is not None:
        place, of, metric = rank
        lines.append(f"\nRank {place} of {of} on `{metric}` (valid: the champion's choice).")
    lines += ["", "| test metric | value | oracle | gap to oracle |", "|---|---:|---:|---:|"]
    for key, value in headline(metrics).items():
        best = (oracle or {}).get(key)
        gap = value - best if best is not None and math.isfinite(best) else None
        lines.append(f"| {key} | {_fmt(value)} | {_fmt(best)} | {_fmt(gap)} |")
    lines.append(f"\nEvery slice (cold / warm, placement, position, users): `{METRICS_TABLE}`.")
    return "\n".join(lines) + "\n"


def ranks(values: Mapping[str, float | None], mode: str) -> dict[str, tuple[int, int]]:
    """(place, out of) of each model with a finite `values` entry, best first (`mode` min/max)."""
    finite = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    ordered = sorted(finite, key=lambda k: finite[k], reverse=mode == "max")
    return {k: (i + 1, len(ordered)) for i, k in enumerate(ordered)}


def log_model_run(
    run_id: str,
    kind: str,
    metrics: Mapping[str, float],
    oracle: Mapping[str, float] | None,
    extra: Mapping[str, float],
    note: str,
) -> None:
    """Onto the finished model run: the headline metrics it lacks (train logged most), the
    oracle's and `extra` ones, its slice table (once: a rerun of evaluate leaves it) and its
    description."""
    log_new_metrics(run_id, headline(metrics) | oracle_named(oracle or {}) | dict(extra))
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(run_id, "tables")}
    if METRICS_TABLE not in logged:
        mlflow.log_table(long_table({kind: metrics}), METRICS_TABLE, run_id=run_id)
    client.set_tag(run_id, NOTE_TAG, note)


def log_comparison_run(per_model: Mapping[str, Mapping[str, float]], table_md: str) -> None:
    """Onto the active comparison run: every model's headline metrics, the whole metric table
    and the ★ table as the description."""
    log_metrics({f"{kind}_{k}": v for kind, m in per_model.items() for k, v in headline(m).items()})
    mlflow.log_table(long_table(per_model), METRICS_TABLE)
    mlflow.set_tag(NOTE_TAG, table_md)


def headline_view(metric: str, mode: str, now_ms: int) -> str:
    """The saved-view tag value MLflow's runs page reads (3.15+): an envelope (name, times)
    around the view state, deflated as the UI does it. The state: the model and champion tags,
    `VIEW_METRICS` with the champion metric after the AUCs and the features dataset as
    columns, sorted by the champion metric best first (runs without it, the comparison run
    among them, below the model runs)."""
    metrics = [m for m in VIEW_METRICS if m != metric]
    metrics.insert(4, metric)
    columns = ["tags.`model`", f"tags.`{CHAMPION_TAG}`", *(f"metrics.`{m}`" for m in metrics)]
    columns.append("attributes.`Dataset`")
    state = {
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns],
    }
    packed = "deflate;" + b64encode(zlib.compress(json.dumps(state).encode())).decode()
    envelope = {"name": "adctr: CTR and CVR", "createdAt": now_ms, "updatedAt": now_ms}
    return json.dumps(envelope | {"state": packed})


def save_headline_view(experiment_id: str, metric: str, mode: str) -> None:
    """Save (or replace) the headline view on the experiment; `make ui` links to it."""
    value = headline_view(metric, mode, int(time.time() * 1000))
    mlflow.MlflowClient().set_experiment_tag(experiment_id, SAVED_VIEW_TAG + HEADLINE_VIEW, value)


def mark_champion(experiment_id: str, run_ids: Mapping[str, str], champion: str | None) -> None:
    """Tag each model run `champion` true or false; an older run still tagged true from an
    earlier evaluation is set false (the registry alias moved on)."""
    client = mlflow.MlflowClient()
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.{CHAMPION_TAG} = 'true' AND tags.stage = 'train'"
    )
    for run in stale:
        if run.info.run_id not in run_ids.values():
            client.set_tag(run.info.run_id, CHAMPION_TAG, "false")
    for kind, run_id in run_ids.items():
        client.set_tag(run_id, CHAMPION_TAG, str(kind == champion).lower())
