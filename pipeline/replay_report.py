"""The replay stage's report: MLflow metric names and values, the model / oracle conversion
shares, the objective-vs-budget plot and the Markdown table (`pipeline.replay` runs the stage).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from models.replay import oracle_share


def metric_name(stream: str, metric: str, strategy: str, fraction: float) -> str:
    """`replay_<stream>_<metric>_<strategy>_b<1/fraction>`, e.g. replay_ipinyou_clicks_ortb_b16."""
    inverse = 1.0 / fraction
    tag = (
        f"{inverse:g}"
        if abs(inverse - round(inverse)) < 1e-9
        else f"{fraction:g}".replace(".", "p")
    )
    return f"replay_{stream}_{metric}_{strategy}_b{tag}"


def replay_metrics(table: pl.DataFrame, shares: pl.DataFrame | None = None) -> dict[str, float]:
    """Per stream/strategy/budget results, and `replay_<stream>_oracle_share_<strategy>_b<n>`."""
    out: dict[str, float] = {}
    for row in table.iter_rows(named=True):  # one row per stream/strategy/budget: small
        for metric in ("clicks", "conversions", "spend", "ecpc", "cpa", "win_rate"):
            key = metric_name(row["stream"], metric, row["strategy"], row["budget_fraction"])
            out[key] = row[metric]
    for row in (shares if shares is not None else pl.DataFrame()).iter_rows(named=True):
        key = metric_name(row["stream"], "oracle_share", row["strategy"], row["budget_fraction"])
        out[key] = row["share"]
    return out


def simulated_shares(table: pl.DataFrame, champion: str | None) -> pl.DataFrame | None:
    """`oracle_share` of conversions for every model stream (+ a `champion` flag), if any."""
    streams = set(table["stream"])
    if "oracle" not in streams or len(streams - {"oracle", "ipinyou"}) == 0:
        return None
    shares = oracle_share(table.filter(pl.col("stream") != "ipinyou"), "conversions")
    return shares.with_columns(champion=pl.col("stream") == (champion or ""))


def budget_plot(table: pl.DataFrame) -> Figure:
    """Objective (clicks or conversions) vs budget fraction, one panel per stream."""
    streams = table["stream"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(6 * len(streams), 4.5), layout="constrained")
    share_y = table["objective"].n_unique() == 1  # model vs oracle panels on one scale
    axes = fig.subplots(1, len(streams), sharey=share_y, squeeze=False)[0]
    for ax, name in zip(axes, streams, strict=True):
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


def _md(frame: pl.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    at = cols.index("budget_fraction")
    for row in frame.select(cols).iter_rows():
        cells = [f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v) for v in row]
        cells[at] = f"1/{1 / row[at]:g}"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_table(table: pl.DataFrame, shares: pl.DataFrame | None = None) -> str:
    cols = ["stream", "strategy", "budget_fraction", "impressions", "clicks", "conversions"]
    cols += ["spend", "budget", "ecpc", "win_rate", "base_bid"]
    lines = _md(table, cols)
    if shares is not None:
        lines += ["", "Conversions relative to bidding with the oracle's true probabilities:", ""]
        cols = ["stream", "champion", "budget_fraction", "strategy", "result"]
        cols += ["reference_result", "share", "best_strategy", "reference_strategy"]
        lines += _md(shares.sort("stream", "budget_fraction", "strategy"), cols)
    return "\n".join(lines) + "\n"
