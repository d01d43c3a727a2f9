"""Behaviour features: exact frames for the helpers, a brute-force recomputation of every
behaviour feature of the features stage, and planted future events that change nothing."""

from __future__ import annotations

import bisect
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import behaviour as bf
from features import events
from features.config import KEYS, FeatureConfig
from features.schema import RAW_TABLES
from pipeline import featurize
from pipeline.config import DataConfig, Experiment
from pipeline.io import write_tables
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.marketplace import MarketConfig
from pipeline.stage import Layout

T0 = datetime(2026, 3, 2)
H, D, S = timedelta(hours=1), timedelta(days=1), timedelta(seconds=1)
# more clicks and conversions than the real market, so that every count gets exercised
TINY = MarketConfig(
    n_ads=60, n_users=150, n_impressions=3000, n_advertisers=20, ctr_bias=-4.0, cvr_bias=-1.5
)


# ---------------------------------------------------------------- exact frames for the helpers


@pytest.fixture
def five() -> tuple[pl.DataFrame, pl.LazyFrame]:
    """Five impressions sorted by ts (two at T0, two at T0+1h) and the behaviour log."""
    frame = pl.DataFrame(
        {
            "ts": [T0, T0, T0 + H, T0 + H, T0 + 2 * D],
            "user_id": [1, 1, 2, 1, 1],
            "ad_id": [10, 11, 10, 10, 10],
            "click": [1, 0, 1, 1, 0],
            "conversion": [1, 0, 1, 0, 0],
        },
        schema_overrides={"click": pl.Int8, "conversion": pl.Int8},
    )
    behaviour = pl.LazyFrame(
        {
            "user_id": [1, 1, 1, 3],
            "ts": [T0 + 10 * S, T0 + 2 * H, T0 + H + 5 * S, T0],
            "event": ["click", "purchase", "click", "search"],
            "ad_id": [10, 10, 10, None],
            "query": [None, None, None, "shoes"],
        }
    )
    return frame, behaviour


def test_outcome_events_use_the_log_and_fall_back_to_the_window_end(five) -> None:
    frame, behaviour = five
    cfg = FeatureConfig(click_window_hours=1.0, conversion_window_hours=24.0)
    got = events.outcome_events(frame, behaviour, cfg)
    expected = pl.DataFrame(
        {
            "row": [0, 2, 3],
            # row 0: logged click and purchase; row 2: nothing logged -> window ends;
            # row 3: the click logged 5 s after it (the one at +10 s belongs to row 0)
            "click_ts": [T0 + 10 * S, T0 + 2 * H, T0 + H + 5 * S],
            "conv_ts": [T0 + 2 * H, T0 + 26 * H, None],
        },
        schema={"row": pl.UInt32, "click_ts": pl.Datetime("us"), "conv_ts": pl.Datetime("us")},
    )
    assert_frame_equal(got, expected)


def _user_features(frame, behaviour, name):
    cfg = FeatureConfig()
    outcomes = events.outcome_events(frame, behaviour, cfg)
    tl = events.timeline(frame, outcomes, True, (1,))
    return bf.key_features(frame, tl, name, (1,), bf.Priors(0.25, 0.5), 4.0, True)


def test_key_counts_and_rates_exact(five) -> None:
    frame, behaviour = five
    got = _user_features(frame, behaviour, "user")
    prior_ctr, prior_cvr = 0.25, 0.5
    # row 3 (T0+1h): displays at T0 (x2), click at T0+10s; row 0's conversion is logged only
    # at T0+2h, so it does not count yet. row 4 (T0+2d): all: 3 displays, 2 clicks,
    # 1 conversion; last day: nothing
    expected = pl.DataFrame(
        {
            "user_imps_all": [0, 0, 0, 2, 3],
            "user_clicks_all": [0, 0, 0, 1, 2],
            "user_convs_all": [0, 0, 0, 0, 1],
            "user_ctr_all": [prior_ctr] * 3 + [2 / 6, 3 / 7],
            "user_cvr_all": [prior_cvr] * 3 + [2 / 5, 3 / 6],
            "user_imps_1d": [0, 0, 0, 2, 0],
            "user_clicks_1d": [0, 0, 0, 1, 0],
            "user_convs_1d": [0, 0, 0, 0, 0],
            "user_ctr_1d": [prior_ctr] * 3 + [2 / 6, prior_ctr],
            "user_cvr_1d": [prior_cvr] * 3 + [2 / 5, prior_cvr],
        }
    ).cast(pl.Float32)
    assert_frame_equal(got, expected)


