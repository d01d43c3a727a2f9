"""The simulated marketplace on the `small` experiment (seed 7) is plausible and learnable, keeps
its subtopics hidden, and is deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from features import schema
from features.split import SplitConfig, assign_split, cold_start_flag
from pipeline.config import load_experiment
from pipeline.sources.simulated.impressions import PLACEMENTS, POSITION_SLOTS
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.marketplace import MarketConfig
from pipeline.sources.simulated.vocabulary import SUBTOPICS

EXPERIMENTS = Path(__file__).resolve().parents[4] / "experiments"
SEED = 7
PUBLIC = ("ads", "users", "behaviour", "impressions")
SUBTOPIC_KEYS = {s.key for s in SUBTOPICS}


@pytest.fixture(scope="module")
def small_cfg() -> tuple[MarketConfig, SplitConfig]:
    exp = load_experiment("small", directory=EXPERIMENTS)
    return exp.market, exp.split


@pytest.fixture(scope="module")
def market(small_cfg: tuple[MarketConfig, SplitConfig]) -> dict[str, pl.DataFrame]:
    return simulate_market(small_cfg[0], seed=SEED)


@pytest.fixture(scope="module")
def imps(market: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Impressions with the oracle's probabilities and the hidden subtopic of the ad."""
    return (
        market["impressions"]
        .join(market["oracle"], on="impression_id", how="left")
        .join(market["ads_hidden"], on="ad_id", how="left")
        .with_columns(pl.col("subtopic").str.split("/").list.first().alias("subcat"))
    )


@pytest.fixture(scope="module")
def with_split(imps: pl.DataFrame, small_cfg: tuple[MarketConfig, SplitConfig]) -> pl.DataFrame:
    lf, _ = assign_split(imps.lazy(), small_cfg[1])
    return lf.with_columns(cold_start_flag(lf).alias("cold_start")).collect()


# --- shape and sizes -----------------------------------------------------------------------


def test_tables_sizes_and_schemas(market: dict, small_cfg: tuple) -> None:
    cfg = small_cfg[0]
    for name, expected in schema.RAW_TABLES.items():
        assert dict(market[name].schema) == expected, name
    assert market["impressions"].height == cfg.n_impressions
    assert market["ads"].height == cfg.n_ads
    assert market["users"].height == cfg.n_users
    assert market["oracle"].height == cfg.n_impressions
    assert dict(market["oracle"].schema) == schema.ORACLE
    assert market["impressions"]["impression_id"].is_unique().all()
    assert market["ads"]["ad_id"].is_unique().all()
    assert market["users"]["user_id"].is_unique().all()


def test_catalogue_breadth(market: dict) -> None:
    assert len({s.category for s in SUBTOPICS}) >= 12
    assert len(SUBTOPIC_KEYS) >= 60
    assert market["ads"]["category"].n_unique() >= 12
    assert market["ads_hidden"]["subtopic"].n_unique() >= 60
    ads = market["ads"].join(market["ads_hidden"], on="ad_id")
    # the public category is the hidden subtopic's parent
    assert (ads["category"] == ads["subtopic"].str.split("/").list.first()).all()


def test_ad_goals_and_prices(market: dict) -> None:
    ads = market["ads"]
    cpc, cpa = ads.filter(pl.col("goal") == "cpc"), ads.filter(pl.col("goal") == "cpa")
    assert cpc.height > 0 and cpa.height > 0 and cpc.height + cpa.height == ads.height
    assert cpc["max_cpc"].is_not_null().all() and cpc["target_cpa"].is_null().all()
    assert cpa["target_cpa"].is_not_null().all() and cpa["max_cpc"].is_null().all()
    assert (ads["price"] > 0).all()
    assert (ads["keywords"].list.len() >= 3).all()


def test_placements_positions_and_queries(market: dict) -> None:
    imp = market["impressions"]
    assert set(imp["placement"].unique()) == set(PLACEMENTS)
    slots = dict(zip(PLACEMENTS, POSITION_SLOTS, strict=True))
    top = imp.group_by("placement").agg(
        pl.col("position").min().alias("lo"), pl.col("position").max().alias("hi")
    )
    for row in top.iter_rows(named=True):
        assert row["lo"] == 1 and row["hi"] <= slots[row["placement"]]
    search = imp["placement"].str.starts_with("search")
    assert imp.filter(search)["query"].is_not_null().all()
    assert imp.filter(~search)["query"].is_null().all()


