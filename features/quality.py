"""Row checks on raw impressions: what cannot be featurised goes to quarantine with a reason."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

REASONS = (
    "null_impression_id",
    "null_ts",
    "null_user_id",
    "null_ad_id",
    "bad_click",
    "bad_conversion",
    "unknown_ad",
    "unknown_user",
    "duplicate_impression_id",
)


def _known(table: pl.LazyFrame | None, column: str) -> pl.Series | None:
    """The distinct ids of a table, or None when there is no table (or it is empty)."""
    if table is None:
        return None
    ids = table.select(pl.col(column).drop_nulls().unique()).collect()[column]
    return ids if len(ids) else None


def flag_rows(
    impressions: pl.LazyFrame,
    ads: pl.LazyFrame | None,
    users: pl.LazyFrame | None,
    required: Sequence[str] = ("ts", "user_id", "ad_id"),
) -> pl.LazyFrame:
    """The impressions with a `reason` column: null for good rows, else the first that applies.

    Reasons in order: null_impression_id; null_<col> for each `required` column (ts, user_id,
    ad_id: pass only the ones the dataset has); bad_click (not 0/1); bad_conversion (not
    0/1/null, or 1 without a click); unknown_ad / unknown_user (an id absent from the ads /
    users table; skipped when that table is None or empty); duplicate_impression_id (every
    occurrence after the first, in row order). Row order is kept.
    """
    ad_ids, user_ids = _known(ads, "ad_id"), _known(users, "user_id")
    conv = pl.col("conversion")
    click = pl.col("click")
    chain = pl.when(pl.col("impression_id").is_null()).then(pl.lit("null_impression_id"))
    for col in required:
        chain = chain.when(pl.col(col).is_null()).then(pl.lit(f"null_{col}"))
    chain = (
        chain.when(click.is_null() | ~click.is_in([0, 1]))
        .then(pl.lit("bad_click"))
        .when(conv.is_not_null() & (~conv.is_in([0, 1]) | (conv > click)))
        .then(pl.lit("bad_conversion"))
    )
    if ad_ids is not None:
        chain = chain.when(~pl.col("ad_id").is_in(ad_ids.implode())).then(pl.lit("unknown_ad"))
    if user_ids is not None:
        chain = chain.when(~pl.col("user_id").is_in(user_ids.implode())).then(
            pl.lit("unknown_user")
        )
    repeated = ~pl.col("impression_id").is_first_distinct()
    chain = chain.when(repeated).then(pl.lit("duplicate_impression_id"))
    return impressions.with_columns(chain.otherwise(pl.lit(None, dtype=pl.String)).alias("reason"))


def split_quarantine(
    impressions: pl.LazyFrame,
    ads: pl.LazyFrame | None,
    users: pl.LazyFrame | None,
    required: Sequence[str] = ("ts", "user_id", "ad_id"),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows, quarantined rows + `reason`), collected once into one chunk per column.
    Every input row lands in exactly one of them, in input order. See `flag_rows` for the
    reasons."""
    flagged = flag_rows(impressions, ads, users, required).collect().rechunk()
    bad = flagged.filter(pl.col("reason").is_not_null())
    good = flagged.filter(pl.col("reason").is_null()) if bad.height else flagged
    return good.drop("reason"), bad


def reason_counts(bad: pl.DataFrame) -> dict[str, int]:
    """Quarantined rows per reason, most frequent first (ties by name)."""
    counts = bad.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    return dict(counts.iter_rows())


def unusable(frame: pl.DataFrame, bad: pl.DataFrame, rows_in: int, max_bad: float) -> str | None:
    """Why the rows left cannot train and evaluate a model, or None: more than `max_bad` of
    the `rows_in` impressions quarantined (`bad`, with a reason), an empty train / valid / test
    part (`frame`'s `split`), or train clicks all 0 or all 1."""
    if rows_in and bad.height > max_bad * rows_in:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in reason_counts(bad).items())
        return (
            f"{bad.height:,} of {rows_in:,} impressions quarantined ({reasons}), more than "
            f"features.max_quarantine_fraction = {max_bad}"
        )
    rows = {s: int(frame["split"].eq(s).sum()) for s in ("train", "valid", "test")}
    empty = [s for s, n in rows.items() if n == 0]
    if empty:
        counts = ", ".join(f"{s} {n:,}" for s, n in rows.items())
        return (
            f"the split leaves {' and '.join(empty)} empty ({counts} rows); set [split] "
            '(train_days / valid_days / test_days, or by = "fraction") or ingest.split_mode '
            "to fit the log"
        )
    clicks = frame.filter(pl.col("split") == "train")["click"]
    positives = int(clicks.sum())
    if positives in (0, len(clicks)):
        label = "no click" if positives == 0 else "a click on every row"
        return (
            f"column 'click' has {label} in the {len(clicks):,} train impressions: a click "
            "model needs both labels"
        )
    return None
