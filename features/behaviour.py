"""Point-in-time behaviour and context features (pure polars).

Definitions (tests/features/test_behaviour.py recomputes them by brute force):

- Every impression j is up to three events of each key it belongs to: its display at `ts_j`,
  its click at `click_ts_j` (clicked impressions) and its conversion at `conv_ts_j` (converted
  impressions).
- An outcome counts from the moment it is observed, never from the impression's ts: a purchase
  made two hours after an impression is unknown during those two hours, and counting it at the
  impression's ts would leak the future into every impression in between. `click_ts_j` is the
  first `click` event of the same user and ad in the behaviour log within
  [ts_j, ts_j + click_window]; `conv_ts_j` the first `purchase` of the same user and ad within
  [click_ts_j, click_ts_j + conversion_window]. Without such an event (datasets without a
  behaviour log) the outcome is known at the end of its window.
- For an impression at t and a key value v, window w counts the events of v with time in
  [t - w, t) (`all`: every time < t): `imps` (displays), `clicks`, `convs`. Nothing at or after t
  counts: not the impression itself, nor others at the same ts.
- Rates are Bayesian-smoothed with priors fitted on train rows: `ctr = (clicks + s * ctr0) /
  (imps + s)`, `cvr = (convs + s * cvr0) / (clicks + s)`. Counts are by event time, so at a
  window's start a click may count whose display fell just before it.
- Recency: seconds since the latest display (`secs_since_seen`) and the latest observed click
  (`secs_since_click`) of v before t, null when there is none. Frequency: `user_ad_imps_all`,
  earlier impressions of this ad to this user.
- A row whose key value is null gets zero counts, prior rates and null recency.

Implementation (vectorised polars, no Python row loops): event times are ranked once for all
keys. Per key, the events are sorted by one Int64 `comb = key * stride + time rank` with running
counts per key value, and each impression looks up the last event with `comb` below
`key * stride + (number of distinct event times < t - w)` by `search_sorted` -- an event
strictly before t - w. The impressions are searched in (key, ts) order, so every search is one
sequential pass, and the results are put back in frame order. This sort-merge scales linearly
where `join_asof(by=...)` (a hash lookup per row) grew ~5.5x from 1M to 4M rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl
from tqdm.auto import tqdm

from features.config import KEYS, FeatureConfig
from features.events import Timeline, outcome_events, sub_timeline, timeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Priors:
    """Global CTR and CVR (conversions per click) the rates shrink towards; fitted on train."""

    ctr: float
    cvr: float


def fit_priors(train: pl.DataFrame | pl.LazyFrame) -> Priors:
    """Priors from train rows: mean click, and conversions per click (0 without clicks)."""
    row = (
        train.lazy()
        .select(
            pl.col("click").cast(pl.Float64).mean().fill_null(0.0).alias("ctr"),
            (
                pl.col("conversion").cast(pl.Float64).fill_null(0).sum()
                / pl.col("click").cast(pl.Float64).sum().clip(1)
            ).alias("cvr"),
        )
        .collect()
        .row(0, named=True)
    )
    return Priors(ctr=float(row["ctr"]), cvr=float(row["cvr"]))


def present_keys(frame: pl.DataFrame, names: tuple[str, ...]) -> list[str]:
    """The keys whose columns all exist in `frame` and are not null on every row."""
    out = []
    for name in names:
        cols = KEYS[name].cols
        if all(c in frame.columns and frame[c].null_count() < frame.height for c in cols):
            out.append(name)
    return out


def _code(s: pl.Series) -> tuple[pl.Series, int]:
    """Int64 codes in [0, card) of one key column, equal exactly where the values are (null
    stays null), and card. Only equality matters: the codes never reach the features."""
    if s.dtype.is_integer() and s.null_count() < s.len():
        lo, hi = s.min(), s.max()
        if hi - lo < 2**31:
            return s.cast(pl.Int64) - lo, hi - lo + 1
    codes = s.cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64)
    return codes, int(codes.max() or 0) + 1


def key_code(frame: pl.DataFrame, cols: tuple[str, ...], limit: int = 2**31) -> pl.Series:
    """Int64 codes in [0, limit) equal exactly where all `cols` are equal (null if any is)."""
    code, card = _code(frame[cols[0]])
    for c in cols[1:]:
        nxt, n = _code(frame[c])
        code, card = code * n + nxt, card * n
        if card >= 2**62:  # re-densify before it could overflow
            code, card = _dense(code)
    return code if card <= limit else _dense(code)[0]


def _dense(code: pl.Series) -> tuple[pl.Series, int]:
    ranks = code.rank("dense").cast(pl.Int64) - 1
    return ranks, int(ranks.max() or 0) + 1


def _event_log(code: pl.Series, tl: Timeline, has_conv: bool, recency: bool) -> pl.DataFrame:
    """The key's events sorted by (key, time) in one Int64 `comb`, with running counts per key
    value and, for recency, the latest display / click time."""
    g = code.gather(tl.events["row"])
    kinds = {"n": 0, "k": 1, "v": 2} if has_conv else {"n": 0, "k": 1}
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    start = pl.col("g").ne_missing(pl.col("g").shift(1))
    # running counts restart at each key value's first row (the log is sorted by key)
    running = [
        pl.when(start).then(idx).forward_fill().alias("__start"),
        *[
            (pl.col("kind") == e).cast(pl.UInt32).cum_sum().alias(f"cum_{p}")
            for p, e in kinds.items()
        ],
    ]
    if recency:
        running += [
            pl.when(pl.col("kind") == e).then(idx).forward_fill().alias(f"__at_{e}") for e in (0, 1)
        ]
    first = pl.col("__start")
    exprs = [  # minus the count before the key value's first row
        (
            pl.col(f"cum_{p}")
            - pl.when(first > 0).then(pl.col(f"cum_{p}").gather((first - 1).clip(0))).otherwise(0)
        ).alias(f"cum_{p}")
        for p in kinds
    ]
    for name, e in (("last_seen", 0), ("last_click", 1)) if recency else ():
        at = pl.col(f"__at_{e}")
        exprs.append(pl.when(at >= first).then(pl.col("time").gather(at.fill_null(0))).alias(name))
    keep = ["g", "comb", *[f"cum_{p}" for p in kinds]]
    keep += ["last_seen", "last_click"] if recency else []
    return (
        tl.events.lazy()
        .select(g.alias("g"), (g * tl.stride + pl.col("rank")).alias("comb"), "kind", "time")
        .filter(pl.col("g").is_not_null())
        .sort("comb")
        .with_columns(running)
        .with_columns(exprs)
        .select(keep)
        .collect()
        .rechunk()  # gathers from a chunked column are several times slower
    )


def _lookup(
    log: pl.DataFrame, needles: pl.Series, order: pl.Series, back: pl.Series, g: pl.Series
) -> pl.DataFrame:
    """The log's running columns at the last log row below each needle (`comb` of key `g` and
    a time rank), null where the key has no such row. The needles are searched in `order`
    (sorted: one sequential pass) and the rows come back in frame order through `back`."""
    pos = log["comb"].search_sorted(needles.gather(order), side="left").gather(back)
    pos = pos.cast(pl.Int64) - 1
    idx = pos.clip(0)
    hit = ((pos >= 0) & (log["g"].gather(idx) == g)).fill_null(False)
    cols = [c for c in log.columns if c not in ("g", "comb")]
    return log.select(pl.when(hit).then(pl.col(c).gather(idx)).alias(c) for c in cols)


def key_features(
    frame: pl.DataFrame,
    tl: Timeline,
    name: str,
    windows_days: tuple[int, ...],
    priors: Priors,
    strength: float,
    has_conv: bool,
) -> pl.DataFrame:
    """Behaviour columns of key `name` (Float32), row-aligned with `frame` (sorted by ts).

    Rate keys: `<name>_{imps,clicks,convs,ctr,cvr}_{all,<w>d}`; recency keys add
    `<name>_secs_since_{seen,click}`; `user_ad` gives `user_ad_imps_all` (frequency).
    """
    key = KEYS[name]
    code = key_code(frame, key.cols, limit=2**62 // tl.stride)
    log = _event_log(code, tl, has_conv, key.recency)
    ts = frame["ts"]

    def needles(days: int) -> pl.Series:
        return (code * tl.stride + tl.before[days]).fill_null(-1)

    # impressions in (key, ts) order: the needles of every shift are sorted in that order
    order = needles(0).arg_sort()
    back = pl.zeros(len(order), pl.UInt32, eager=True).scatter(
        order, pl.int_range(len(order), dtype=pl.UInt32, eager=True)
    )

    def lookup(days: int) -> pl.DataFrame:
        return _lookup(log, needles(days), order, back, code)

    now = lookup(0)
    parts = ["n", "k", "v"] if has_conv else ["n", "k"]
    label = {"n": "imps", "k": "clicks", "v": "convs"}
    counts = {f"{p}_all": now[f"cum_{p}"].fill_null(0) for p in parts}
    for w in windows_days if key.rates else ():
        before = lookup(w)
        for p in parts:
            counts[f"{p}_{w}d"] = counts[f"{p}_all"] - before[f"cum_{p}"].fill_null(0)
    out: dict[str, pl.Series] = {}
    if not key.rates:
        out[f"{name}_imps_all"] = counts["n_all"]
    for w in ["all", *[f"{w}d" for w in windows_days]] if key.rates else ():
        n, k = counts[f"n_{w}"].cast(pl.Float64), counts[f"k_{w}"].cast(pl.Float64)
        for p in parts:
            out[f"{name}_{label[p]}_{w}"] = counts[f"{p}_{w}"]
        out[f"{name}_ctr_{w}"] = (k + strength * priors.ctr) / (n + strength)
        if has_conv:
            v = counts[f"v_{w}"].cast(pl.Float64)
            out[f"{name}_cvr_{w}"] = (v + strength * priors.cvr) / (k + strength)
    for what in ("seen", "click") if key.recency else ():
        secs = (ts - now[f"last_{what}"]).dt.total_microseconds().cast(pl.Float64) / 1e6
        out[f"{name}_secs_since_{what}"] = secs
    return pl.DataFrame([v.cast(pl.Float32).alias(k) for k, v in out.items()]).rechunk()


# `key_features` itself, or a function with its signature and results that computes them
# elsewhere (the Ray engine: the same function over hash partitions of the key)
KeyFeatures = Callable[
    [pl.DataFrame, Timeline, str, tuple[int, ...], Priors, float, bool], pl.DataFrame
]


def key_partitions(
    frame: pl.DataFrame, tl: Timeline, name: str, parts: int
) -> Iterator[tuple[pl.Series, pl.DataFrame, Timeline]]:
    """`frame`'s rows split into up to `parts` hash partitions of key `name` (rows with a null
    key in the first): (the rows, ascending; their `ts` and key columns; their timeline) for
    each non-empty one. Every event of a key value is in its value's partition, so
    `key_features` of a partition equals `key_features` of the whole frame on its rows."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    cols = KEYS[name].cols
    part = (key_code(frame, cols) % parts).fill_null(0)
    for p in range(parts):
        rows = part.eq(p).arg_true()
        if rows.len():
            yield rows, frame.select("ts", *cols)[rows], sub_timeline(tl, rows)


