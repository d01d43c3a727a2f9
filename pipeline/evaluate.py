"""Compare the trained models on test. Reads `features/test.parquet`, `predictions/<kind>/`,
`models/<kind>/` and (for simulated data) `oracle/`. Writes metrics and slices onto each model's
MLflow run, one comparison run with plots and the comparison table, `evaluation/` (the same
table on disk), and the registered-model alias `champion`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
from mlflow import MlflowClient

from pipeline import plots, report
from pipeline.config import Experiment
from pipeline.datasets import labels, load_spec, load_split
from pipeline.io import DataError, atomic_dir, read_manifest, read_table, write_file_manifest
from pipeline.mlflow_model import load_estimator
from pipeline.scoring import task_metrics
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import log_metrics, stage_run, use_experiment

log = logging.getLogger(__name__)


def _slices(test: pl.DataFrame, cfg: Experiment) -> dict[str, np.ndarray]:
    """Named boolean masks over the test rows: cold start, placement, position bucket, users."""
    out = {"cold": test["cold_start"].to_numpy(), "warm": ~test["cold_start"].to_numpy()}
    for p in sorted(test["placement"].drop_nulls().unique().to_list()):
        out[f"placement_{p}"] = (test["placement"] == p).to_numpy()
    pos = test["position"].fill_null(0).to_numpy()
    edges = list(cfg.evaluate.position_buckets)
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        name = f"pos_{lo}" if hi == lo + 1 else f"pos_{lo}{'-' + str(hi - 1) if hi else 'plus'}"
        out[name] = (pos >= lo) & (pos < hi if hi else True)
    out["new_user"] = test["new_user"].to_numpy()
    out["returning_user"] = ~test["new_user"].to_numpy()
    return out


def _score(
    test: pl.DataFrame, spec: dict, p: np.ndarray, mask: np.ndarray, prefix: str, bins: int
) -> dict[str, float]:
    click, conv = labels(test, spec)
    users = test["user_id"].to_numpy()
    return task_metrics(
        click[mask],
        None if conv is None else conv[mask],
        p[mask, 0],
        p[mask, 1],
        p[mask, 2],
        users[mask],
        prefix,
        bins,
    )


def model_metrics(test: pl.DataFrame, spec: dict, p: np.ndarray, exp: Experiment) -> dict:
    """Overall test metrics plus `test_<slice>_...` for every slice."""
    bins = exp.evaluate.ece_bins
    everything = np.ones(test.height, dtype=bool)
    out = _score(test, spec, p, everything, "test_", bins)
    for name, mask in _slices(test, exp).items():
        if mask.any():
            out |= _score(test, spec, p, mask, f"test_{name}_", bins)
    return out


def _oracle(layout: Layout, test: pl.DataFrame) -> np.ndarray | None:
    if not (layout.oracle / "_manifest.json").exists():
        return None
    o = read_table(layout.oracle, "impressions").collect()
    joined = test.select("impression_id").join(o, on="impression_id", how="left")
    pc, pv = joined["p_click"].to_numpy(), joined["p_conversion"].to_numpy()
    return np.column_stack([pc, pv, pc * pv])


def _predictions(layout: Layout, kind: str, test: pl.DataFrame) -> tuple[np.ndarray, ...]:
    pred = read_table(layout.predictions / kind, "predictions").filter(pl.col("split") == "test")
    joined = test.select("impression_id").join(pred.collect(), on="impression_id", how="left")
    cal = joined.select("pctr", "pcvr", "pctcvr").to_numpy()
    raw = joined.select("pctr_raw", "pcvr_raw", "pctcvr_raw").to_numpy()
    return cal, raw


def _figures(test, spec, cal, raw, per_model, layout) -> dict[str, object]:
    click, conv = labels(test, spec)
    figs = {
        "roc_ctr": plots.roc_curves({k: (click, v[:, 0]) for k, v in cal.items()}),
        "lift_ctr": plots.lift_chart({k: (click, v[:, 0]) for k, v in cal.items()}),
        "reliability_ctr": plots.reliability(
            {
                f"{k} {w}": (click, src[k][:, 0])
                for k in cal
                for w, src in (("raw", raw), ("calibrated", cal))
            },
            what="CTR",
        ),
        "slices_ctr_auc": plots.metric_by_slice(
            {
                k: {
                    s.removeprefix("test_").removesuffix("_ctr_auc"): v
                    for s, v in m.items()
                    if s.endswith("_ctr_auc") and s != "test_ctr_auc"
                }
                for k, m in per_model.items()
            },
            metric="CTR AUC",
        ),
    }
    if conv is not None:
        clicked = click == 1
        figs["roc_ctcvr"] = plots.roc_curves(
            {k: (conv, v[:, 2]) for k, v in cal.items()}, title="ROC curves, CTCVR (test)"
        )
        if all(np.isfinite(v[clicked, 1]).all() for v in cal.values()):
            figs["reliability_cvr"] = plots.reliability(
                {
                    f"{k} {w}": (conv[clicked], src[k][clicked, 1])
                    for k in cal
                    for w, src in (("raw", raw), ("calibrated", cal))
                },
                what="CVR",
                title="Reliability, CVR",
            )
    if "lightgbm" in cal and (layout.models / "lightgbm").exists():
        est, _ = load_estimator(layout.models / "lightgbm")
        for task, gains in est.feature_importance().items():
            figs[f"importance_lightgbm_{task}"] = plots.feature_importance(
                list(gains), list(gains.values()), title=f"LightGBM {task.upper()} gain"
            )
    hist = layout.models / "neural" / "history.json"
    if "neural" in cal and hist.exists():
        figs["training_neural"] = plots.training_curves(
            json.loads(hist.read_text()), title="Neural training"
        )
    return figs


def _champion(exp: Experiment, per_model: dict[str, dict[str, float]]) -> str | None:
    metric, sign = exp.evaluate.champion_metric, 1 if exp.evaluate.champion_mode == "min" else -1
    scored = {k: m.get(metric, math.nan) for k, m in per_model.items()}
    scored = {k: v for k, v in scored.items() if not math.isnan(v)}
    if not scored:
        fallback = "test_ctr_logloss"
        scored = {k: m.get(fallback, math.nan) for k, m in per_model.items()}
        sign = 1
    return min(scored, key=lambda k: sign * scored[k]) if scored else None


def _set_alias(exp: Experiment, champion: str, models: list[str], layout: Layout) -> str:
    client = MlflowClient()
    for kind in models:
        name = f"adctr-{exp.name}-{kind}"
        version = read_manifest(layout.predictions / kind).get("registered_version")
        if kind == champion and version is not None:
            client.set_registered_model_alias(name, "champion", str(version))
        else:
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model_alias(name, "champion")
    return f"models:/adctr-{exp.name}-{champion}@champion"


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("evaluate", output=str(layout.root / "evaluation"))
    spec = load_spec(layout.features)
    test = load_split(layout.features, "test")
    kinds = [k for k in exp.train.models if (layout.predictions / k / "_manifest.json").exists()]
    if not kinds:
        raise DataError(f"{layout.predictions}: no model predictions; run `make train` first")
    cal, raw, per_model = {}, {}, {}
    run_ids = {k: read_manifest(layout.predictions / k)["run_id"] for k in kinds}
    use_experiment(exp)
    for kind in kinds:
        cal[kind], raw[kind] = _predictions(layout, kind, test)
        per_model[kind] = model_metrics(test, spec, cal[kind], exp)
        with mlflow.start_run(run_id=run_ids[kind]):
            log_metrics(per_model[kind])
    oracle = _oracle(layout, test)
    if oracle is not None:
        om = model_metrics(test, spec, oracle, exp)
        per_model["oracle"] = om
        oracle_named = {k.replace("test_", "oracle_", 1): v for k, v in om.items()}
        for kind in kinds:
            with mlflow.start_run(run_id=run_ids[kind]):
                log_metrics(
                    {
                        k: v
                        for k, v in oracle_named.items()
                        if "_ctr_" in k or k.startswith(("oracle_cvr", "oracle_ctcvr"))
                    }
                )
    champion = _champion(exp, {k: v for k, v in per_model.items() if k in kinds})
    rows = sorted({k for m in per_model.values() for k in m if not k.endswith("_positives")})
    overall = [r for r in rows if r.count("_") == 2]
    tables = {
        name: report.comparison_table(
            {k: {r: m.get(r, math.nan) for r in selected} for k, m in per_model.items()},
            title=f"{exp.name}: {title}",
            references={"oracle"},
        )
        for name, title, selected in (
            ("comparison", "test metrics", overall),
            ("comparison_slices", "test metrics by slice", [r for r in rows if r not in overall]),
        )
    }
    with (
        stage_run(exp, "evaluate", run_name="comparison", tags={"champion": champion or ""}) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for kind, m in per_model.items():
            log_metrics({f"{kind}_{k}": v for k, v in m.items()})
        if champion:
            uri = _set_alias(exp, champion, kinds, layout)
            mlflow.set_tags(
                {"champion_model_uri": uri, "champion_metric": exp.evaluate.champion_metric}
            )
        for name, fig in _figures(test, spec, cal, raw, per_model, layout).items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        for name, (md, html) in tables.items():
            for ext, text in (("md", md), ("html", html)):
                Path(tmp, f"{name}.{ext}").write_text(text)
                mlflow.log_artifact(str(Path(tmp, f"{name}.{ext}")), "tables")
        with atomic_dir(layout.root / "evaluation") as out:
            for name, (md, html) in tables.items():
                (out / f"{name}.md").write_text(md)
                (out / f"{name}.html").write_text(html)
            (out / "metrics.json").write_text(
                json.dumps(
                    {"champion": champion, "run_id": run.info.run_id, "metrics": per_model},
                    indent=2,
                    default=lambda x: None,
                )
            )
            write_file_manifest(
                out,
                config_digest=exp.digest(),
                inputs={"features": layout.features}
                | {f"predictions_{k}": layout.predictions / k for k in kinds},
                extra={"champion": champion, "run_id": run.info.run_id},
            )
    print(tables["comparison"][0])
    summary.rows_in = summary.rows_out = test.height
    summary.notes = {"champion": champion}
    return summary
