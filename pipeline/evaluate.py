"""Compare the trained models on test. Reads `features/test.parquet`, `models/<kind>/predictions/`,
`models/<kind>/` and (for simulated data) `oracle/`. Writes onto each model's MLflow run the
metrics train did not log (the slices, the oracle's scores), one comparison run with plots and
the comparison table, `evaluation/` (the same table and `metrics.json` on disk), and the
registered-model alias `champion` (`pipeline.registry`)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from features.spec import FeatureSpec
from pipeline import plots, registry, report
from pipeline.atomic import atomic_dir
from pipeline.config import Experiment
from pipeline.datasets import labels, load_meta, load_spec
from pipeline.io import MANIFEST, DataError, read_manifest, read_table, write_file_manifest
from pipeline.lineage import check_lineage, check_same_run
from pipeline.mlflow_model import HISTORY_FILE, load_estimator
from pipeline.scoring import task_metrics
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import log_metrics, log_new_metrics, stage_run, use_experiment
from pipeline.train import held_out_valid

log = logging.getLogger(__name__)


def _slices(test: pl.DataFrame, cfg: Experiment) -> dict[str, np.ndarray]:
    """Named boolean masks over the test rows: cold start, placement (and `search`: the
    placements named search*), position bucket, users."""
    out = {"cold": test["cold_start"].to_numpy(), "warm": ~test["cold_start"].to_numpy()}
    placements = sorted(test["placement"].drop_nulls().unique().to_list())
    for p in placements:
        out[f"placement_{p}"] = (test["placement"] == p).to_numpy()
    search = [p for p in placements if p.startswith("search")]
    if search:  # every search placement together (where a query comes with the impression)
        out["search"] = test["placement"].is_in(search).fill_null(False).to_numpy()
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
    test: pl.DataFrame, spec: FeatureSpec, p: np.ndarray, mask: np.ndarray, prefix: str, bins: int
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
        n_bins=bins,
    )


def model_metrics(
    test: pl.DataFrame, spec: FeatureSpec, p: np.ndarray, exp: Experiment
) -> dict[str, float]:
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


def _predictions(
    layout: Layout, kind: str, rows: pl.DataFrame, split: str = "test"
) -> tuple[np.ndarray, ...]:
    """(calibrated, raw) predictions of `kind` for `rows` of `split`, row-aligned."""
    pred = read_table(layout.prediction_dir(kind), "predictions").filter(pl.col("split") == split)
    joined = rows.select("impression_id").join(pred.collect(), on="impression_id", how="left")
    cal = joined.select("pctr", "pcvr", "pctcvr").to_numpy()
    raw = joined.select("pctr_raw", "pcvr_raw", "pctcvr_raw").to_numpy()
    return cal, raw


def _selection_metrics(
    layout: Layout, spec: FeatureSpec, kinds: list[str], exp: Experiment
) -> dict[str, dict[str, float]]:
    """What the champion is chosen on, per model: valid metrics only, of the valid predictions
    calibrated out of fold (`train.held_out_valid`, the same values train logged). No test
    metric is in here, so none can choose."""
    valid = load_meta(layout, spec, "valid")
    everything = np.ones(valid.height, dtype=bool)
    out = {}
    for kind in kinds:
        _, raw = _predictions(layout, kind, valid, "valid")
        held = held_out_valid(raw, valid, spec, exp)
        scored = _score(valid, spec, held, everything, "valid_", exp.evaluate.ece_bins)
        scored[registry.BASE_RATE_METRIC] = scored["valid_ctr_ne"]
        out[kind] = scored
    return out


def _flag(run_id: str, why: str) -> None:
    """Tag a model run that cannot be champion (shown in the runs table)."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, "champion_eligible", "false")
    client.set_tag(run_id, "not_eligible_reason", why[:5000])


