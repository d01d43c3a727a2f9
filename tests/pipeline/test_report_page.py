"""`report.html` (one page, images inlined, nothing fetched) and the run descriptions and
tables `evaluate` logs (`pipeline.evaluate_log`)."""

from __future__ import annotations

import base64
import math
import re

import numpy as np

from pipeline import evaluate_log, plots, report_page
from pipeline.report import HEADLINE_METRICS
from tests.conftest import PipelineRun, run_stage

PER_MODEL = {
    "lightgbm": {"test_ctr_auc": 0.71, "test_ctr_logloss": 0.31, "test_cvr_auc": 0.62},
    "neural": {"test_ctr_auc": 0.73, "test_ctr_logloss": 0.30, "test_cvr_auc": math.nan},
    "oracle": {"test_ctr_auc": 0.80, "test_ctr_logloss": 0.28, "test_cvr_auc": 0.70},
}
for metrics in PER_MODEL.values():
    metrics["test_placement_feed_ctr_auc"] = 0.5


def _images(n: int) -> dict[str, bytes]:
    y = np.array([0, 1, 0, 1, 1, 0])
    fig = plots.roc_curves({"m": (y, np.linspace(0, 1, 6))})
    data = report_page.png(fig)
    names = ["roc_ctr", "reliability_ctr", "lift_ctr", "slices_ctr_auc", "training_neural"]
    names += [f"importance_lightgbm_{i}" for i in range(n)]
    return dict.fromkeys(names[:n], data)


def test_the_page_holds_everything_and_fetches_nothing() -> None:
    facts = {"chosen on": "valid_ctcvr_logloss (valid)"}
    page = report_page.evaluation_page("small", PER_MODEL, "neural", facts, _images(6))
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r"https?://|<link|<script|@import|url\(", page)  # nothing external
    # the headline table: every model and the oracle side by side, only headline rows
    assert all(f"<th>{m}</th>" in page for m in PER_MODEL)
    assert "test_ctr_auc" in page and "placement_feed" not in page
    assert "champion: <b>neural</b>" in page
    # plots grouped under the sections that claim them
    assert page.index("Calibration") < page.index('alt="reliability_ctr"')
    assert page.index("Ranking") < page.index('alt="roc_ctr"') < page.index("Slices")


def test_an_evaluation_without_plots_or_champion_still_renders() -> None:
    page = report_page.evaluation_page("x", PER_MODEL, None, {}, {})
    assert "none qualifies" in page and "<img" not in page


def test_headline_keys_and_the_oracles_names() -> None:
    assert evaluate_log.headline(PER_MODEL["neural"]) == {
        k: PER_MODEL["neural"][k] for k in HEADLINE_METRICS if k in PER_MODEL["neural"]
    }
    named = evaluate_log.oracle_named(PER_MODEL["oracle"])
    assert named["oracle_ctr_auc"] == 0.80 and "oracle_placement_feed_ctr_auc" not in named


def test_the_long_table_keeps_every_finite_metric() -> None:
    table = evaluate_log.long_table(PER_MODEL)
    assert set(table) == {"model", "metric", "value"}
    rows = list(zip(table["model"], table["metric"], table["value"], strict=True))
    assert ("neural", "test_placement_feed_ctr_auc", 0.5) in rows
    assert not any(m == "neural" and k == "test_cvr_auc" for m, k, _ in rows)  # NaN: dropped
    assert len(rows) == sum(sum(math.isfinite(v) for v in m.values()) for m in PER_MODEL.values())


def test_ranks_follow_the_mode() -> None:
    values = {"a": 0.3, "b": 0.1, "c": None, "d": math.nan}
    assert evaluate_log.ranks(values, "min") == {"b": (1, 2), "a": (2, 2)}
    assert evaluate_log.ranks(values, "max") == {"a": (1, 2), "b": (2, 2)}


def test_a_model_note_gives_its_rank_and_gap_to_the_oracle() -> None:
    note = evaluate_log.model_note(
        "neural", PER_MODEL["neural"], PER_MODEL["oracle"], (1, 2, "valid_ctr_logloss"), "neural"
    )
    assert note.startswith("**neural** — the champion")
    assert "Rank 1 of 2 on `valid_ctr_logloss`" in note
    assert "| test_ctr_auc | 0.7300 | 0.8000 | -0.0700 |" in note
    assert "| test_cvr_auc | – | 0.7000 | – |" in note
    plain = evaluate_log.model_note("lightgbm", PER_MODEL["lightgbm"], None, None, "neural")
    assert "champion" not in plain.splitlines()[0] and "Rank" not in plain


def test_make_report_prints_the_page_or_says_to_evaluate(small_pipeline, tmp_path) -> None:
    proc = run_stage("report", small_pipeline)
    assert (small_pipeline.root / "evaluation" / "report.html").as_uri() in proc.stdout
    fresh = PipelineRun(tmp_path / "data", small_pipeline.tracking_uri, small_pipeline.env)
    proc = run_stage("report", fresh, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no report yet; run `make evaluate EXP=small` first" in proc.stderr
