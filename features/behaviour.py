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

Implementation: per key, one event log sorted by time with running counts per key value; every
impression looks up the last log row strictly before t (and before t - w for each window) with
`join_asof(allow_exact_matches=False)`. The impressions frame is sorted by ts once, so each
key's columns come back aligned with it: no joins on impression_id, no Python row loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl


@dataclass(frozen=True)
class Key:
    """A behaviour key: the columns that form it and which features it gets."""

    cols: tuple[str, ...]
    rates: bool = True  # counts + smoothed CTR / CVR over every window
    recency: bool = False  # seconds since the last display / click


KEYS: dict[str, Key] = {
    "user": Key(("user_id",)),
    "ad": Key(("ad_id",)),
    "advertiser": Key(("advertiser_id",)),
    "campaign": Key(("campaign_id",)),
    "category": Key(("category",)),
    "placement": Key(("placement",)),
    "user_category": Key(("user_id", "category"), recency=True),
    "user_ad": Key(("user_id", "ad_id"), rates=False, recency=True),
}


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature families to build and their settings."""

    text: bool = True  # the text ablation switch
    windows_days: tuple[int, ...] = (1, 7, 28)
    prior_strength: float = 20.0  # pseudo-impressions of the Bayesian prior
    behaviour_keys: tuple[str, ...] = tuple(KEYS)
    click_window_hours: float = 1.0  # a click is matched to a logged click event within this
    conversion_window_hours: float = 24.0  # a conversion to a logged purchase within this
    interest_half_life_days: float = 7.0
    interest_dim: int = 64  # PCA width of the user interest vector
    lgbm_text_dim: int = 16  # PCA width of the ad embedding for LightGBM
    recent_clicks: int = 5

    def __post_init__(self) -> None:
        unknown = set(self.behaviour_keys) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown behaviour_keys {sorted(unknown)} (known: {list(KEYS)})")
        if any(w <= 0 for w in self.windows_days):
            raise ValueError("windows_days must be positive")
        if self.click_window_hours < 0 or self.conversion_window_hours < 0:
            raise ValueError("click_window_hours and conversion_window_hours must be >= 0")
        if self.prior_strength <= 0:
            raise ValueError("prior_strength must be positive")


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


def _code(s: pl.Series) -> tuple[pl.Series, int]:
    """Dense-enough Int64 codes 0..card-1 of one key column (null stays null), and card."""
    if s.dtype.is_integer():
        lo, hi = s.min(), s.max()
        if lo is not None and hi - lo < 2**31:
            return (s.cast(pl.Int64) - lo), hi - lo + 1
    ranks = s.rank("dense")
    return ranks.cast(pl.Int64) - 1, int(ranks.max() or 0) + 1


def key_code(frame: pl.DataFrame, cols: tuple[str, ...]) -> pl.Series:
    """One column that is equal exactly where all `cols` are equal (null if any is null)."""
    if len(cols) == 1:
        return frame[cols[0]]
    code, card = _code(frame[cols[0]])
    for c in cols[1:]:
        nxt, n = _code(frame[c])
        if card * n >= 2**62:
            return frame.select(pl.struct(cols).rank("dense"))[cols[0]].cast(pl.Int64)
        code, card = code * n + nxt, card * n
    return code


def _event_log(
    g: pl.Series, ts: pl.Series, outcomes: pl.DataFrame, has_conv: bool, recency: bool
) -> pl.DataFrame:
    """One row per event of a key (display 0, click 1, conversion 2), sorted by key `g` and time
    `__t`, with running counts per key value and, for recency, the latest display / click."""

    def events(rows: pl.Series | None, times: pl.Series, kind: int) -> pl.DataFrame:
        keys = g if rows is None else g.gather(rows)
        return pl.DataFrame({"g": keys, "__t": times}).with_columns(
            pl.lit(kind, pl.Int8).alias("__e")
        )

    parts = [events(None, ts, 0), events(outcomes["row"], outcomes["click_ts"], 1)]
    if has_conv:
        conv = outcomes.filter(pl.col("conv_ts").is_not_null())
        parts.append(events(conv["row"], conv["conv_ts"], 2))
    kinds = {"n": 0, "k": 1, "v": 2} if has_conv else {"n": 0, "k": 1}
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    start = pl.col("g").ne_missing(pl.col("g").shift(1)).fill_null(True)
    # counts and positions restart at each key value's first row (the log is sorted by key)
    running = [
        pl.when(start).then(idx).forward_fill().alias("__start"),
        *[
            (pl.col("__e") == e).cast(pl.UInt32).cum_sum().alias(f"cum_{p}")
            for p, e in kinds.items()
        ],
    ]
    if recency:
        running += [
            pl.when(pl.col("__e") == e).then(idx).forward_fill().alias(f"__at_{e}") for e in (0, 1)
        ]
    log = (
        pl.concat(parts)
        .lazy()
        .filter(pl.col("g").is_not_null())
        .sort(["g", "__t"], maintain_order=True)
        .with_columns(running)
    )
    first = pl.col("__start")
    exprs = [  # minus the count before the key value's first row
        (
            pl.col(f"cum_{p}")
            - pl.when(first > 0).then(pl.col(f"cum_{p}").gather((first - 1).clip(0))).otherwise(0)
        ).alias(f"cum_{p}")
        for p in kinds
    ]
    if recency:
        for name, e in (("last_seen", 0), ("last_click", 1)):
            at = pl.col(f"__at_{e}")
            exprs.append(
                pl.when(at >= pl.col("__start"))
                .then(pl.col("__t").gather(at.fill_null(0)))
                .alias(name)
            )
    keep = ["g", "__t", *[f"cum_{p}" for p in kinds]] + (
        ["last_seen", "last_click"] if recency else []
    )
    return log.with_columns(exprs).select(keep).collect()


def _lookup(g: pl.Series, ts: pl.Series, log: pl.DataFrame, shift: timedelta) -> pl.DataFrame:
    """The log's running columns at the key's last event strictly before ts - shift, aligned
    with `g` / `ts` (sorted by ts)."""
    query = pl.DataFrame([g.alias("g"), (ts - shift).alias("__q")]).lazy()
    return (
        query.join_asof(
            log.lazy(),
            left_on="__q",
            right_on="__t",
            by="g",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .drop(["g", "__q", "__t"])
        .collect()
    )


def key_features(
    frame: pl.DataFrame,
    outcomes: pl.DataFrame,
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
    g, ts = key_code(frame, key.cols), frame["ts"]
    log = _event_log(g, ts, outcomes, has_conv, key.recency)
    now = _lookup(g, ts, log, timedelta(0))
    parts = ["n", "k", "v"] if has_conv else ["n", "k"]
    label = {"n": "imps", "k": "clicks", "v": "convs"}
    counts: dict[str, pl.Series] = {}
    for p in parts:
        counts[f"{p}_all"] = now[f"cum_{p}"].fill_null(0)
    counts_log = log.select("g", "__t", *[f"cum_{p}" for p in parts])
    for w in windows_days if key.rates else ():
        back = _lookup(g, ts, counts_log, timedelta(days=w))
        for p in parts:
            counts[f"{p}_{w}d"] = counts[f"{p}_all"] - back[f"cum_{p}"].fill_null(0)
    out: dict[str, pl.Series] = {}
    if not key.rates:
        out[f"{name}_imps_all"] = counts["n_all"]
    else:
        s = strength
        for w in ["all", *[f"{w}d" for w in windows_days]]:
            n, k = counts[f"n_{w}"].cast(pl.Float64), counts[f"k_{w}"].cast(pl.Float64)
            for p in parts:
                out[f"{name}_{label[p]}_{w}"] = counts[f"{p}_{w}"]
            out[f"{name}_ctr_{w}"] = (k + s * priors.ctr) / (n + s)
            if has_conv:
                v = counts[f"v_{w}"].cast(pl.Float64)
                out[f"{name}_cvr_{w}"] = (v + s * priors.cvr) / (k + s)
    if key.recency:
        for what in ("seen", "click"):
            secs = (ts - now[f"last_{what}"]).dt.total_microseconds().cast(pl.Float64) / 1e6
            out[f"{name}_secs_since_{what}"] = secs
    return pl.DataFrame([v.cast(pl.Float32).alias(k) for k, v in out.items()])


def behaviour_features(
    frame: pl.DataFrame,
    outcomes: pl.DataFrame,
    cfg: FeatureConfig,
    priors: Priors,
    has_conv: bool,
) -> pl.DataFrame:
    """Every behaviour column of the keys present in `frame`, row-aligned with it.

    `frame` must be sorted by ts; `outcomes` comes from `outcome_events(frame, ...)`.
    """
    if not frame["ts"].is_sorted():
        raise ValueError("behaviour_features needs the frame sorted by ts")
    blocks = [
        key_features(frame, outcomes, name, cfg.windows_days, priors, cfg.prior_strength, has_conv)
        for name in present_keys(frame, cfg.behaviour_keys)
    ]
    return pl.concat(blocks, how="horizontal") if blocks else pl.DataFrame()


def context() -> list[pl.Expr]:
    """Hour and weekday of the impression (placement, position, device pass through)."""
    return [
        pl.col("ts").dt.hour().cast(pl.Int32).alias("hour"),
        pl.col("ts").dt.weekday().cast(pl.Int32).alias("weekday"),
    ]
