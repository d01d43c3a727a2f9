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
from pipeline import replay
from pipeline.config import DataConfig, Experiment
from pipeline.io import MANIFEST, DataError
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
    assert (
        replay.metric_name("ipinyou", "clicks", "ortb", 1 / 16) == "replay_ipinyou_clicks_ortb_b16"
    )
    assert (
        replay.metric_name("model", "cpa", "paced_linear", 0.3)
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
    fig = replay.budget_plot(table)
    assert len(fig.axes) == 1
    assert replay.markdown_table(table).count("\n") == table.height + 2


def test_run_skips_without_a_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = Experiment(name="t_replay_skip", data=DataConfig(root=str(tmp_path / "data")))
    with caplog.at_level("INFO", logger="adctr.replay"):
        summary = replay.run(exp)
    assert summary.notes["skipped"] == "no-stream" and summary.rows_out == 0
    assert "skipped" in caplog.text
    assert not (Layout.of(exp).root / "replay").exists()


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
    out = Layout.of(exp).root / "replay"
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
