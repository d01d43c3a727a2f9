"""Offline replay of bidding strategies against logged auction streams.

Reads the streams this experiment has:
- simulated data (`oracle/` present): `features/{valid,test}.parquet` (auction META), the
  calibrated predictions of every trained model (`models/<kind>/predictions/`) and the oracle's true
  probabilities. One stream per model plus one bidding with the oracle's probabilities; tuned on
  the valid period, replayed on the test period; objective conversions (see `simulated_streams`);
- the iPinYou campaign 2997 bid log (`test.theta.txt`: click, market price, pCTR per auction)
  when `data.source = "ipinyou_bidlog"` or `bidding.replay_ipinyou = true`; tuned on the first
  half, replayed on the second; objective clicks.
Every strategy in `bidding.strategies` is tuned on the tuning period and replayed at each of
`bidding.budget_fractions` of the replay period's logged cost. Writes `data/<experiment>/replay/`
(replay.parquet, oracle_share.parquet, replay.csv, replay.md, manifest) and one MLflow run (tags
stage=replay, experiment=<name>, champion=<kind>) with per strategy / budget metrics such as
`replay_ipinyou_clicks_paced_ortb_b16` or `replay_lightgbm_oracle_share_best_b16`, the tables
and a clicks/conversions-vs-budget plot.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from models.bidding import BiddingConfig, frame_value
from models.replay import Auctions, compare_strategies
from pipeline import registry
from pipeline.config import Experiment
from pipeline.io import MANIFEST, DataError, read_table, write_tables
from pipeline.lineage import check_lineage
from pipeline.replay_report import budget_plot, markdown_table, replay_metrics, simulated_shares
from pipeline.sources import REPLAY_ONLY
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import log_metrics, stage_run

log = logging.getLogger("adctr.replay")

BIDLOG_FILE = "test.theta.txt"
BIDLOG_SCHEMA = {"click": pl.Int64, "market_price": pl.Int64, "pctr": pl.Float64}
AUCTION_META = (
    "impression_id",
    "ts",
    "split",
    "market_price",
    "click",
    "conversion",
    "goal",
    "max_cpc",
    "target_cpa",
)
SPLITS = ("valid", "test")  # simulated streams: tune on valid, replay on test
SIMULATED_COLUMNS = (
    "ts",
    "market_price",
    "click",
    "conversion",
    "pctr",
    "pcvr",
    "goal",
    "max_cpc",
    "target_cpa",
    "oracle_pctr",
    "oracle_pcvr",
)
RESULT_COLUMNS = (
    "stream",
    "objective",
    "strategy",
    "budget_fraction",
    "budget",
    "auctions",
    "impressions",
    "clicks",
    "conversions",
    "spend",
    "ecpc",
    "cpa",
    "win_rate",
    "base_strategy",
    "paced",
    "base_bid",
    "mean_value",
    "c",
    "lam",
)


@dataclass(frozen=True)
class StreamPair:
    """One auction stream cut in time order: parameters are tuned on `tuning`, scored on `test`.

    Both frames carry `value`, `market_price`, `click` and (optionally) `conversion`.
    """

    name: str
    tuning: pl.DataFrame
    test: pl.DataFrame
    objective: str = "clicks"  # clicks | conversions: what tuning maximises


def read_bidlog(path: Path) -> pl.DataFrame:
    """The iPinYou bid log (`<path>/test.theta.txt` or the file itself) with a `ts` = row order."""
    path = Path(path)
    file = path / BIDLOG_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{file}: iPinYou bid log not found (set bidding.ipinyou_path)")
    try:
        frame = pl.read_csv(
            file,
            separator=" ",
            has_header=False,
            new_columns=list(BIDLOG_SCHEMA),
            schema_overrides=BIDLOG_SCHEMA,
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{file}: not a bid log (click price pctr per line): {first}") from None
    if frame.width != len(BIDLOG_SCHEMA) or frame.null_count().sum_horizontal().item():
        raise DataError(f"{file}: expected 3 space-separated columns (click price pctr), no gaps")
    return frame.with_row_index("ts")


def split_in_time(frame: pl.DataFrame, tuning_fraction: float = 0.5) -> tuple[pl.DataFrame, ...]:
    """(earlier, later) by `ts`; the first `tuning_fraction` of the rows tune."""
    frame = frame.sort("ts", maintain_order=True)
    cut = int(frame.height * tuning_fraction)
    return frame.head(cut), frame.slice(cut)


def ipinyou_streams(path: Path) -> list[StreamPair]:
    """The 2997 bid log as one stream: value = the logged pCTR, objective clicks."""
    frame = read_bidlog(path).with_columns(value=pl.col("pctr"), conversion=pl.lit(0))
    tuning, test = split_in_time(frame)
    return [StreamPair("ipinyou", tuning, test, "clicks")]


def _tuning_and_test(frame: pl.DataFrame, tuning_fraction: float) -> tuple[pl.DataFrame, ...]:
    """valid -> tuning and test -> replay when the frame has a `split` column, else by time."""
    if "split" in frame.columns:
        split = pl.col("split")
        parts = (frame.filter(split == s).sort("ts", maintain_order=True) for s in SPLITS)
        return tuple(parts)
    return split_in_time(frame, tuning_fraction)


def simulated_streams(
    frame: pl.DataFrame, model: str = "model", oracle: bool = True, tuning_fraction: float = 0.5
) -> list[StreamPair]:
    """Bidding with a model's predictions (stream `model`) and, when `oracle`, with the true
    probabilities (stream "oracle") over the same simulated auctions; objective conversions.

    `frame` has `SIMULATED_COLUMNS` (the oracle ones only when `oracle`). The value is
    `expected_value` of (`pctr`, `pcvr`) or of (`oracle_pctr`, `oracle_pcvr`). With a `split`
    column the valid rows tune and the test rows replay; without, the first `tuning_fraction`
    of the rows in time order tune.

    Mixed goals: each auction is bid on its own ad's goal (`pCTR * max_cpc` for CPC ads,
    `pCTR * pCVR * target_cpa` for CPA ads, the same currency), while tuning and the headline
    score count every conversion won, whatever the goal of the ad that won it (clicks are
    reported beside). A missing pCVR (no CVR model) values CPA auctions at 0.
    """
    needed = SIMULATED_COLUMNS if oracle else SIMULATED_COLUMNS[:-2]
    missing = sorted(set(needed) - set(frame.columns))
    if missing:
        raise DataError(f"simulated replay stream: missing columns {missing}")
    sources = [(model, "pctr", "pcvr")] + ([("oracle", "oracle_pctr", "oracle_pcvr")] * oracle)
    pairs = []
    for name, ctr, cvr in sources:
        value = np.nan_to_num(frame_value(frame, ctr, cvr), nan=0.0)
        valued = frame.with_columns(value=pl.Series(value))
        tuning, test = _tuning_and_test(valued, tuning_fraction)
        pairs.append(StreamPair(name, tuning, test, "conversions"))
    return pairs


def simulated_frame(layout: Layout, kind: str) -> pl.DataFrame:
    """Valid and test auctions (features META) with `kind`'s calibrated predictions and the
    oracle's probabilities; a DataError when predictions or oracle rows are missing."""
    meta = pl.concat(
        [read_table(layout.features, s).select(AUCTION_META) for s in ("valid", "test")]
    )
    pred = read_table(layout.prediction_dir(kind), "predictions").select(
        "impression_id", "split", "pctr", "pcvr"
    )
    oracle = read_table(layout.oracle, "impressions").select(
        "impression_id", oracle_pctr="p_click", oracle_pcvr="p_conversion"
    )
    frame = (
        meta.join(pred, on=["impression_id", "split"], how="left")
        .join(oracle, on="impression_id", how="left")
        .sort("ts", "impression_id")  # a total order: the same stream on every run
        .collect()
    )
    for col, where in (("pctr", layout.prediction_dir(kind)), ("oracle_pctr", layout.oracle)):
        if frame[col].null_count():
            raise DataError(
                f"{where}: no prediction for {frame[col].null_count():,} of {frame.height:,} "
                "valid/test impressions; rerun `make train`"
            )
    if frame["market_price"].null_count():
        raise DataError(f"{layout.features}: market_price is null; nothing to replay against")
    return frame


