"""Contrastive pairs for fine-tuning the text encoder, and the retrieval sets that judge it
(pure polars: frames of one period in, pair frames out).

Three kinds of (anchor -> positive ad) pairs, all from the events the caller passes (the train
period only: the finetune stage cuts the log at the start of valid):

- `query`: a search query -> the ad clicked from it (one pair per click);
- `history`: a user's last `length` viewed or clicked ads -> the next ad they clicked (the
  anchor is the mean of those ads' vectors: a user tower sharing the ad tower's encoder); the
  clicked ad itself is dropped from its own history, and a click without history makes none;
- `self`: an ad's title -> its description and keywords (for ads with few clicks), for ads
  created before the cut.

A `query` pair also draws a hard negative: an ad shown for the same query and never clicked
from it (`unclicked_pairs`). The positive of a `query` or `history` pair is the ad's fused
text, the vector every text feature uses (`features.text_columns.ad_vectors`).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl


def query_pairs(impressions: pl.DataFrame) -> pl.DataFrame:
    """(query, ad_id) per click from a search query, sorted: a pair clicked twice is drawn
    twice as often (what users click most is what a tuned encoder should rank first)."""
    return (
        impressions.lazy()
        .filter((pl.col("click") == 1) & pl.col("query").str.strip_chars().ne(""))
        .select("query", "ad_id")
        .drop_nulls()
        .sort("query", "ad_id")
        .collect()
    )


def unclicked_pairs(impressions: pl.DataFrame) -> pl.DataFrame:
    """(query, ad_id): the ads shown for a search query and never clicked from it in the
    impressions given (the hard negatives of the `query` pairs), sorted."""
    return (
        impressions.lazy()
        .filter(pl.col("query").str.strip_chars().ne("") & pl.col("ad_id").is_not_null())
        .group_by("query", "ad_id")
        .agg(pl.col("click").max())
        .filter(pl.col("click") == 0)
        .select("query", "ad_id")
        .sort("query", "ad_id")
        .collect()
    )


def _seen(behaviour: pl.DataFrame) -> pl.LazyFrame:
    """The view and click events that name an ad: what a history is made of."""
    return (
        behaviour.lazy()
        .filter(pl.col("event").is_in(["view", "click"]) & pl.col("ad_id").is_not_null())
        .select("user_id", "ts", "event", "ad_id")
    )


def history_pairs(behaviour: pl.DataFrame, length: int) -> pl.DataFrame:
    """(user_id, ts, history: List[Int64], ad_id) per click event that has an earlier viewed or
    clicked ad of the same user; `history` holds at most `length` ad ids, the latest first."""
    if length < 1:
        raise ValueError(f"history length must be >= 1, got {length}")
    events = _seen(behaviour).sort("user_id", "ts", "ad_id", maintain_order=True)
    earlier = [pl.col("ad_id").shift(k).over("user_id") for k in range(1, length + 1)]
    # the clicked ad itself is no part of its own history
    shifted = [pl.when(e != pl.col("ad_id")).then(e) for e in earlier]
    return (
        events.with_columns(pl.concat_list(shifted).list.drop_nulls().alias("history"))
        .filter(pl.col("event") == "click")
        .filter(pl.col("history").list.len() > 0)
        .select("user_id", "ts", "history", "ad_id")
        .collect()
    )


def history_targets(behaviour: pl.DataFrame, clicks: pl.DataFrame, length: int) -> pl.DataFrame:
    """(user_id, ts, history, ad_id) per impression click in `clicks` (user_id, ts, ad_id)
    whose user viewed or clicked an ad strictly before it: `history` holds the last `length`
    such ads of `behaviour`, the latest first, without the clicked ad itself."""
    events = _seen(behaviour).select(
        "user_id", pl.col("ts").alias("event_ts"), pl.col("ad_id").alias("seen")
    )
    targets = clicks.lazy().select("user_id", "ts", "ad_id").with_row_index("target")
    return (
        targets.join(events, on="user_id")
        .filter((pl.col("event_ts") < pl.col("ts")) & (pl.col("seen") != pl.col("ad_id")))
        .sort("target", "event_ts", "seen", descending=[False, True, False])
        .group_by("target", maintain_order=True)
        .agg(
            pl.col("user_id").first(),
            pl.col("ts").first(),
            pl.col("seen").head(length).alias("history"),
            pl.col("ad_id").first(),
        )
        .drop("target")
        .collect()
    )


def self_pairs(ads: pl.DataFrame, before: datetime | None) -> pl.DataFrame:
    """(anchor, positive, ad_id): title -> "description. keywords" for every ad with both,
    created before `before` (an ad without `created_at` counts as old); `ads` comes from
    `features.text.ad_texts` plus `created_at` where the data has it."""
    frame = ads.lazy()
    if before is not None and "created_at" in ads.columns:
        frame = frame.filter(pl.col("created_at").is_null() | (pl.col("created_at") < before))
    rest = pl.concat_str(
        [pl.col("description"), pl.col("keywords")], separator=". ", ignore_nulls=True
    )
    return (
        frame.select(pl.col("title").alias("anchor"), rest.alias("positive"), pl.col("ad_id"))
        .filter(pl.col("anchor").is_not_null() & pl.col("positive").ne(""))
        .drop_nulls()
        .sort("ad_id")
        .collect()
    )


def active_ads(ads: pl.DataFrame, end: datetime | None) -> pl.Series:
    """The ad ids live by `end` (created before it; an ad without `created_at` always is)."""
    if end is None or "created_at" not in ads.columns:
        return ads["ad_id"].sort()
    live = ads.filter(pl.col("created_at").is_null() | (pl.col("created_at") < end))
    return live["ad_id"].sort()
