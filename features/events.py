"""When each outcome became known, and the event timeline shared by every behaviour key (pure
polars; the definitions are in `features.behaviour`'s docstring).

`outcome_events` finds, for each clicked impression, the time its click and its conversion
were observed (the first matching `click` / `purchase` of the same user and ad in the behaviour
log within the window, else the window's end). `timeline` lays out every display, click and
conversion as one ranked event list that `features.behaviour` searches per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from features.config import FeatureConfig


def _first_event(
    left: pl.LazyFrame, behaviour: pl.LazyFrame, event: str, on: str, window: timedelta, out: str
) -> pl.LazyFrame:
    """Add `out`: the first `event` of the row's user and ad within [on, on + window], else
    on + window."""
    events = (
        behaviour.filter(
            (pl.col("event") == event)
            & pl.col("user_id").is_not_null()
            & pl.col("ad_id").is_not_null()
        )
        .select("user_id", "ad_id", pl.col("ts").alias(out))
        .sort(out)
    )
    return (
        left.sort(on)
        .join_asof(
            events,
            left_on=on,
            right_on=out,
            by=["user_id", "ad_id"],
            strategy="forward",
            tolerance=window,
            check_sortedness=False,
        )
        .with_columns(pl.col(out).fill_null(pl.col(on) + window))
    )


def outcome_events(
    frame: pl.DataFrame, behaviour: pl.LazyFrame | None, cfg: FeatureConfig
) -> pl.DataFrame:
    """When each outcome of `frame` became known (see the module docstring): one row per clicked
    impression, `row` (its index in `frame`), `click_ts` and `conv_ts` (null unless converted)."""
    click_window = timedelta(hours=cfg.click_window_hours)
    conv_window = timedelta(hours=cfg.conversion_window_hours)
    ids = {c: frame.schema[c] for c in ("user_id", "ad_id")}
    if behaviour is None:
        behaviour = pl.LazyFrame(schema={**ids, "ts": frame.schema["ts"], "event": pl.String})
    behaviour = behaviour.select(
        *[pl.col(c).cast(t) for c, t in ids.items()],
        pl.col("ts").cast(frame.schema["ts"]),
        "event",
    )
    clicked = (
        frame.lazy()
        .select("user_id", "ad_id", "ts", "click", "conversion")
        .with_row_index("row")
        .filter(pl.col("click") == 1)
    )
    clicked = _first_event(clicked, behaviour, "click", "ts", click_window, "click_ts")
    converted = _first_event(
        clicked.filter(pl.col("conversion") == 1).select("row", "user_id", "ad_id", "click_ts"),
        behaviour,
        "purchase",
        "click_ts",
        conv_window,
        "conv_ts",
    ).select("row", "conv_ts")
    return (
        clicked.select("row", "click_ts")
        .join(converted, on="row", how="left")
        .sort("row")
        .collect()
    )


@dataclass(frozen=True)
class Timeline:
    """Every event of `frame` (display 0, click 1, conversion 2): its frame `row`, `time`,
    `kind` and `rank` (index of its time among the sorted distinct event times `times`).
    Shared by all keys: only the key changes from one key to the next."""

    events: pl.DataFrame
    times: pl.Series
    before: dict[int, pl.Series]  # days d -> per frame row, the number of times < ts - d

    @property
    def stride(self) -> int:
        return self.times.len() + 1


def timeline(
    frame: pl.DataFrame, outcomes: pl.DataFrame, has_conv: bool, windows_days: tuple[int, ...]
) -> Timeline:
    """The events of `frame` (sorted by ts) and its `outcomes` (from `outcome_events`); for
    each shift (0 and every window), the rank below which an event is before ts - shift."""
    parts = [
        frame.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"),
            pl.col("ts").alias("time"),
            pl.lit(0, pl.Int8).alias("kind"),
        ),
        outcomes.select("row", pl.col("click_ts").alias("time"), pl.lit(1, pl.Int8).alias("kind")),
    ]
    if has_conv:
        converted = outcomes.filter(pl.col("conv_ts").is_not_null())
        parts.append(
            converted.select(
                "row", pl.col("conv_ts").alias("time"), pl.lit(2, pl.Int8).alias("kind")
            )
        )
    events = pl.concat(parts, rechunk=True)
    ordered = events["time"].sort()
    times = ordered.filter(ordered.ne_missing(ordered.shift(1)))
    rank = times.search_sorted(events["time"], side="left").cast(pl.Int64)
    before = {
        d: times.search_sorted(frame["ts"] - timedelta(days=d), side="left").cast(pl.Int64)
        for d in (0, *windows_days)
    }
    return Timeline(events.with_columns(rank.alias("rank")), times, before)


def sub_timeline(tl: Timeline, rows: pl.Series) -> Timeline:
    """The timeline of the frame rows `rows` (ascending indices into the frame of `tl`): their
    events, with `row` renumbered to positions in `rows`, and their `before` ranks. Event ranks,
    and so `stride`, stay the whole frame's: a search over the part's events finds what the
    same search over every event finds, for any key whose events all lie in `rows`."""
    height = next(iter(tl.before.values())).len()
    position = np.full(height, -1, np.int64)
    position[rows.to_numpy()] = np.arange(rows.len())
    renumbered = pl.Series("row", position).gather(tl.events["row"])
    events = tl.events.with_columns(renumbered.cast(pl.UInt32, strict=False).alias("row"))
    events = events.filter(renumbered >= 0)
    return Timeline(events, tl.times, {d: b.gather(rows) for d, b in tl.before.items()})