def test_recency_and_frequency_exact(five) -> None:
    frame, behaviour = five
    got = _user_features(frame, behaviour, "user_ad")
    expected = pl.DataFrame(
        {
            "user_ad_imps_all": [0.0, 0.0, 0.0, 1.0, 2.0],
            "user_ad_secs_since_seen": [None, None, None, 3600.0, 2 * 86400.0 - 3600.0],
            "user_ad_secs_since_click": [None, None, None, 3590.0, 2 * 86400.0 - 3605.0],
        }
    ).cast(pl.Float32)
    assert_frame_equal(got, expected)


def test_null_key_gets_zero_counts_and_the_prior(five) -> None:
    frame, behaviour = five
    frame = frame.with_columns(pl.Series("category", ["a", None, "a", "a", None]))
    got = _user_features(frame, behaviour, "category")
    assert got["category_imps_all"].to_list() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert got["category_ctr_all"][4] == pytest.approx(0.25)


def test_key_code_is_equal_exactly_where_the_columns_are() -> None:
    frame = pl.DataFrame({"a": [1, 1, 2, 2, None], "b": ["x", "y", "x", "x", "x"]})
    code = bf.key_code(frame, ("a", "b")).to_list()
    assert code[0] != code[1] and code[2] == code[3] and code[0] != code[2]
    assert code[4] is None


def test_behaviour_features_refuse_an_unsorted_frame(five) -> None:
    frame, behaviour = five
    with pytest.raises(ValueError, match="sorted by ts"):
        bf.behaviour_features(
            frame.reverse(), behaviour, FeatureConfig(), bf.Priors(0.1, 0.1), True
        )


def test_behaviour_features_are_the_present_keys_side_by_side(five) -> None:
    frame, behaviour = five
    cfg = FeatureConfig(windows_days=(1,), prior_strength=4.0)
    priors = bf.Priors(0.25, 0.5)
    got = bf.behaviour_features(frame, behaviour, cfg, priors, True)
    # no advertiser, campaign, category or placement column: those keys are skipped
    assert bf.present_keys(frame, cfg.behaviour_keys) == ["user", "ad", "user_ad"]
    parts = [_user_features(frame, behaviour, name) for name in ("user", "ad", "user_ad")]
    assert_frame_equal(got, pl.concat(parts, how="horizontal"))


def test_behaviour_features_without_a_log_count_outcomes_at_the_window_end(five) -> None:
    frame, behaviour = five
    cfg = FeatureConfig(windows_days=(1,), behaviour_keys=("user",))
    with_log = bf.behaviour_features(frame, behaviour, cfg, bf.Priors(0.25, 0.5), True)
    without = bf.behaviour_features(frame, None, cfg, bf.Priors(0.25, 0.5), True)
    # row 3 (T0+1h): row 0's click was logged at T0+10s; without a log it is known only at
    # T0+1h (the click window's end), which is not before T0+1h
    assert with_log["user_clicks_all"].to_list() == [0, 0, 0, 1, 2]
    assert without["user_clicks_all"].to_list() == [0, 0, 0, 0, 2]


def test_fit_priors() -> None:
    train = pl.DataFrame({"click": [1, 0, 0, 1], "conversion": [1, 0, None, 0]})
    assert bf.fit_priors(train) == bf.Priors(ctr=0.5, cvr=0.5)


# ---------------------------------------------------------------- the stage against brute force


def write_raw(root: Path, tables: dict[str, pl.DataFrame]) -> Experiment:
    """Raw tables under `<root>/bf/raw` and an experiment that reads them (text off)."""
    exp = Experiment(name="bf", data=DataConfig(root=str(root)), features=FeatureConfig(text=False))
    write_tables(
        Layout.of(exp).raw,
        {n: tables[n] for n in RAW_TABLES},
        config_digest="test",
        extra={"has_conversion": True, "split_mode": "time"},
    )
    return exp