def test_impressions_only_show_launched_ads(market: dict) -> None:
    joined = market["impressions"].join(market["ads"], on="ad_id", how="left")
    assert joined["created_at"].is_not_null().all()
    assert (joined["ts"] >= joined["created_at"]).all()
    beh = market["behaviour"].filter(pl.col("ad_id").is_not_null())
    beh = beh.join(market["ads"].select("ad_id", "created_at"), on="ad_id", how="left")
    assert beh["created_at"].is_not_null().all()
    assert (beh["ts"] >= beh["created_at"]).all()


def test_behaviour_log(market: dict) -> None:
    beh = market["behaviour"]
    assert set(beh["event"].unique()) == {"search", "view", "click", "purchase"}
    searches = beh.filter(pl.col("event") == "search")
    assert searches["query"].is_not_null().all() and searches["ad_id"].is_null().all()
    others = beh.filter(pl.col("event") != "search")
    assert others["ad_id"].is_not_null().all()
    assert beh["user_id"].is_in(market["users"]["user_id"].implode()).all()
    # history exists before the impression period
    assert (beh["ts"] < market["impressions"]["ts"].min()).sum() > 0


# --- labels: plausible rates and biases ----------------------------------------------------


def test_overall_ctr_between_1_and_5_percent(imps: pl.DataFrame) -> None:
    assert 0.01 <= imps["click"].mean() <= 0.05


def test_cvr_after_click_between_2_and_15_percent(imps: pl.DataFrame) -> None:
    clicked = imps.filter(pl.col("click") == 1)
    assert 0.02 <= clicked["conversion"].mean() <= 0.15


def test_conversion_only_after_click(imps: pl.DataFrame) -> None:
    assert imps.filter(pl.col("conversion") == 1)["click"].min() == 1
    assert set(imps["click"].unique()) == {0, 1}


def test_ctr_falls_with_position(imps: pl.DataFrame) -> None:
    by = imps.group_by("placement", "position").agg(pl.col("click").mean().alias("ctr"))
    for placement in PLACEMENTS:
        rows = by.filter(pl.col("placement") == placement).sort("position")
        first, last = rows["ctr"][0], rows["ctr"][-1]
        assert first > last, (placement, rows)
    rho, _ = spearmanr(imps["position"].to_numpy(), imps["click"].to_numpy())
    assert rho < 0
    overall = imps.group_by("position").agg(pl.col("click").mean()).sort("position")
    rho_curve, _ = spearmanr(overall["position"].to_numpy(), overall["click"].to_numpy())
    assert rho_curve < -0.7


def test_oracle_probabilities_fall_with_position_within_placement(imps: pl.DataFrame) -> None:
    by = imps.group_by("placement", "position").agg(pl.col("p_click").mean()).sort("position")
    for placement in PLACEMENTS:
        curve = by.filter(pl.col("placement") == placement)["p_click"].to_numpy()
        assert (np.diff(curve) < 0).all(), (placement, curve)


def test_cold_start_ads_get_at_least_10_percent_of_test(with_split: pl.DataFrame) -> None:
    test = with_split.filter(pl.col("split") == "test")
    assert test.height > 0
    assert test["cold_start"].mean() >= 0.10
    # flagged ads really had no impression before the test period
    before = set(with_split.filter(pl.col("split") != "test")["ad_id"].to_list())
    assert not before & set(test.filter(pl.col("cold_start"))["ad_id"].to_list())


def test_oracle_test_ctr_auc_between_070_and_085(with_split: pl.DataFrame) -> None:
    test = with_split.filter(pl.col("split") == "test")
    auc = roc_auc_score(test["click"].to_numpy(), test["p_click"].to_numpy())
    assert 0.70 <= auc <= 0.85


def test_oracle_probabilities_generated_the_labels(imps: pl.DataFrame) -> None:
    """Observed counts lie within 4 standard deviations of the oracle's expected counts."""
    clicked = imps.filter(pl.col("click") == 1)
    for p, y in (
        (imps["p_click"], imps["click"]),
        (clicked["p_conversion"], clicked["conversion"]),
    ):
        expected, sd = p.sum(), float(np.sqrt((p * (1 - p)).sum()))
        assert abs(y.sum() - expected) < 4 * sd, (y.name, y.sum(), expected)


