"""MIND (Microsoft News) -> canonical raw tables: news items are the "ads", with real text.

Reads `news.tsv` (news_id, category, subcategory, title, abstract, url, title_entities,
abstract_entities) and `behaviors.tsv` (impression_id, user_id, time, history, impressions),
tab-separated, no header, no quoting. `data.path` is their folder (or either file in it).

Mapping:
- ads: one row per news id seen anywhere (N123 -> 123); news.tsv gives category, title,
  description (abstract) and keywords (subcategory + the entity labels of title and abstract);
  ids shown or clicked but absent from news.tsv keep null text.
- impressions: one row per shown item of each log line, impression_id numbered 1.. in file
  order, request_id = the log's impression id, position = index in the list (1-based),
  click = its label, ts = the log's time (to the second). No conversions.
- behaviour: the click history (event "click") of each user, taken from their earliest log line.
  Its true times are unknown; the history predates the logs, so events are placed before the
  first log time of the dataset, one second apart, in history order.
- users: user ids only (U123 -> 123).
`ingest.only_with_text = true` keeps only shown items whose text is in news.tsv (the two files
of the subset were sampled independently: ~3% of shown items have text).
Split: by time (the logs span days; set [split] train/valid/test_days), unless configured random.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.schema import TS
from features.split import SplitConfig
from pipeline.io import DataError
from pipeline.sources.common import Ingested, nullable, random_split, resolve_split_mode
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.reader import Table, checked, pattern_check, read_delimited

NEWS = ["news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
        "abstract_entities"]  # fmt: skip
BEHAVIORS = ["impression_id", "user_id", "time", "history", "impressions"]
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
LABEL = r'"Label":\s*"(?:[^"\\]|\\.)*"'


def _files(path: Path) -> tuple[Path, Path]:
    folder = path.parent if path.is_file() else path
    news, behaviors = folder / "news.tsv", folder / "behaviors.tsv"
    for p in (news, behaviors):
        if not p.is_file():
            raise DataError(f"{p}: file not found (MIND needs news.tsv and behaviors.tsv)")
    return news, behaviors


def read_news(path: Path, cfg: IngestConfig) -> Table:
    table = read_delimited(path, separator="\t", columns=NEWS, max_rows=cfg.max_rows)
    checks = [
        pattern_check("news_id", r"^N\d+$", "a news id (N<digits>)"),
        (~pl.col("news_id").is_first_distinct(), "duplicate news_id"),
    ]
    return checked(table, checks, cfg)


def read_behaviors(path: Path, cfg: IngestConfig) -> Table:
    table = read_delimited(path, separator="\t", columns=BEHAVIORS, max_rows=cfg.max_rows)
    checks = [
        pattern_check("impression_id", r"^\d+$", "an integer"),
        (~pl.col("impression_id").is_first_distinct(), "duplicate impression_id"),
        pattern_check("user_id", r"^U\d+$", "a user id (U<digits>)"),
        (pl.col("time").str.strptime(TS, TIME_FORMAT, strict=False).is_null(),
         f"column 'time' is not {TIME_FORMAT}"),
        pattern_check("history", r"^(N\d+( N\d+)*)?$", "a list of news ids"),
        pattern_check("impressions", r"^N\d+-[01]( N\d+-[01])*$", "a list of <news id>-<0|1>"),
    ]  # fmt: skip
    return checked(table, checks, cfg)


def _entity_labels(col: str) -> pl.Expr:
    return (
        pl.col(col)
        .str.extract_all(LABEL)
        .list.eval(pl.element().str.replace(r'^"Label":\s*"', "").str.strip_suffix('"'))
    )


def ads_from_news(news: pl.DataFrame) -> pl.DataFrame:
    keywords = pl.concat_list(
        pl.concat_list(nullable("subcategory")).list.drop_nulls(),
        _entity_labels("title_entities"),
        _entity_labels("abstract_entities"),
    ).list.unique(maintain_order=True)
    return news.select(
        pl.col("news_id").str.slice(1).cast(pl.Int64).alias("ad_id"),
        nullable("category").alias("category"),
        nullable("title").alias("title"),
        nullable("abstract").alias("description"),
        keywords.alias("keywords"),
    )


def impressions_from_logs(logs: pl.DataFrame) -> pl.DataFrame:
    items = pl.col("impressions").str.split(" ")
    return (
        logs.select(
            pl.col("impression_id").cast(pl.Int64).alias("request_id"),
            pl.col("time").str.strptime(TS, TIME_FORMAT).alias("ts"),
            pl.col("user_id").str.slice(1).cast(pl.Int64).alias("user_id"),
            items.alias("item"),
            pl.int_ranges(1, items.list.len() + 1, dtype=pl.Int32).alias("position"),
        )
        .explode(["item", "position"])
        .with_columns(
            pl.col("item").str.extract(r"^N(\d+)-").cast(pl.Int64).alias("ad_id"),
            pl.col("item").str.extract(r"-([01])$").cast(pl.Int8).alias("click"),
        )
        .drop("item")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id"))
    )


def history_events(logs: pl.DataFrame) -> pl.DataFrame:
    """Each user's click history (from their earliest log line) as events before the logs."""
    timed = logs.with_columns(pl.col("time").str.strptime(TS, TIME_FORMAT).alias("ts"))
    start = timed["ts"].min()
    first = (
        timed.sort("ts", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .first()
        .filter(pl.col("history").str.len_bytes() > 0)
    )
    hist = pl.col("history").str.split(" ")
    events = first.select(
        pl.col("user_id").str.slice(1).cast(pl.Int64),
        hist.alias("item"),
        pl.int_ranges(hist.list.len(), 0, -1).alias("back"),
    ).explode(["item", "back"])
    return events.select(
        "user_id",
        (pl.lit(start).cast(TS) - pl.duration(seconds=pl.col("back"))).alias("ts"),
        pl.lit("click").alias("event"),
        pl.col("item").str.slice(1).cast(pl.Int64).alias("ad_id"),
    )


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    news_path, logs_path = _files(path)
    mode = resolve_split_mode(cfg, has_files=False, has_time=True)
    news, logs = read_news(news_path, cfg), read_behaviors(logs_path, cfg)
    ads = ads_from_news(news.frame)
    imps = impressions_from_logs(logs.frame)
    notes: dict[str, object] = {"shown_items": imps.height}
    if cfg.only_with_text:
        imps = imps.filter(pl.col("ad_id").is_in(ads["ad_id"].implode()))
        imps = imps.with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id")
        )
        notes["shown_items_with_text"] = imps.height
    if mode == "random":
        imps = imps.with_columns(random_split(imps.height, split))
    behaviour = history_events(logs.frame)
    seen = pl.concat([imps["ad_id"], behaviour["ad_id"]]).unique().sort()
    missing = pl.DataFrame({"ad_id": seen.filter(~seen.is_in(ads["ad_id"].implode()))})
    users = pl.DataFrame(
        {"user_id": logs.frame["user_id"].str.slice(1).cast(pl.Int64).unique().sort()}
    )
    return Ingested(
        impressions=imps,
        ads=pl.concat([ads, missing], how="diagonal"),
        users=users,
        behaviour=behaviour,
        sources=[news, logs],
        inputs={"mind_news": news_path, "mind_behaviors": logs_path},
        split_mode=mode,
        has_timestamp=True,
        has_text=bool(ads["title"].drop_nulls().len()),
        notes=notes,
    )
