"""Offline replay of bidding strategies against logged auction streams.

Reads the streams this experiment asks for: the iPinYou campaign 2997 bid log
(`test.theta.txt`: click, market price, pCTR per auction) when `data.source = "ipinyou_bidlog"`
or `bidding.replay_ipinyou = true`; the simulated stream (model and oracle predictions) is a
second source that plugs in through `simulated_streams`. Each stream is split in time order into
a tuning period and a replay period; every strategy in `bidding.strategies` is tuned on the first
and replayed on the second at each of `bidding.budget_fractions` of the replay period's logged
cost. Writes `data/<experiment>/replay/` (replay.parquet, replay.csv, replay.md, manifest) and
one MLflow run (tags stage=replay, experiment=<name>) with per strategy / budget metrics such as
`replay_ipinyou_clicks_paced_ortb_b16`, the table and a clicks-vs-budget plot.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mlflow
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from models.bidding import BiddingConfig, expected_value
from models.replay import Auctions, compare_strategies
from pipeline.config import Experiment
from pipeline.io import DataError, write_tables
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import log_metrics, stage_run

log = logging.getLogger("adctr.replay")

BIDLOG_FILE = "test.theta.txt"
BIDLOG_SCHEMA = {"click": pl.Int64, "market_price": pl.Int64, "pctr": pl.Float64}
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


def simulated_streams(frame: pl.DataFrame, tuning_fraction: float = 0.5) -> list[StreamPair]:
    """Model-driven and oracle bidding over the same simulated auctions (objective conversions).

    `frame` has `SIMULATED_COLUMNS`; the value is `expected_value` of the model's predictions
    (`pctr`, `pcvr`) and of the true probabilities (`oracle_pctr`, `oracle_pcvr`).
    """
    missing = sorted(set(SIMULATED_COLUMNS) - set(frame.columns))
    if missing:
        raise DataError(f"simulated replay stream: missing columns {missing}")
    cols = {c: frame[c].to_numpy() for c in ("goal", "max_cpc", "target_cpa")}
    model = expected_value(frame["pctr"].to_numpy(), frame["pcvr"].to_numpy(), **cols)
    oracle = expected_value(
        frame["oracle_pctr"].to_numpy(), frame["oracle_pcvr"].to_numpy(), **cols
    )
    pairs = []
    for name, value in (("model", model), ("oracle", oracle)):
        tuning, test = split_in_time(frame.with_columns(value=pl.Series(value)), tuning_fraction)
        pairs.append(StreamPair(name, tuning, test, "conversions"))
    return pairs


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
    if exp.data.source == "ipinyou_bidlog":
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
    # the simulated source (predictions written by `train`) plugs in here via simulated_streams
    return pairs


def metric_name(stream: str, metric: str, strategy: str, fraction: float) -> str:
    """`replay_<stream>_<metric>_<strategy>_b<1/fraction>`, e.g. replay_ipinyou_clicks_ortb_b16."""
    inverse = 1.0 / fraction
    tag = (
        f"{inverse:g}"
        if abs(inverse - round(inverse)) < 1e-9
        else f"{fraction:g}".replace(".", "p")
    )
    return f"replay_{stream}_{metric}_{strategy}_b{tag}"


def replay_metrics(table: pl.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in table.iter_rows(named=True):  # one row per stream/strategy/budget: small
        for metric in ("clicks", "conversions", "spend", "ecpc", "cpa", "win_rate"):
            key = metric_name(row["stream"], metric, row["strategy"], row["budget_fraction"])
            out[key] = row[metric]
    return out


def budget_plot(table: pl.DataFrame) -> Figure:
    """Objective (clicks or conversions) vs budget fraction, one panel per stream."""
    streams = table["stream"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(6 * len(streams), 4.5), layout="constrained")
    for i, name in enumerate(streams):
        ax = fig.add_subplot(1, len(streams), i + 1)
        part = table.filter(pl.col("stream") == name)
        objective = part["objective"][0]
        for strategy in part["strategy"].unique(maintain_order=True).to_list():
            rows = part.filter(pl.col("strategy") == strategy).sort("budget_fraction")
            dashed = "--" if strategy.startswith("paced") else "-"
            ax.plot(rows["budget_fraction"], rows[objective], dashed, marker="o", label=strategy)
        fractions = np.sort(part["budget_fraction"].unique().to_numpy())
        ax.set_xscale("log", base=2)
        ax.set_xticks(fractions, [f"1/{1 / f:g}" for f in fractions])
        ax.set(xlabel="budget (fraction of logged cost)", ylabel=objective, title=f"{name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def markdown_table(table: pl.DataFrame) -> str:
    cols = ["stream", "strategy", "budget_fraction", "impressions", "clicks", "conversions"]
    cols += ["spend", "budget", "ecpc", "win_rate", "base_bid"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.select(cols).iter_rows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        cells[2] = f"1/{1 / row[2]:g}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    out = Layout.of(exp).root / "replay"
    md, csv = markdown_table(table), table.write_csv()
    write_tables(
        out,
        {"replay": table},
        config_digest=exp.digest(),
        extra={"streams": [p.name for p in pairs]},
        files={"replay.csv": csv.encode(), "replay.md": md.encode()},
    )
    with stage_run(exp, "replay"):
        log_metrics(replay_metrics(table))
        mlflow.log_figure(budget_plot(table), "plots/replay_budget.png")
        mlflow.log_text(csv, "tables/replay.csv")
        mlflow.log_text(md, "tables/replay.md")
    log.info("replay table:\n%s", md)
    summary.rows_in = sum(p.tuning.height + p.test.height for p in pairs)
    summary.rows_out = table.height
    summary.output = str(out)
    return summary