def model_kinds(exp: Experiment, layout: Layout) -> list[str]:
    """The trained models (in `train.models` order) whose predictions are on disk."""
    return [k for k in exp.train.models if (layout.prediction_dir(k) / MANIFEST).is_file()]


def replay_streams(pairs: list[StreamPair], cfg: BiddingConfig) -> pl.DataFrame:
    """Tune and replay every strategy on every stream; one row per stream/strategy/budget."""
    tables = []
    for pair in pairs:
        log.info(
            "replay %s: tuning on %d auctions, replaying %d, %d strategies x %d budgets",
            pair.name,
            pair.tuning.height,
            pair.test.height,
            len(cfg.strategies),
            len(cfg.budget_fractions),
        )
        table = compare_strategies(
            Auctions.from_frame(pair.tuning), Auctions.from_frame(pair.test), cfg, pair.objective
        )
        tables.append(
            table.with_columns(stream=pl.lit(pair.name), objective=pl.lit(pair.objective))
        )
    return pl.concat(tables, how="vertical").select(RESULT_COLUMNS)


def replay_ipinyou(
    path: Path,
    budgets: tuple[float, ...] = (1 / 64, 1 / 32, 1 / 16, 1 / 8),
    cfg: BiddingConfig | None = None,
) -> pl.DataFrame:
    """Tune on the first half of the 2997 bid log, replay the second, at `budgets` of its cost."""
    cfg = dataclasses.replace(cfg or BiddingConfig(), budget_fractions=tuple(budgets))
    return replay_streams(ipinyou_streams(path), cfg)


