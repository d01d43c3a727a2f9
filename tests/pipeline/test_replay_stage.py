"""Replay job: bid-log reading, stream sources, metric names, the stage run (files + MLflow), and
the real iPinYou 2997 bid log in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from models.bidding import BiddingConfig
from pipeline import registry, replay, replay_report
from pipeline.config import DataConfig, Experiment
from pipeline.io import MANIFEST, DataError, write_tables
from pipeline.stage import Layout

BIDLOG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ipinyou-2997-bidlog"
FAST = BiddingConfig(grid_points=8, pacing_slots=8, budget_fractions=(1 / 16, 1 / 4))


def write_bidlog(path: Path, n: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pctr = rng.uniform(0.001, 0.05, n)
    price = rng.integers(1, 120, n)
    click = (rng.uniform(size=n) < pctr * 4).astype(int)
    lines = [f"{c} {p} {float(t)!r}" for c, p, t in zip(click, price, pctr, strict=True)]
    path.mkdir(parents=True, exist_ok=True)
    (path / replay.BIDLOG_FILE).write_text("\n".join(lines) + "\n")
    return path


def test_read_bidlog_and_time_split(tmp_path: Path) -> None:
    folder = write_bidlog(tmp_path / "log", n=11)
    frame = replay.read_bidlog(folder)
    assert frame.columns == ["ts", "click", "market_price", "pctr"]
    assert frame.height == 11 and frame["ts"].to_list() == list(range(11))
    early, late = replay.split_in_time(frame)
    assert (early.height, late.height) == (5, 6)
    assert early["ts"].max() < late["ts"].min()
    with pytest.raises(DataError, match="not found"):
        replay.read_bidlog(tmp_path / "nowhere")
    (tmp_path / "bad.txt").write_text("0 5\n1 6\n")
    with pytest.raises(DataError):
        replay.read_bidlog(tmp_path / "bad.txt")


def test_metric_names() -> None:
    name = replay_report.metric_name("ipinyou", "clicks", "ortb", 1 / 16)
    assert name == "replay_ipinyou_clicks_ortb_b16"
    assert (
        replay_report.metric_name("model", "cpa", "paced_linear", 0.3)
        == "replay_model_cpa_paced_linear_b0p3"
    )


def test_simulated_streams_model_and_oracle_values() -> None:
    frame = pl.DataFrame(
        {
            "ts": [3, 1, 2, 0],
            "market_price": [5.0, 6.0, 7.0, 8.0],
            "click": [1, 0, 1, 0],
            "conversion": [1, 0, 0, 0],
            "pctr": [0.1, 0.2, 0.3, 0.4],
            "pcvr": [0.5, 0.5, 0.5, 0.5],
            "goal": ["cpc", "cpa", "cpc", "cpa"],
            "max_cpc": [2.0, None, 2.0, None],
            "target_cpa": [None, 10.0, None, 10.0],
            "oracle_pctr": [0.2, 0.2, 0.2, 0.2],
            "oracle_pcvr": [0.1, 0.1, 0.1, 0.1],
        }
    )
    model, oracle = replay.simulated_streams(frame)
    assert (model.name, oracle.name) == ("model", "oracle")
    assert model.objective == "conversions"
    # ts 0, 1 tune; ts 2, 3 replay
    assert model.tuning["ts"].to_list() == [0, 1] and model.test["ts"].to_list() == [2, 3]
    assert model.tuning["value"].to_list() == pytest.approx([0.4 * 0.5 * 10, 0.2 * 0.5 * 10])
    assert oracle.test["value"].to_list() == pytest.approx([0.2 * 2, 0.2 * 2])
    with pytest.raises(DataError, match="oracle_pcvr"):
        replay.simulated_streams(frame.drop("oracle_pcvr"))


def test_replay_streams_table(tmp_path: Path) -> None:
    pairs = replay.ipinyou_streams(write_bidlog(tmp_path / "log"))
    table = replay.replay_streams(pairs, FAST)
    assert table.columns == list(replay.RESULT_COLUMNS)
    assert table.height == len(FAST.strategies) * 2
    assert (table["spend"] <= table["budget"]).all()
    assert (table["auctions"] == 200).all()
    # budgets are fractions of the replay half's logged cost
    cost = pairs[0].test["market_price"].sum()
    assert set(table["budget"].round(6)) == {round(cost / 16, 6), round(cost / 4, 6)}
    fig = replay_report.budget_plot(table)
    assert len(fig.axes) == 1
    assert replay_report.markdown_table(table).count("\n") == table.height + 2


def test_run_skips_without_a_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = Experiment(name="t_replay_skip", data=DataConfig(root=str(tmp_path / "data")))
    with caplog.at_level("INFO", logger="adctr.replay"):
        summary = replay.run(exp)
    assert summary.notes["skipped"] == "no-stream" and summary.rows_out == 0
    assert "skipped" in caplog.text
    assert not Layout.of(exp).replay.exists()


@pytest.mark.slow
def test_run_writes_table_and_logs_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    folder = write_bidlog(tmp_path / "log")
    exp = Experiment(
        name="t_replay",
        data=DataConfig(source="ipinyou_bidlog", path=str(folder), root=str(tmp_path / "data")),
        bidding=FAST,
    )
    summary = replay.run(exp)
    out = Layout.of(exp).replay
    assert summary.output == str(out) and summary.rows_in == 400
    table = pl.read_parquet(out / "replay.parquet")
    assert table.height == summary.rows_out == len(FAST.strategies) * 2
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["tables"]["replay"]["rows"] == table.height
    assert manifest["streams"] == ["ipinyou"]
    assert pl.read_csv(out / "replay.csv").height == table.height

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t_replay"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["stage"] == "replay" and run.data.tags["experiment"] == "t_replay"
    const = table.filter(
        (pl.col("strategy") == "constant") & (pl.col("budget_fraction") == 1 / 16)
    )["clicks"].item()
    assert run.data.metrics["replay_ipinyou_clicks_constant_b16"] == const
    assert "replay_ipinyou_clicks_paced_ortb_b4" in run.data.metrics
    artifacts = {
        a.path
        for d in ("plots", "tables")
        for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, d)
    }
    assert {"plots/replay_budget.png", "tables/replay.csv", "tables/replay.md"} <= artifacts


@pytest.mark.slow
@pytest.mark.skipif(not (BIDLOG / replay.BIDLOG_FILE).is_file(), reason="no shared iPinYou data")
def test_ipinyou_2997_replay() -> None:
    table = replay.replay_ipinyou(BIDLOG, budgets=(1 / 64, 1 / 32, 1 / 16))
    assert set(table["budget_fraction"]) == {1 / 64, 1 / 32, 1 / 16}
    assert (table["auctions"] == 78_032).all()  # the second half of 156,063 auctions
    assert (table["spend"] <= table["budget"]).all()
    assert table["budget"].max() == pytest.approx(4_081_753 / 16)
    clicks = {
        (r["strategy"], r["budget_fraction"]): r["clicks"] for r in table.iter_rows(named=True)
    }
    # the replay half holds 290 clicks; with a sixteenth of its cost nobody gets them all
    assert max(clicks.values()) < 290
    # pacing beats the constant bid tuned the same way where the budget is not tiny
    for fraction in (1 / 32, 1 / 16):
        assert clicks[("paced_linear", fraction)] > clicks[("constant", fraction)]


def test_simulated_streams_tune_on_valid_and_replay_on_test() -> None:
    frame = pl.DataFrame(
        {
            "ts": [0, 1, 2, 3, 4],
            "split": ["valid", "test", "valid", "test", "test"],
            "market_price": [1.0] * 5,
            "click": [0, 1, 0, 1, 0],
            "conversion": [0, 1, 0, 0, 0],
            "pctr": [0.1] * 5,
            "pcvr": [np.nan, 0.5, 0.5, 0.5, 0.5],  # a missing pCVR values a CPA auction at 0
            "goal": ["cpa"] * 5,
            "max_cpc": [None] * 5,
            "target_cpa": [10.0] * 5,
        }
    )
    (only,) = replay.simulated_streams(frame, "lightgbm", oracle=False)
    assert only.name == "lightgbm" and only.objective == "conversions"
    assert only.tuning["ts"].to_list() == [0, 2] and only.test["ts"].to_list() == [1, 3, 4]
    assert only.tuning["value"].to_list() == pytest.approx([0.0, 0.5])


def write_simulated_layout(root: Path, n: int = 600, seed: int = 0) -> Layout:
    """features (valid/test META), predictions of two models, oracle, champion: tiny."""
    rng = np.random.default_rng(seed)
    p_click = rng.uniform(0.01, 0.2, n)
    p_conv = rng.uniform(0.05, 0.5, n)
    click = (rng.uniform(size=n) < p_click).astype(np.int8)
    meta = pl.DataFrame(
        {
            "impression_id": np.arange(n),
            "ts": np.arange(n),
            "split": np.where(np.arange(n) < n // 2, "valid", "test"),
            "market_price": rng.uniform(0.001, 0.02, n),
            "click": click,
            "conversion": (click * (rng.uniform(size=n) < p_conv)).astype(np.int8),
            "goal": np.where(np.arange(n) % 3 == 0, "cpa", "cpc"),
            "max_cpc": np.where(np.arange(n) % 3 == 0, np.nan, 0.8),
            "target_cpa": np.where(np.arange(n) % 3 == 0, 5.0, np.nan),
        }
    ).with_columns(pl.col("max_cpc", "target_cpa").fill_nan(None))
    layout = Layout(root)
    write_tables(
        layout.features,
        {s: meta.filter(pl.col("split") == s) for s in ("valid", "test")},
        config_digest="t",
    )
    oracle = pl.DataFrame({"impression_id": np.arange(n), "p_click": p_click})
    write_tables(
        layout.oracle, {"impressions": oracle.with_columns(p_conversion=p_conv)}, config_digest="t"
    )
    for kind, noise in (("lightgbm", 1.0), ("neural", 0.3)):
        pred = meta.select("impression_id", "split").with_columns(
            pctr=np.clip(p_click * rng.lognormal(0, noise, n), 0, 1),
            pcvr=np.clip(p_conv * rng.lognormal(0, noise, n), 0, 1),
        )
        write_tables(layout.prediction_dir(kind), {"predictions": pred}, config_digest="t")
    layout.evaluation.mkdir(parents=True)
    layout.evaluation_metrics.write_text(json.dumps({"champion": "neural"}))
    return layout


def test_collect_streams_per_model_plus_one_oracle(tmp_path: Path) -> None:
    exp = Experiment(name="sim", data=DataConfig(root=str(tmp_path)))
    layout = write_simulated_layout(tmp_path / "sim")
    pairs = replay.collect_streams(exp)
    assert [p.name for p in pairs] == ["lightgbm", "oracle", "neural"]
    assert all(p.tuning.height == 300 and p.test.height == 300 for p in pairs)
    assert (pairs[0].test["split"] == "test").all()
    assert registry.champion_kind(layout) == "neural"
    # predictions that miss impressions are an error, not a silent inner join
    pred = layout.prediction_dir("neural")
    short = pl.read_parquet(pred / "predictions.parquet").head(10)
    write_tables(pred, {"predictions": short}, config_digest="t")
    with pytest.raises(DataError, match="no prediction for 590 of 600"):
        replay.collect_streams(exp)


@pytest.mark.slow
def test_run_simulated_writes_oracle_share_and_logs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    exp = Experiment(name="t_sim", data=DataConfig(root=str(tmp_path)), bidding=FAST)
    write_simulated_layout(tmp_path / "t_sim")
    summary = replay.run(exp)
    out = Path(summary.output)
    table = pl.read_parquet(out / "replay.parquet")
    assert set(table["stream"]) == {"lightgbm", "neural", "oracle"}
    assert (table["objective"] == "conversions").all()
    shares = pl.read_parquet(out / "oracle_share.parquet")
    best = shares.filter(pl.col("strategy") == "best")
    assert best.height == 2 * len(FAST.budget_fractions)
    assert best.filter(pl.col("champion"))["stream"].unique().to_list() == ["neural"]
    # a best share is the stream's best result over the oracle's best result
    row = best.filter((pl.col("stream") == "neural") & (pl.col("budget_fraction") == 1 / 16))
    part = table.filter(pl.col("budget_fraction") == 1 / 16)
    top = {s: part.filter(pl.col("stream") == s)["conversions"].max() for s in ("neural", "oracle")}
    assert row["result"].item() == top["neural"] and row["reference_result"].item() == top["oracle"]
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["t_sim"], output_format="list")
    assert run.data.tags["champion"] == "neural"
    key = "replay_neural_oracle_share_best_b16"
    assert run.data.metrics[key] == pytest.approx(row["share"].item())
    assert "Conversions relative to bidding with the oracle" in (out / "replay.md").read_text()
