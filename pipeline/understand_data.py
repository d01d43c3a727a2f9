"""The `understand` stage's inputs: the labelled queries (the dataset's own
`raw/query_annotations.parquet`, or a user's CSV / Parquet file named by `understand.annotations`)
checked row by row, cut to the train period, and split by query hash into train / valid (early
stopping) / test (reported only); and every distinct query of the log, to be labelled.

An annotation file has a `query` and an `intent` column; `sentiment` and `spans` are optional.
`spans` is a list of {start, end, label} structs (Parquet) or the same as JSON text (CSV or
Parquet), e.g. `[{"start": 0, "end": 8, "label": "BRAND"}]`: character offsets into the query,
end exclusive, label one of BRAND, PRODUCT, PRICE. Rows that cannot be used go to the
quarantine with a reason (rows in = rows used + rows of later periods + rows quarantined).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from features import schema
from features.split import assign_split
from models.spans import ENTITY_TYPES
from pipeline.config import Experiment
from pipeline.io import DataError, one_line, read_manifest, read_table
from pipeline.stage import Layout

log = logging.getLogger(__name__)

ANNOTATIONS = "query_annotations"  # the dataset's own annotations: raw/<this>.parquet
REQUIRED = ("query", "intent")
MIN_TRAIN = 20  # annotated train queries below which the stage refuses to fine-tune
MAX_BAD_SHARE = 0.5  # more quarantined rows than this share: the file is not what was meant


@dataclass(frozen=True)
class AnnotationSet:
    """Checked annotations: `parts` maps train / valid / test to frames of (query, intent,
    sentiment, spans as a list of (start, end, label)); `later`: rows whose query first occurs
    after the train period (never trained on); `bad`: the quarantined rows with a reason."""

    path: Path
    parts: dict[str, pl.DataFrame]
    later: int
    bad: pl.DataFrame
    rows_in: int


def annotations_path(exp: Experiment) -> Path | None:
    """The annotation file the stage uses: `understand.annotations` when set, else the
    dataset's own when raw/ has one with rows; None when there is none."""
    if exp.understand.annotations:
        return Path(exp.understand.annotations).expanduser()
    raw = Layout.of(exp).raw
    if read_manifest(raw).get("tables", {}).get(ANNOTATIONS, {}).get("rows", 0) > 0:
        return raw / f"{ANNOTATIONS}.parquet"
    return None


def _read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"understand.annotations: {path} does not exist")
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return pl.read_csv(path, separator=sep, infer_schema=False)
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: unreadable ({one_line(exc)})") from None
    raise DataError(f"{path}: annotations must be a .csv, .tsv or .parquet file")


def _span_list(value: Any, query: str) -> list[tuple[int, int, str]] | None:
    """The spans of one row as (start, end, label), or None when they are malformed."""
    if value is None:
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, dict):
            item = (item.get("start"), item.get("end"), item.get("label"))
        if not isinstance(item, list | tuple) or len(item) != 3:
            return None
        start, end, label = item
        if not (isinstance(start, int) and isinstance(end, int) and label in ENTITY_TYPES):
            return None
        if not 0 <= start < end <= len(query):
            return None
        out.append((start, end, str(label)))
    return sorted(out)


def check_annotations(frame: pl.DataFrame, path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usable rows: query, intent, sentiment, spans; quarantined rows with `reason`)."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: no column '{missing[0]}' in {frame.height:,} rows "
            f"(an annotation file needs {', '.join(REQUIRED)}; optional sentiment, spans)"
        )
    text = {c: frame[c].cast(pl.String) for c in ("query", "intent")}
    sentiment = frame["sentiment"].cast(pl.String) if "sentiment" in frame.columns else None
    spans = frame["spans"].to_list() if "spans" in frame.columns else [None] * frame.height
    good, bad, seen = [], [], set()
    for k in range(frame.height):
        raw, intent = text["query"][k] or "", text["intent"][k]
        query, lead = raw.strip(), len(raw) - len(raw.lstrip())
        intent = intent.strip() if intent else ""
        # spans count characters of the query as written: moved with the stripped whitespace
        parsed = _span_list(spans[k], raw) if query else []
        if parsed and lead:
            parsed = [(s - lead, e - lead, lab) for s, e, lab in parsed]
        if parsed and not all(s >= 0 and e <= len(query) for s, e, _ in parsed):
            parsed = None  # a span over the stripped whitespace
        reason = (
            "empty_query" if not query
            else "no_intent" if not intent
            else "bad_spans" if parsed is None
            else "duplicate_query" if query in seen
            else None
        )  # fmt: skip
        row = {"query": query, "intent": intent}
        if reason:
            bad.append(row | {"row": k, "reason": reason})
            continue
        seen.add(query)
        senti = sentiment[k].strip() if sentiment is not None and sentiment[k] else None
        good.append(row | {"sentiment": senti or None, "spans": parsed})
    if bad and len(bad) > MAX_BAD_SHARE * frame.height:
        reasons = pl.DataFrame(bad)["reason"].value_counts(sort=True).rows()
        raise DataError(
            f"{path}: {len(bad):,} of {frame.height:,} annotation rows unusable "
            f"({', '.join(f'{r}: {n}' for r, n in reasons)})"
        )
    span_type = pl.List(pl.Struct({"start": pl.Int32, "end": pl.Int32, "label": pl.String}))
    rows = pl.DataFrame(
        {
            "query": [r["query"] for r in good],
            "intent": [r["intent"] for r in good],
            "sentiment": [r["sentiment"] for r in good],
            "spans": pl.Series(
                [[{"start": s, "end": e, "label": lab} for s, e, lab in r["spans"]] for r in good],
                dtype=span_type,
            ),
        },
        schema={
            "query": pl.String,
            "intent": pl.String,
            "sentiment": pl.String,
            "spans": span_type,
        },
    )
    bad_frame = pl.DataFrame(
        bad, schema={"query": pl.String, "intent": pl.String, "row": pl.Int64, "reason": pl.String}
    )
    return rows, bad_frame


