"""Train the CTR/CVR models. Reads `features/`. Writes `models/<kind>/` (model files, calibrators,
spec) holding `predictions/` (raw and calibrated valid/test predictions), and one MLflow run per
model with params, training curves, valid/test metrics and a registered pyfunc model. A model's
two folders are published together, after its registration, and name the run that made them."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from features.spec import FeatureSpec
from models.calibration import Calibrator, out_of_fold_calibrated
from models.lgbm import LightGBMCTR
from models.matrix import MatrixChunks, first_part, rows_of
from models.sampling import CORRECTION
from pipeline import registry
from pipeline.atomic import atomic_dir
from pipeline.config import MODEL_KINDS, Experiment
from pipeline.datasets import SplitTable, labels, load_spec, load_tables
from pipeline.io import write_file_manifest, write_tables_into
from pipeline.lineage import check_lineage
from pipeline.mlflow_model import ESTIMATOR_DIR, HISTORY_FILE, META_FILE, ModelMeta, calibrate
from pipeline.ray_engine import ray_session, stage_engine
from pipeline.scoring import task_metrics
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import log_features_input, log_metrics, model_requirements, stage_run
from pipeline.train_inputs import (
    Source,
    fit_negative_rate,
    fitted_rows,
    head_of,
    labels_of,
    meta_of,
    model_input,
    predict,
)

log = logging.getLogger(__name__)
PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")


def fit_model(
    kind: str,
    exp: Experiment,
    frames: Mapping[str, Source],
    spec: FeatureSpec,
    tables: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """Fit one model family on train with early stopping on valid (`tables`: the lookup
    tables of the spec's item features and keyed embeddings, `load_tables`). A model fitted in
    memory takes every click and a seeded share of the non-clicks of train and valid
    (`fit_negative_rate`), and is told the share, so its predictions undo it."""
    if stage_engine(exp.engine, "train", kind) == "ray":
        from pipeline.ray_train import fit_on_ray

        return fit_on_ray(kind, exp, Layout.of(exp).models, frames, spec, tables)
    (ct, vt), (cv, vv) = labels_of(frames["train"], spec), labels_of(frames["valid"], spec)
    seed, threads = exp.data.seed, exp.engine.num_threads
    rate = fit_negative_rate(kind, exp, ct)
    keep_t = keep_v = None
    if rate < 1.0:
        keep_t, keep_v = fitted_rows(ct, rate, seed, "train"), fitted_rows(cv, rate, seed, "valid")
        ct, cv = ct[keep_t], cv[keep_v]
        vt = None if vt is None else vt[keep_t]
        vv = None if vv is None else vv[keep_v]
        log.info(
            "%s: fitted on every click and %.4f of the non-clicks (%s train rows, %s valid; "
            "predictions corrected by %s)", kind, rate, f"{len(ct):,}", f"{len(cv):,}", CORRECTION
        )  # fmt: skip
    xt = model_input(frames["train"], spec, kind, tables, keep_t, exp)
    xv = model_input(frames["valid"], spec, kind, tables, keep_v, exp)
    first = first_part(xt)
    log.info(
        "training %s on %s rows%s (%d categorical, %d numeric, %d dense inputs)",
        kind,
        f"{rows_of(xt):,}",
        f" in {len(xt)} slabs" if isinstance(xt, MatrixChunks) else "",
        first.categorical.shape[1],
        first.numeric.shape[1],
        len(first.embeddings),
    )
    if kind == "lightgbm":
        return LightGBMCTR(exp.lightgbm, seed, threads).fit(xt, ct, vt, xv, cv, vv, rate)
    if kind == "neural":
        from models.neural import NeuralCTR

        zeros_t, zeros_v = np.zeros_like(ct), np.zeros_like(cv)
        return NeuralCTR(exp.neural, seed, threads).fit(
            xt, ct, vt if vt is not None else zeros_t, xv, cv, vv if vv is not None else zeros_v
        )
    if kind == "logreg":
        from models.logreg import LogRegCTR

        return LogRegCTR(exp.logreg, seed, threads).fit(xt, ct, vt, xv, cv, vv, rate)
    raise ValueError(f"unknown model '{kind}' in train.models (known: {', '.join(MODEL_KINDS)})")


def held_out_valid(
    raw_valid: np.ndarray, frame: pl.DataFrame, spec: FeatureSpec, exp: Experiment
) -> np.ndarray:
    """The valid predictions calibrated out of fold (`out_of_fold_calibrated`), mirroring
    `fit_calibrators`: the valid metrics that train logs and evaluate ranks the models by."""
    click, conv = labels(frame, spec)
    return out_of_fold_calibrated(raw_valid, click, conv, exp.calibration)


def _log_derived(kind: str, derived: dict[str, Any]) -> None:
    """The settings the config left unset and the model derived from the data's size, as
    params `derived.<kind>.<key>` (the config's own params show them as None)."""
    if derived:
        log.info("%s settings derived from the data size: %s", kind, derived)
        mlflow.log_params({f"derived.{kind}.{k}": v for k, v in derived.items()})


def _log_sampling(kind: str, exp: Experiment, model: Any) -> None:
    """The share of negatives a model fitted in memory took (`fit_negative_rate`) as the
    param `negative_rate` (and `derived.<kind>.negative_rate` when the config left it to the
    size rule), with the correction of its predictions as a tag."""
    if not hasattr(model, "negative_rate_"):
        return
    rate = model.negative_rate_
    derived = getattr(exp, kind).negative_rate is None
    mlflow.log_params(
        {"negative_rate": rate} | ({f"derived.{kind}.negative_rate": rate} if derived else {})
    )
    mlflow.set_tag("negative_correction", CORRECTION if rate < 1.0 else "none")


def fit_calibrators(
    raw_valid: np.ndarray, frame: pl.DataFrame, spec: FeatureSpec, exp: Experiment
) -> dict[str, Calibrator]:
    click, conv = labels(frame, spec)
    cfg = exp.calibration
    cals = {"ctr": Calibrator(cfg.method, cfg.min_positives_isotonic).fit(raw_valid[:, 0], click)}
    if conv is not None and np.isfinite(raw_valid[:, 1]).all():
        clicked = click == 1
        cals["cvr"] = Calibrator(cfg.method, cfg.min_positives_isotonic).fit(
            raw_valid[clicked, 1], conv[clicked]
        )
    return cals


def _log_curves(kind: str, model: Any) -> None:
    """Per-iteration (LightGBM) or per-epoch (neural) train/valid curves as stepped metrics."""
    if kind == "lightgbm":
        for task, evals in model.evals_result_.items():
            for split, metrics in evals.items():
                for name, values in metrics.items():
                    short = {"binary_logloss": "logloss"}.get(name, name)
                    key = f"curve_{task}_{split}_{short}"
                    for step in range(0, len(values), max(1, len(values) // 200)):
                        mlflow.log_metric(key, values[step], step=step)
    elif kind == "neural":  # logreg: lbfgs runs to convergence, no curves
        for row in model.history_:
            step = int(row["epoch"])
            log_metrics({f"curve_{k}": v for k, v in row.items() if k != "epoch"}, step=step)


def _metrics(
    frame: pl.DataFrame, spec: FeatureSpec, pred: np.ndarray, prefix: str, exp: Experiment
) -> dict[str, float]:
    click, conv = labels(frame, spec)
    users = frame["user_id"].to_numpy()
    pctr, pcvr, pctcvr = pred[:, 0], pred[:, 1], pred[:, 2]
    bins = exp.evaluate.ece_bins  # the one ECE setting, shared with evaluate
    return task_metrics(click, conv, pctr, pcvr, pctcvr, users, prefix, n_bins=bins)


def _log_model(
    kind: str,
    exp: Experiment,
    model_dir: Path,
    example: pd.DataFrame,
    spec: FeatureSpec,
    cal: dict[str, np.ndarray],
):
    """The pyfunc model, its signature from the first test rows and their predictions."""
    output = pd.DataFrame(cal["test"][: len(example)], columns=["pctr", "pcvr", "pctcvr"])
    with warnings.catch_warnings():  # integer id codes and no input example are intended
        warnings.simplefilter("ignore", UserWarning)
        signature = mlflow.models.infer_signature(example, output)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"model_dir": str(model_dir)},
            signature=signature,
            registered_model_name=registry.model_name(exp.name, kind),
            pip_requirements=model_requirements(),
        )


def _all_metrics(
    exp: Experiment, frames: dict, spec: FeatureSpec, raw: dict, cal: dict
) -> dict[str, float]:
    """valid_* of the valid predictions calibrated out of fold (the calibrators were fitted on
    valid: judged on the rows they saw, the better-fitting model's calibration would flatter
    it), test_* of the calibrated predictions, the raw test calibration ratios and the
    cold-start slice (`test_cold_*`)."""
    metrics = _metrics(
        frames["valid"],
        spec,
        held_out_valid(raw["valid"], frames["valid"], spec, exp),
        "valid_",
        exp,
    )
    metrics |= _metrics(frames["test"], spec, cal["test"], "test_", exp)
    raw_test = _metrics(frames["test"], spec, raw["test"], "test_", exp)
    metrics |= {f"{k}_raw": v for k, v in raw_test.items() if k.endswith("calibration")}
    cold = frames["test"]["cold_start"].to_numpy()
    if cold.any():
        cold_rows = frames["test"].filter(pl.col("cold_start"))
        metrics |= _metrics(cold_rows, spec, cal["test"][cold], "test_cold_", exp)
    return metrics


def _save_model(
    kind: str, model: Any, meta: ModelMeta, exp: Experiment, layout: Layout, run_id: str, out: Path
) -> Path:
    """The files of `models/<kind>/` into `out`: the estimator, `ModelMeta`, the training
    history and a manifest."""
    out.mkdir(parents=True)
    model.save(out / ESTIMATOR_DIR)
    (out / META_FILE).write_text(meta.to_json())
    (out / HISTORY_FILE).write_text(json.dumps(getattr(model, "history_", [])))
    write_file_manifest(
        out,
        config_digest=exp.digest(),
        inputs={"features": layout.features},
        extra={"kind": kind, "run_id": run_id},
    )
    return out


def _publish(
    kind: str,
    exp: Experiment,
    layout: Layout,
    model_files: Path,
    predictions: pl.DataFrame,
    extra: dict[str, Any],
) -> None:
    """`models/<kind>/` with its predictions in `models/<kind>/predictions/`, published in one
    rename after the model is registered: a kill leaves the previous model and its predictions,
    or the new ones, never one of each."""
    target = layout.model_dir(kind)
    with atomic_dir(target) as tmp:
        shutil.copytree(model_files, tmp, dirs_exist_ok=True)
        predictions_dir = tmp / layout.prediction_dir(kind).relative_to(target)
        predictions_dir.mkdir()
        write_tables_into(
            predictions_dir,
            {"predictions": predictions},
            config_digest=exp.digest(),
            inputs={"features": layout.features},
            extra=extra,
        )


def _predictions(frames: dict, raw: dict, cal: dict) -> pl.DataFrame:
    """Raw and calibrated valid / test predictions by impression."""
    parts = []
    for s in ("valid", "test"):
        parts.append(
            pl.DataFrame(
                {
                    "impression_id": frames[s]["impression_id"],
                    "split": s,
                    "pctr_raw": raw[s][:, 0],
                    "pcvr_raw": raw[s][:, 1],
                    "pctcvr_raw": raw[s][:, 2],
                    "pctr": cal[s][:, 0],
                    "pcvr": cal[s][:, 1],
                    "pctcvr": cal[s][:, 2],
                }
            )
        )
    return pl.concat(parts)


def train_one(
    kind: str,
    exp: Experiment,
    layout: Layout,
    sources: Mapping[str, Source],
    spec: FeatureSpec,
    tables: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Fit `kind`, calibrate it on valid, score valid and test, log and register its run and
    publish `models/<kind>/`. `sources`: the splits in memory or on disk (`SplitTable`)."""
    tags = {
        "split_mode": spec.split.split_mode,
        "text_features": str(spec.has_text).lower(),
        "has_conversion": str(spec.has_conversion).lower(),
    }
    with stage_run(exp, "train", model=kind, tags=tags) as run:
        log_features_input(layout.features, f"{exp.name}-features", dict(spec.rows))
        model = fit_model(kind, exp, sources, spec, tables)
        _log_derived(kind, getattr(model, "derived_", {}))
        _log_sampling(kind, exp, model)
        slab = exp.train.slab_rows
        raw = {s: predict(model, sources[s], spec, kind, slab) for s in ("valid", "test")}
        frames = {s: meta_of(sources[s], spec) for s in ("valid", "test")}
        cals = fit_calibrators(raw["valid"], frames["valid"], spec, exp)
        cal = {s: calibrate(r, cals) for s, r in raw.items()}
        _log_curves(kind, model)
        metrics = _all_metrics(exp, frames, spec, raw, cal)
        log_metrics(metrics)
        meta, run_id = ModelMeta(kind, spec, cals), run.info.run_id
        with tempfile.TemporaryDirectory() as staging:  # logged as `<kind>/`, then published
            files = _save_model(kind, model, meta, exp, layout, run_id, Path(staging, kind))
            info = _log_model(kind, exp, files, head_of(sources["test"], spec, kind), spec, cal)
            extra = {
                "run_id": run_id,
                "model_uri": info.model_uri,
                "registered_model": registry.model_name(exp.name, kind),
                "registered_version": info.registered_model_version,
            }
            _publish(kind, exp, layout, files, _predictions(frames, raw, cal), extra)
        log.info(
            "%s: test ctr auc %.4f logloss %.5f; cvr auc %.4f",
            kind,
            metrics.get("test_ctr_auc", float("nan")),
            metrics.get("test_ctr_logloss", float("nan")),
            metrics.get("test_cvr_auc", float("nan")),
        )
        return metrics


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("train", output=str(layout.models))
    check_lineage(layout.features, {"raw": layout.raw}, "make features")
    spec = load_spec(layout)
    # on disk, read a few columns or one slab at a time: the models hold only their inputs
    sources = {s: SplitTable.of(layout, s) for s in ("train", "valid", "test")}
    summary.rows_in = sum(t.rows for t in sources.values())
    tables = load_tables(layout, spec)
    on_ray = any(stage_engine(exp.engine, "train", k) == "ray" for k in exp.train.models)
    # one Ray for every model that trains on it (a local one starts in seconds, not for free)
    with ray_session(exp.engine) if on_ray else contextlib.nullcontext():
        for kind in exp.train.models:
            metrics = train_one(kind, exp, layout, sources, spec, tables)
            auc = metrics.get("test_ctr_auc", float("nan"))
            summary.notes[f"{kind}_test_ctr_auc"] = round(auc, 4)
    summary.rows_out = sources["test"].rows
    return summary
