"""The comparison table (winner per row, NaN as missing) and the evaluation plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from pipeline import plots
from pipeline.report import comparison_table, default_lower_is_better

METRICS = {
    "lightgbm": {
        "test_ctr_auc": 0.71,
        "test_ctr_logloss": 0.25,
        "test_ctr_calibration": 1.10,
        "test_cvr_auc": math.nan,
        "test_ctr_n": 20000.0,
    },
    "neural": {
        "test_ctr_auc": 0.73,
        "test_ctr_logloss": 0.26,
        "test_ctr_calibration": 0.95,
        "test_cvr_auc": 0.64,
        "test_ctr_n": 20000.0,
    },
}


def _rows(markdown: str) -> dict[str, list[str]]:
    out = {}
    for line in markdown.splitlines():
        if line.startswith("| test_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_markdown_marks_winner_per_row() -> None:
    md, _ = comparison_table(METRICS)
    assert md.splitlines()[0] == "| metric | lightgbm | neural |"
    rows = _rows(md)
    assert rows["test_ctr_auc"] == ["0.7100", "**0.7300 ★**"]  # higher is better
    assert rows["test_ctr_logloss"] == ["**0.2500 ★**", "0.2600"]  # lower is better
    assert rows["test_ctr_calibration"] == ["1.1000", "**0.9500 ★**"]  # closest to 1
    # one defined value: nothing to win; NaN shown as missing
    assert rows["test_cvr_auc"] == ["–", "0.6400"]
    assert rows["test_ctr_n"] == ["20,000", "20,000"]  # counts have no winner
    assert list(rows) == list(METRICS["lightgbm"])  # rows keep their order


def test_explicit_lower_is_better_set_and_ties() -> None:
    metrics = {"a": {"x": 1.0, "y": 0.5}, "b": {"x": 2.0, "y": 0.5}, "c": {"y": 0.1}}
    md, _ = comparison_table(metrics, lower_is_better={"x"})
    rows = {line.split("|")[1].strip(): line for line in md.splitlines()[2:] if "|" in line}
    assert "**1.0000 ★**" in rows["x"] and "2.0000 ★" not in rows["x"]
    # y: higher is better, a and b tie: both marked; c lacks x: missing
    assert rows["y"].count("★") == 2
    assert rows["x"].rstrip(" |").endswith("–")


def test_reference_columns_do_not_compete() -> None:
    metrics = {**METRICS, "oracle": {"test_ctr_auc": 0.80, "test_ctr_logloss": 0.20}}
    md, _ = comparison_table(metrics, references={"oracle"})
    rows = _rows(md)
    assert rows["test_ctr_auc"] == ["0.7100", "**0.7300 ★**", "0.8000"]
    assert rows["test_ctr_logloss"] == ["**0.2500 ★**", "0.2600", "0.2000"]
    assert "reference): oracle" in md


def test_legend_names_directions_once() -> None:
    md, _ = comparison_table(METRICS)
    legend = md.strip().splitlines()[-1]
    assert "lower is better: logloss;" in legend
    assert "closest to 1 for calibration" in legend


def test_html_table() -> None:
    _, page = comparison_table(METRICS, title="small <test>")
    assert page.startswith("<!DOCTYPE html>")
    assert "<th>lightgbm</th><th>neural</th>" in page
    assert '<td class="winner"><b>0.7300 ★</b></td>' in page
    assert "small &lt;test&gt;" in page
    assert page.count('class="winner"') == 3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_ctr_auc", False),
        ("test_cold_ctr_gauc", False),
        ("test_ctr_ne", True),
        ("test_ctcvr_logloss", True),
        ("test_ctr_ece", True),
        ("test_neural_auc", False),
        ("test_ctr_positives", None),
    ],
)
def test_default_directions(name: str, expected: bool | None) -> None:
    assert default_lower_is_better(name) is expected


@pytest.fixture
def scored() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    truth = rng.beta(1, 20, 500)
    y = (rng.uniform(size=500) < truth).astype(int)
    return {"lightgbm": (y, truth * 1.2), "neural": (y, np.clip(truth + 0.01, 0, 1))}


def test_plots_return_titled_figures(scored, tmp_path) -> None:
    figures = {
        "roc": plots.roc_curves(scored),
        "reliability": plots.reliability(scored, what="CVR"),
        "lift": plots.lift_chart(scored),
        "slices": plots.metric_by_slice(
            {"lightgbm": {"all": 0.7, "cold": math.nan}, "neural": {"all": 0.72, "cold": 0.6}},
            metric="test_ctr_auc",
        ),
        "importance": plots.feature_importance([f"f{i}" for i in range(30)], np.arange(30.0)),
        "training": plots.training_curves(
            [{"epoch": e, "train_loss": 1 / e, "valid_ctr_auc": 0.6 + e / 100} for e in (1, 2, 3)]
        ),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        ax = fig.axes[0]
        assert ax.get_title() or fig.get_suptitle(), name
        assert any(a.get_xlabel() for a in fig.axes) and ax.get_ylabel(), name
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name
    roc_labels = [t.get_text() for t in figures["roc"].axes[0].get_legend().get_texts()]
    assert roc_labels[0].startswith("lightgbm (AUC 0.")
    importance = figures["importance"].axes[0]
    assert [t.get_text() for t in importance.get_yticklabels()][:2] == ["f29", "f28"]
    assert len(importance.patches) == 25
    assert len(figures["training"].axes) == 2  # loss panel and AUC panel


def test_plots_survive_degenerate_input() -> None:
    one_class = {"m": (np.zeros(4, dtype=int), np.full(4, 0.2))}
    empty = {"m": (np.zeros(0), np.zeros(0))}
    for curves in (one_class, empty):
        for fig in (
            plots.roc_curves(curves),
            plots.reliability(curves),
            plots.lift_chart(curves),
        ):
            assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="names"):
        plots.feature_importance(["a"], [1.0, 2.0])