def log_queries(exp: Experiment) -> pl.DataFrame:
    """Every distinct query of the log (impressions and behaviour searches) with the time it
    first occurs, `in_train`: whether that is before the start of valid (when the split is
    given, not by time: whether a train impression carries it)."""
    raw = Layout.of(exp).raw
    imp = read_table(raw, "impressions", schema.IMPRESSIONS)
    given = ["split"] if "split" in imp.collect_schema().names() else []
    imp = imp.select("ts", "query", *given).filter(pl.col("query").is_not_null()).collect()
    imp, bounds = assign_split(imp, exp.split)
    beh = read_table(raw, "behaviour", schema.BEHAVIOUR).select("ts", "query")
    beh = beh.filter(pl.col("query").is_not_null()).collect()
    valid_start = bounds.get("valid_start")
    if valid_start is None:
        train = imp.filter(pl.col("split") == "train")["query"].unique()
        first = pl.concat([imp.select("ts", "query"), beh]).group_by("query").agg(pl.min("ts"))
        first = first.with_columns(pl.col("query").is_in(train.implode()).alias("in_train"))
        return first.sort("query")
    cut = datetime.fromisoformat(valid_start)
    first = pl.concat([imp.select("ts", "query"), beh]).group_by("query").agg(pl.min("ts"))
    return first.with_columns((pl.col("ts") < cut).alias("in_train")).sort("query")


def _part(query: str, seed: int, holdout: float) -> str:
    """train / valid / test by a seeded hash of the query: `holdout` is held out, half of it
    for selection (valid), half for the report (test)."""
    digest = hashlib.blake2b(f"{seed}:{query}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "test" if u < holdout / 2 else "valid" if u < holdout else "train"


def read_annotations(
    exp: Experiment, path: Path, queries: pl.DataFrame, seed: int
) -> AnnotationSet:
    """The checked annotations of `path`, their later-period rows set aside (a query that first
    occurs in the valid or test period is never trained on; one the log never shows is kept),
    the rest split into train / valid / test."""
    frame = _read(path)
    rows, bad = check_annotations(frame, path)
    known = queries.select("query", "in_train")
    rows = rows.join(known, on="query", how="left").with_columns(pl.col("in_train").fill_null(True))
    later = int((~rows["in_train"]).sum())
    rows = rows.filter(pl.col("in_train")).drop("in_train")
    holdout = exp.understand.holdout
    part = pl.Series([_part(q, seed, holdout) for q in rows["query"]], dtype=pl.String)
    rows = rows.with_columns(part.alias("part"))
    parts = {p: rows.filter(pl.col("part") == p).drop("part") for p in ("train", "valid", "test")}
    intents = parts["train"]["intent"].n_unique()
    if parts["train"].height < MIN_TRAIN or intents < 2 or parts["valid"].height == 0:
        raise DataError(
            f"{path}: {parts['train'].height:,} train-period annotations with {intents} intents "
            f"and {parts['valid'].height:,} held out for selection, of {frame.height:,} rows "
            f"({later:,} first seen after the train period, {bad.height:,} quarantined): "
            f"need at least {MIN_TRAIN} train rows over 2 intents"
        )
    return AnnotationSet(path, parts, later, bad, frame.height)