def from_partitions(parts: list[tuple[pl.Series, pl.DataFrame]]) -> pl.DataFrame:
    """The blocks of (rows, their columns) of `key_partitions` put back in frame order."""
    rows = pl.concat([r for r, _ in parts])
    return pl.concat([b for _, b in parts])[rows.arg_sort()].rechunk()


def behaviour_blocks(
    frame: pl.DataFrame,
    behaviour: pl.LazyFrame | None,
    cfg: FeatureConfig,
    priors: Priors,
    has_conv: bool,
    key_fn: KeyFeatures = key_features,
) -> Iterator[tuple[str, pl.DataFrame]]:
    """(key name, its behaviour columns) for each key present in `frame`, row-aligned with it,
    one key at a time: a caller that writes each block away holds one key's columns at once.

    `frame` (impressions with user_id, ad_id, ts, click, conversion and the key columns) must be
    sorted by ts; `behaviour` is the raw behaviour log (None: no log, every outcome is known at
    its window's end). `key_fn` computes one key's columns (`key_features` here, or the Ray
    engine's partitioned run of it).
    """
    if not frame["ts"].is_sorted():
        raise ValueError("behaviour_features needs the frame sorted by ts")
    keys = present_keys(frame, cfg.behaviour_keys)
    logger.info("behaviour features: keys %s, windows %s days", keys, list(cfg.windows_days))
    outcomes = outcome_events(frame, behaviour, cfg)
    tl = timeline(frame, outcomes, has_conv, cfg.windows_days)
    del outcomes
    for name in tqdm(keys, desc="behaviour keys", unit="key", disable=frame.height < 100_000):
        yield (
            name,
            key_fn(frame, tl, name, cfg.windows_days, priors, cfg.prior_strength, has_conv),
        )


def behaviour_features(
    frame: pl.DataFrame,
    behaviour: pl.LazyFrame | None,
    cfg: FeatureConfig,
    priors: Priors,
    has_conv: bool,
) -> pl.DataFrame:
    """Every behaviour column of the keys present in `frame`, row-aligned with it (no columns
    when no key is present); the blocks of `behaviour_blocks` side by side."""
    blocks = [block for _, block in behaviour_blocks(frame, behaviour, cfg, priors, has_conv)]
    return pl.concat(blocks, how="horizontal") if blocks else pl.DataFrame()


def context() -> list[pl.Expr]:
    """Hour and weekday of the impression (placement, position, device pass through)."""
    return [
        pl.col("ts").dt.hour().cast(pl.Int32).alias("hour"),
        pl.col("ts").dt.weekday().cast(pl.Int32).alias("weekday"),
    ]