def test_matching_subtopic_beats_mismatch_in_a_liked_category(
    imps: pl.DataFrame, market: dict
) -> None:
    tastes = market["user_tastes"].with_columns(
        pl.col("subtopic").str.split("/").list.first().alias("subcat")
    )
    pairs = tastes.select("user_id", "subtopic")
    liked_cats = tastes.select("user_id", "subcat").unique()
    matched = imps.join(pairs, on=["user_id", "subtopic"], how="semi")
    mismatched = imps.join(pairs, on=["user_id", "subtopic"], how="anti")
    same_cat = mismatched.join(liked_cats, on=["user_id", "subcat"], how="semi")
    assert matched.height > 500 and same_cat.height > 500
    assert matched["p_click"].mean() > 2.0 * same_cat["p_click"].mean()
    assert matched["click"].mean() > same_cat["click"].mean()
    # and within one placement and position, so the gap is not a logging-policy artefact
    cell = (pl.col("placement") == "search_top") & (pl.col("position") == 1)
    assert matched.filter(cell)["p_click"].mean() > same_cat.filter(cell)["p_click"].mean()


def test_logging_policy_is_not_uniform(imps: pl.DataFrame, market: dict) -> None:
    pairs = market["user_tastes"].select("user_id", "subtopic")
    matched_share = imps.join(pairs, on=["user_id", "subtopic"], how="semi").height / imps.height
    # a uniform policy would match a user's (at most 4 of 80) subtopics about 5% of the time
    assert matched_share > 0.3


def test_user_tastes_are_sparse_mixtures(market: dict) -> None:
    tastes = market["user_tastes"]
    per_user = tastes.group_by("user_id").agg(
        pl.len().alias("k"), pl.col("weight").sum().alias("total")
    )
    assert per_user.height == market["users"].height
    assert per_user["k"].max() <= 4
    assert np.allclose(per_user["total"].to_numpy(), 1.0)
    assert set(tastes["subtopic"].unique()) <= SUBTOPIC_KEYS


# --- hidden state stays hidden -------------------------------------------------------------


def test_no_public_column_names_the_hidden_state(market: dict) -> None:
    hidden_names = {"subtopic", "p_click", "p_conversion", "weight", "taste", "quality"}
    for name in PUBLIC:
        for column in market[name].columns:
            assert not any(h in column for h in hidden_names), (name, column)


def test_no_public_string_value_is_a_subtopic_key(market: dict) -> None:
    for name in PUBLIC:
        frame = market[name]
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                values = frame[column].drop_nulls()
            elif dtype == pl.List(pl.String):
                values = frame[column].explode().drop_nulls()
            else:
                continue
            leaked = set(values.unique().to_list()) & SUBTOPIC_KEYS
            assert not leaked, (name, column, sorted(leaked)[:3])
            # nor inside a text (titles, descriptions, queries)
            contains = values.str.contains_any(sorted(SUBTOPIC_KEYS)).sum()
            assert contains == 0, (name, column)


def test_no_public_number_is_an_oracle_probability(market: dict, imps: pl.DataFrame) -> None:
    p_click = imps.sort("impression_id")["p_click"].to_numpy()
    p_conv = imps.sort("impression_id")["p_conversion"].to_numpy()
    public = market["impressions"].sort("impression_id")
    for column, dtype in public.schema.items():
        if dtype.is_numeric() and column != "impression_id":
            values = public[column].cast(pl.Float64).fill_null(-1).to_numpy()
            for truth in (p_click, p_conv):
                assert not np.allclose(values, truth), column
                assert abs(np.corrcoef(values, truth)[0, 1]) < 0.99, column


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_frames(market: dict, small_cfg: tuple) -> None:
    again = simulate_market(small_cfg[0], seed=SEED)
    assert set(again) == set(market)
    for name, frame in market.items():
        assert frame.equals(again[name]), name


def test_different_seed_different_frames(market: dict, small_cfg: tuple) -> None:
    other = simulate_market(small_cfg[0], seed=SEED + 1)
    for name in ("ads", "impressions", "behaviour", "oracle"):
        assert not other[name].equals(market[name]), name