def _figures(test, spec, cal, raw, per_model, layout, exp) -> dict[str, object]:
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
    hist = layout.model_dir("neural") / HISTORY_FILE
    if "neural" in cal and hist.exists():
        figs["training_neural"] = plots.training_curves(
            json.loads(hist.read_text()), title="Neural training"
        )
    return figs


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("evaluate", output=str(layout.evaluation))
    spec = load_spec(layout)
    test = load_meta(layout, spec, "test")
    kinds = [k for k in exp.train.models if (layout.prediction_dir(k) / MANIFEST).exists()]
    if not kinds:
        raise DataError(f"{layout.models}: no model predictions; run `make train` first")
    for kind in kinds:  # each model and its predictions: one run, over the features on disk
        trained = [layout.prediction_dir(kind), layout.model_dir(kind)]
        for out in [d for d in trained if (d / MANIFEST).is_file()]:
            check_lineage(out, {"features": layout.features}, "make train")
        if (trained[1] / MANIFEST).is_file():
            check_same_run(trained[1], trained[0], "make train")
    cal, raw, per_model = {}, {}, {}
    manifests = {k: read_manifest(layout.prediction_dir(k)) for k in kinds}
    use_experiment(exp)
    for kind in kinds:
        cal[kind], raw[kind] = _predictions(layout, kind, test)
        per_model[kind] = model_metrics(test, spec, cal[kind], exp)
        # train logged the overall and cold-start test metrics already: only slices are new
        log_new_metrics(manifests[kind]["run_id"], per_model[kind])
    oracle = _oracle(layout, test)
    if oracle is not None:
        om = model_metrics(test, spec, oracle, exp)
        per_model["oracle"] = om
        oracle_named = {k.replace("test_", "oracle_", 1): v for k, v in om.items()}
        oracle_logged = {
            k: v
            for k, v in oracle_named.items()
            if "_ctr_" in k or k.startswith(("oracle_cvr", "oracle_ctcvr"))
        }
        for kind in kinds:
            log_new_metrics(manifests[kind]["run_id"], oracle_logged)
    selection = _selection_metrics(layout, spec, kinds, exp)
    champion = registry.best_model(exp.evaluate, selection)
    barred = registry.not_eligible(selection)
    for kind in kinds:
        log_new_metrics(
            manifests[kind]["run_id"],
            {registry.BASE_RATE_METRIC: selection[kind][registry.BASE_RATE_METRIC]},
        )
    for kind, why in barred.items():
        log.warning("%s cannot be champion: %s", kind, why)
        _flag(manifests[kind]["run_id"], why)
    if not champion:
        log.warning("no model qualifies as champion: `export` will refuse")
    metric, mode = registry.ranking_metric(exp.evaluate, selection.values())
    values = {k: m.get(metric) for k, m in selection.items()}
    chosen = {"metric": metric, "mode": mode, "values": values, "not_eligible": barred} | {
        registry.BASE_RATE_METRIC: {
            k: m.get(registry.BASE_RATE_METRIC) for k, m in selection.items()
        }
    }
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
        versions = {k: manifests[k].get("registered_version") for k in kinds}
        uri = registry.set_champion(exp.name, champion, versions)
        if champion:
            mlflow.set_tags({"champion_model_uri": uri, "champion_metric": metric})
        else:
            mlflow.set_tag("no_champion_reason", "; ".join(barred.values())[:5000])
        for name, fig in _figures(test, spec, cal, raw, per_model, layout, exp).items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        for name, (md, html) in tables.items():
            for ext, text in (("md", md), ("html", html)):
                Path(tmp, f"{name}.{ext}").write_text(text)
                mlflow.log_artifact(str(Path(tmp, f"{name}.{ext}")), "tables")
        with atomic_dir(layout.evaluation) as out:
            for name, (md, html) in tables.items():
                (out / f"{name}.md").write_text(md)
                (out / f"{name}.html").write_text(html)
            (out / layout.evaluation_metrics.name).write_text(
                json.dumps(
                    {
                        "champion": champion,
                        "run_id": run.info.run_id,
                        "metrics": per_model,
                        "selection": chosen,
                    },
                    indent=2,
                    default=lambda x: None,
                )
            )
            write_file_manifest(
                out,
                config_digest=exp.digest(),
                inputs={"features": layout.features}
                | {f"predictions_{k}": layout.prediction_dir(k) for k in kinds},
                extra={"champion": champion, "run_id": run.info.run_id},
            )
    print(tables["comparison"][0])
    summary.rows_in = summary.rows_out = test.height
    summary.notes = {"champion": champion} | ({"not_eligible": ",".join(barred)} if barred else {})
    return summary
