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
from pipeline import evaluate_figures, evaluate_log, registry, report, report_page
from pipeline.atomic import atomic_dir
from pipeline.config import Experiment
from pipeline.datasets import labels, load_meta, load_spec
from pipeline.io import MANIFEST, DataError, read_manifest, read_table, write_file_manifest
from pipeline.lineage import check_lineage, check_same_run
from pipeline.scoring import task_metrics
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import stage_run, use_experiment
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
    exp_id = use_experiment(exp)
    for kind in kinds:
        cal[kind], raw[kind] = _predictions(layout, kind, test)
        per_model[kind] = model_metrics(test, spec, cal[kind], exp)
    oracle = _oracle(layout, test)
    if oracle is not None:
        per_model[report_page.ORACLE] = model_metrics(test, spec, oracle, exp)
    selection = _selection_metrics(layout, spec, kinds, exp)
    champion = registry.best_model(exp.evaluate, selection)
    barred = registry.not_eligible(selection)
    metric, mode = registry.ranking_metric(exp.evaluate, selection.values())
    values = {k: m.get(metric) for k, m in selection.items()}
    places = evaluate_log.ranks(values, mode)
    for kind in kinds:
        place = places.get(kind)
        truth = per_model.get(report_page.ORACLE)
        note = evaluate_log.model_note(
            kind, per_model[kind], truth, (*place, metric) if place else None, champion
        )
        extra = {registry.BASE_RATE_METRIC: selection[kind][registry.BASE_RATE_METRIC]}
        evaluate_log.log_model_run(
            manifests[kind]["run_id"], kind, per_model[kind], truth, extra, note
        )
    evaluate_log.mark_champion(exp_id, {k: manifests[k]["run_id"] for k in kinds}, champion)
    evaluate_log.save_headline_view(exp_id, metric, mode)
    for kind, why in barred.items():
        log.warning("%s cannot be champion: %s", kind, why)
        _flag(manifests[kind]["run_id"], why)
    if not champion:
        log.warning("no model qualifies as champion: `export` will refuse")
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
        evaluate_log.log_comparison_run(per_model, tables["comparison"][0])
        versions = {k: manifests[k].get("registered_version") for k in kinds}
        uri = registry.set_champion(exp.name, champion, versions)
        if champion:
            mlflow.set_tags({"champion_model_uri": uri, "champion_metric": metric})
        else:
            mlflow.set_tag("no_champion_reason", "; ".join(barred.values())[:5000])
        figures = evaluate_figures.figures(test, spec, cal, raw, per_model, layout, exp)
        images = {name: report_page.png(fig) for name, fig in figures.items()}
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        images |= {n: report_page.png(f) for n, f in report_page.bidding_figures(layout).items()}
        facts = {"chosen on": f"{metric} (valid)", "test rows": f"{test.height:,}"}
        page = report_page.evaluation_page(exp.name, per_model, champion, facts, images)
        Path(tmp, report_page.REPORT_FILE).write_text(page)
        mlflow.log_artifact(str(Path(tmp, report_page.REPORT_FILE)))
        for name, (md, html) in tables.items():
            for ext, text in (("md", md), ("html", html)):
                Path(tmp, f"{name}.{ext}").write_text(text)
                mlflow.log_artifact(str(Path(tmp, f"{name}.{ext}")), "tables")
        with atomic_dir(layout.evaluation) as out:
            for name, (md, html) in tables.items():
                (out / f"{name}.md").write_text(md)
                (out / f"{name}.html").write_text(html)
            (out / report_page.REPORT_FILE).write_text(page)
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