def _ipinyou_path(exp: Experiment) -> Path | None:
    if exp.data.source in REPLAY_ONLY:
        return Path(exp.data.path or exp.bidding.ipinyou_path)
    if exp.bidding.replay_ipinyou:
        return Path(exp.bidding.ipinyou_path)
    return None


def collect_streams(exp: Experiment) -> list[StreamPair]:
    """Every stream this experiment replays (empty: nothing to do)."""
    pairs: list[StreamPair] = []
    path = _ipinyou_path(exp)
    if path is not None:
        pairs += ipinyou_streams(path)
    layout = Layout.of(exp)
    if (layout.oracle / MANIFEST).is_file():
        kinds = model_kinds(exp, layout)
        if not kinds:
            raise DataError(f"{layout.models}: no model predictions; run `make train` first")
        for i, kind in enumerate(kinds):
            check_lineage(layout.prediction_dir(kind), {"features": layout.features}, "make train")
            pairs += simulated_streams(simulated_frame(layout, kind), kind, oracle=i == 0)
    return pairs


def run(exp: Experiment) -> StageSummary:
    """Replay every stream the experiment names; skip cleanly when there is none."""
    summary = StageSummary("replay")
    pairs = collect_streams(exp)
    if not pairs:
        log.info(
            "replay: nothing to replay for '%s' (data.source=%s; set bidding.replay_ipinyou=true "
            "for the iPinYou 2997 bid log); skipped",
            exp.name,
            exp.data.source,
        )
        summary.notes["skipped"] = "no-stream"
        return summary
    table = replay_streams(pairs, exp.bidding)
    layout = Layout.of(exp)
    champion = registry.champion_kind(layout)
    shares = simulated_shares(table, champion)
    out = layout.replay
    md, csv = markdown_table(table, shares), table.write_csv()
    tables = {"replay": table} | ({} if shares is None else {"oracle_share": shares})
    write_tables(
        out,
        tables,
        config_digest=exp.digest(),
        inputs={"features": layout.features} if shares is not None else None,
        extra={"streams": [p.name for p in pairs], "champion": champion},
        files={"replay.csv": csv.encode(), "replay.md": md.encode()},
    )
    with stage_run(exp, "replay", tags={"champion": champion or ""}):
        log_metrics(replay_metrics(table, shares))
        mlflow.log_figure(budget_plot(table), "plots/replay_budget.png")
        mlflow.log_text(csv, "tables/replay.csv")
        mlflow.log_text(md, "tables/replay.md")
        if shares is not None:
            mlflow.log_text(shares.write_csv(), "tables/oracle_share.csv")
    log.info("replay table:\n%s", md)
    summary.rows_in = sum(p.tuning.height + p.test.height for p in pairs)
    summary.rows_out = table.height
    summary.output = str(out)
    return summary