def build(root: Path, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Run the features stage; all splits by impression_id."""
    exp = write_raw(root, tables)
    featurize.run(exp)
    out = Layout.of(exp).features
    return pl.concat([pl.read_parquet(out / f"{s}.parquet") for s in ("train", "valid", "test")])


@pytest.fixture(scope="module")
def market() -> dict[str, pl.DataFrame]:
    return simulate_market(TINY, seed=5)


@pytest.fixture(scope="module")
def built(market, tmp_path_factory) -> tuple[pl.DataFrame, dict]:
    root = tmp_path_factory.mktemp("bf")
    frame = build(root, market)
    spec = json.loads((root / "bf" / "features" / "feature_spec.json").read_text())
    return frame, spec


def _first_in(times: list[datetime], lo: datetime, hi: datetime) -> datetime | None:
    i = bisect.bisect_left(times, lo)
    return times[i] if i < len(times) and times[i] <= hi else None


def brute_force(tables: dict[str, pl.DataFrame], queries: list[int]) -> dict[int, dict]:
    """Every behaviour feature of the `queries` impressions, by plain Python over raw events."""
    cfg = FeatureConfig()
    imps = tables["impressions"].sort("impression_id").to_dicts()
    ads = {a["ad_id"]: a for a in tables["ads"].to_dicts()}
    logged: dict[tuple, list[datetime]] = {}
    for e in tables["behaviour"].to_dicts():
        if e["event"] in ("click", "purchase") and e["ad_id"] is not None:
            logged.setdefault((e["event"], e["user_id"], e["ad_id"]), []).append(e["ts"])
    for times in logged.values():
        times.sort()
    cw, vw = timedelta(hours=cfg.click_window_hours), timedelta(hours=cfg.conversion_window_hours)
    day0 = min(r["ts"] for r in imps).replace(hour=0, minute=0, second=0, microsecond=0)
    train = [r for r in imps if r["ts"] < day0 + timedelta(days=18)]
    ctr0 = sum(r["click"] for r in train) / len(train)
    cvr0 = sum(r["conversion"] for r in train) / max(1, sum(r["click"] for r in train))
    events: dict[tuple, list[tuple]] = {}  # (key name, value) -> [(ts, click_ts, conv_ts)]
    for r in imps:
        click_ts = conv_ts = None
        if r["click"] == 1:
            key = ("click", r["user_id"], r["ad_id"])
            click_ts = _first_in(logged.get(key, []), r["ts"], r["ts"] + cw) or r["ts"] + cw
            if r["conversion"] == 1:
                key = ("purchase", r["user_id"], r["ad_id"])
                conv_ts = _first_in(logged.get(key, []), click_ts, click_ts + vw) or click_ts + vw
        a = ads[r["ad_id"]]
        r.update(advertiser_id=a["advertiser_id"], campaign_id=a["campaign_id"])
        r["category"] = a["category"]
        for name, key in KEYS.items():
            value = tuple(r[c] for c in key.cols)
            events.setdefault((name, value), []).append((r["ts"], click_ts, conv_ts))
    s = cfg.prior_strength
    by_id = {r["impression_id"]: r for r in imps}
    out = {}
    for qid in queries:
        r, t = by_id[qid], by_id[qid]["ts"]
        f: dict[str, float | None] = {}
        for name, key in KEYS.items():
            evs = events[(name, tuple(r[c] for c in key.cols))]
            windows = [("all", datetime.min)] + [
                (f"{w}d", t - timedelta(days=w)) for w in cfg.windows_days
            ]
            for label, lo in windows if key.rates else windows[:1]:
                n = sum(1 for e in evs if lo <= e[0] < t)
                k = sum(1 for e in evs if e[1] is not None and lo <= e[1] < t)
                v = sum(1 for e in evs if e[2] is not None and lo <= e[2] < t)
                if not key.rates:
                    f[f"{name}_imps_all"] = n
                    continue
                f.update({f"{name}_imps_{label}": n, f"{name}_clicks_{label}": k})
                f[f"{name}_convs_{label}"] = v
                f[f"{name}_ctr_{label}"] = (k + s * ctr0) / (n + s)
                f[f"{name}_cvr_{label}"] = (v + s * cvr0) / (k + s)
            if key.recency:
                seen = [e[0] for e in evs if e[0] < t]
                clicked = [e[1] for e in evs if e[1] is not None and e[1] < t]
                for what, times in (("seen", seen), ("click", clicked)):
                    secs = (t - max(times)) // timedelta(microseconds=1) / 1e6 if times else None
                    f[f"{name}_secs_since_{what}"] = secs
        out[qid] = f
    return out


def test_every_behaviour_feature_matches_brute_force(market, built) -> None:
    frame, spec = built
    ids = sorted(random.Random(0).sample(frame["impression_id"].to_list(), 300))
    expected = brute_force(market, ids)
    behaviour_cols = [e["name"] for e in spec["features"] if e["family"] == "behaviour"]
    assert sorted(c.removeprefix("n_") for c in behaviour_cols) == sorted(expected[ids[0]])
    got = frame.filter(pl.col("impression_id").is_in(ids)).sort("impression_id")
    exp_frame = pl.DataFrame(
        [{"n_" + k: v for k, v in expected[i].items()} for i in ids],
        schema={c: pl.Float64 for c in behaviour_cols},
    ).cast(pl.Float32)
    assert_frame_equal(got.select(behaviour_cols), exp_frame)
    # the sample covers what matters: history, clicks, conversions, windows, recency
    assert (exp_frame["n_user_imps_all"] > 0).mean() > 0.8
    assert (exp_frame["n_category_convs_1d"] > 0).sum() > 30
    assert (exp_frame["n_ad_convs_7d"] > 0).sum() > 30
    assert exp_frame["n_user_ad_secs_since_click"].drop_nulls().len() > 0
    assert np.isclose(spec["priors"]["ctr"], market["impressions"]["click"].mean(), rtol=0.3)


def _plant(tables, victim: dict, ts: datetime, new_id: int) -> dict[str, pl.DataFrame]:
    """A clicked, converted impression of the victim's user, ad and placement at `ts`, with
    its logged click and purchase right after."""
    imps = tables["impressions"]
    row = imps.filter(pl.col("impression_id") == victim["impression_id"]).with_columns(
        pl.lit(new_id, pl.Int64).alias("impression_id"),
        pl.lit(ts, pl.Datetime("us")).alias("ts"),
        pl.lit(1, pl.Int8).alias("click"),
        pl.lit(1, pl.Int8).alias("conversion"),
    )
    logged = pl.DataFrame(
        {
            "user_id": [victim["user_id"]] * 2,
            "ts": [ts + timedelta(microseconds=1), ts + timedelta(microseconds=2)],
            "event": ["click", "purchase"],
            "ad_id": [victim["ad_id"]] * 2,
            "query": [None, None],
        },
        schema=tables["behaviour"].schema,
    )
    return {
        **tables,
        "impressions": pl.concat([imps, row]),
        "behaviour": pl.concat([tables["behaviour"], logged]),
    }


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(microseconds=1)])
def test_a_planted_event_at_or_after_t_changes_nothing_before(
    market, built, tmp_path, offset
) -> None:
    frame, spec = built
    cols = [e["name"] for e in spec["features"] if e["family"] == "behaviour"]
    test = frame.filter(pl.col("split") == "test").sort("ts")
    # a test-period impression whose user comes back later (the planted event must show there)
    later = (
        test.group_by("user_id", maintain_order=True)
        .agg(pl.col("impression_id"), pl.col("ts"))
        .filter(pl.col("ts").list.len() >= 2)
    )
    user = later.row(0, named=True)
    victim = test.filter(pl.col("impression_id") == user["impression_id"][0]).row(0, named=True)
    after = user["impression_id"][-1]
    assert user["ts"][-1] > victim["ts"] + offset + timedelta(microseconds=2)
    planted = _plant(market, victim, victim["ts"] + offset, frame["impression_id"].max() + 1)
    rebuilt = build(tmp_path, planted)
    ids = [victim["impression_id"]]
    before = frame.filter(pl.col("impression_id").is_in(ids)).select(cols)
    assert_frame_equal(rebuilt.filter(pl.col("impression_id").is_in(ids)).select(cols), before)
    # ...but a later impression of the same user sees it: one more display, click, conversion
    old = frame.filter(pl.col("impression_id") == after).row(0, named=True)
    new = rebuilt.filter(pl.col("impression_id") == after).row(0, named=True)
    for what in ("imps", "clicks", "convs"):
        assert new[f"n_user_{what}_all"] == old[f"n_user_{what}_all"] + 1


# ---------------------------------------------------------------- hash partitions of a key


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_each_keys_hash_partitions_give_its_whole_frame_features(market, parts) -> None:
    """The Ray engine computes a key's columns partition by partition: put back in frame order,
    they equal the columns computed over the whole frame, for every key."""
    ads = market["ads"].select("ad_id", "advertiser_id", "campaign_id", "category")
    frame = market["impressions"].join(ads, on="ad_id", how="left").sort("ts", "impression_id")
    cfg = FeatureConfig()
    tl = events.timeline(
        frame, events.outcome_events(frame, market["behaviour"].lazy(), cfg), True, (1, 7)
    )
    priors = bf.Priors(0.05, 0.1)
    for name in bf.present_keys(frame, tuple(KEYS)):
        whole = bf.key_features(frame, tl, name, (1, 7), priors, 20.0, True)
        blocks = [
            (rows, bf.key_features(part, sub, name, (1, 7), priors, 20.0, True))
            for rows, part, sub in bf.key_partitions(frame, tl, name, parts)
        ]
        assert 1 <= len(blocks) <= parts  # empty partitions (4 placements in 7) are left out
        assert sorted(r for rows, _ in blocks for r in rows.to_list()) == list(range(frame.height))
        assert_frame_equal(bf.from_partitions(blocks), whole, check_exact=True)


def test_partitions_never_split_a_key_value(market) -> None:
    frame = market["impressions"].sort("ts", "impression_id")
    tl = events.timeline(frame, events.outcome_events(frame, None, FeatureConfig()), True, (1,))
    seen: dict[tuple, int] = {}
    for p, (rows, part, sub) in enumerate(bf.key_partitions(frame, tl, "user_ad", 4)):
        assert part["ts"].is_sorted()
        assert sub.events["row"].max() < rows.len() and sub.before[0].len() == rows.len()
        for key in part.select("user_id", "ad_id").unique().rows():
            assert seen.setdefault(key, p) == p
    with pytest.raises(ValueError, match="parts must be >= 1"):
        next(bf.key_partitions(frame, tl, "user", 0))
