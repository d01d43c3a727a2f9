"""The evaluation's plots (`evaluate` logs them on the comparison run and puts them in
`report.html`)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from features.spec import FeatureSpec
from models.importance import permutation_importance
from pipeline import plots
from pipeline.config import Experiment
from pipeline.datasets import SplitTable, labels, sampled_matrix
from pipeline.mlflow_model import HISTORY_FILE, load_estimator
from pipeline.stage import Layout
from pipeline.train_inputs import labels_of


def figures(
    test: pl.DataFrame,
    spec: FeatureSpec,
    cal: Mapping[str, np.ndarray],
    raw: Mapping[str, np.ndarray],
    per_model: Mapping[str, Mapping[str, float]],
    layout: Layout,
    exp: Experiment,
) -> dict[str, Figure]:
    """Every plot of the evaluation by name: ROC, lift, reliability before and after
    calibration, CTR AUC by slice, LightGBM's gain and the neural model's permutation
    importance, the neural training curves."""
    click, conv = labels(test, spec)
    bins = {"n_bins": exp.evaluate.reliability_bins, "ece_bins": exp.evaluate.ece_bins}
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
            **bins,
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
                **bins,
            )
    if "lightgbm" in cal and layout.model_dir("lightgbm").exists():
        est, _ = load_estimator(layout.model_dir("lightgbm"), exp.engine.num_threads)
        for task, gains in est.feature_importance().items():
            figs[f"importance_lightgbm_{task}"] = plots.feature_importance(
                list(gains), list(gains.values()), title=f"LightGBM {task.upper()} gain"
            )
    if "neural" in cal and layout.model_dir("neural").exists() and exp.evaluate.importance_rows:
        figs["importance_neural_ctr"] = _neural_importance(layout, spec, exp)
    hist = layout.model_dir("neural") / HISTORY_FILE
    if "neural" in cal and hist.exists():
        figs["training_neural"] = plots.training_curves(
            json.loads(hist.read_text()), title="Neural training"
        )
    return figs


def _neural_importance(layout: Layout, spec: FeatureSpec, exp: Experiment) -> Figure:
    """The neural model's permutation importance on a seeded sample of valid (at most
    `evaluate.importance_rows` rows, read slab by slab: a large valid split is never held
    whole): the CTR AUC lost when each input is shuffled."""
    est, _ = load_estimator(layout.model_dir("neural"), exp.engine.num_threads)
    table = SplitTable.of(layout, "valid")
    rows = min(table.rows, exp.evaluate.importance_rows)
    keep = np.ones(table.rows, dtype=bool)
    if rows < table.rows:
        keep[:] = False
        keep[np.random.default_rng(exp.data.seed).choice(table.rows, rows, replace=False)] = True
    x = sampled_matrix(table, spec, "neural", keep, None, exp.train.slab_rows)
    click, _ = labels_of(table, spec)
    drops = permutation_importance(est.predict_proba, x, click[keep], exp.data.seed)
    title = f"Neural CTR permutation importance (valid, {rows:,} rows)"
    return plots.permutation_bars(list(drops), list(drops.values()), title=title)
