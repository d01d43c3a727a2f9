"""Bidding math: expected value, strategies, ORTB's c, bounds, pacing, placement weights."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.bidding import (
    BiddingConfig,
    BidParams,
    bid_table,
    bound_bids,
    expected_value,
    fit_ortb_c,
    linear_bids,
    make_bids,
    ortb_bids,
    ortb_lambda,
    pacing_update,
    placement_weights,
    split_strategy,
)


def test_expected_value_per_goal() -> None:
    value = expected_value(
        pctr=[0.1, 0.2, 0.05],
        pcvr=[0.5, 0.25, np.nan],
        goal=["cpc", "cpa", "cpc"],
        max_cpc=[2.0, np.nan, 4.0],
        target_cpa=[np.nan, 40.0, np.nan],
    )
    assert value == pytest.approx([0.2, 0.2 * 0.25 * 40.0, 0.2])


def test_expected_value_rejects_unknown_goal() -> None:
    with pytest.raises(ValueError, match="cpm"):
        expected_value([0.1], [0.1], ["cpm"], [1.0], [1.0])


def test_linear_and_ortb_formulas() -> None:
    assert linear_bids([1.0, 2.0, 4.0], b0=10.0, mean_value=2.0) == pytest.approx([5, 10, 20])
    c, lam = 20.0, 0.01
    v = np.array([0.0, 0.5, 3.0])
    assert ortb_bids(v, c, lam) == pytest.approx(np.sqrt(c / lam * v + c * c) - c)
    assert ortb_bids([0.0], c, lam)[0] == 0.0
    # concave: doubling the value less than doubles the bid
    b1, b2 = ortb_bids([1.0, 2.0], c, lam)
    assert b1 < b2 < 2 * b1


def test_ortb_lambda_gives_the_base_bid_at_mean_value() -> None:
    lam = ortb_lambda(base_bid=30.0, c=25.0, mean_value=0.004)
    assert ortb_bids([0.004], 25.0, lam)[0] == pytest.approx(30.0)


def test_fit_ortb_c_recovers_the_winning_function() -> None:
    # prices whose CDF is b / (c + b): inverse transform of uniform draws, c = 20
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 0.999, 200_000)
    prices = np.floor(20.0 * u / (1 - u))
    assert fit_ortb_c(prices) == pytest.approx(20.0, rel=0.1)
    with pytest.raises(ValueError):
        fit_ortb_c([0.0, 0.0])


def test_bounds_clip_multipliers_and_absolute_bids() -> None:
    cfg = BiddingConfig(min_multiplier=0.5, max_multiplier=2.0, bid_floor=1.0, bid_cap=15.0)
    bids = bound_bids([0.1, 4.0, 10.0, 100.0], base_bid=8.0, cfg=cfg)
    assert bids == pytest.approx([4.0, 4.0, 10.0, 15.0])
    assert bound_bids([0.1, 100.0], None, cfg) == pytest.approx([1.0, 15.0])
    params = BidParams("linear", base_bid=8.0, mean_value=1.0)
    assert make_bids(params, [0.01, 1.0, 50.0], cfg) == pytest.approx([4.0, 8.0, 15.0])


def test_pacing_update_moves_towards_the_plan_within_bounds() -> None:
    cfg = BiddingConfig(pacing_step=2.0, pacing_min=0.1, pacing_max=4.0, pacing_gain=1.0)
    assert pacing_update(1.0, slot_spend=50.0, planned=100.0, cfg=cfg) == pytest.approx(2.0)
    assert pacing_update(1.0, slot_spend=125.0, planned=100.0, cfg=cfg) == pytest.approx(0.8)
    assert pacing_update(1.0, slot_spend=1000.0, planned=100.0, cfg=cfg) == pytest.approx(0.5)
    assert pacing_update(1.0, slot_spend=0.0, planned=100.0, cfg=cfg) == pytest.approx(2.0)
    assert pacing_update(3.0, slot_spend=0.0, planned=100.0, cfg=cfg) == pytest.approx(4.0)
    assert pacing_update(0.15, slot_spend=1e6, planned=1.0, cfg=cfg) == pytest.approx(0.1)


def test_placement_weights_relative_to_placement_mean() -> None:
    frame = pl.DataFrame(
        {
            "ad_id": [1, 1, 2, 2, 1, 2, 3],
            "placement": ["top", "top", "top", "top", "side", "side", "side"],
            "value": [4.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        }
    )
    out = placement_weights(frame, BiddingConfig(max_multiplier=1.4))
    got = {(r["ad_id"], r["placement"]): r["placement_weight"] for r in out.iter_rows(named=True)}
    # top mean = 2: ad 1 mean 3 -> 1.5, clipped to 1.4; ad 2 mean 1 -> 0.5; side mean 0 -> 1
    assert got == pytest.approx(
        {(1, "top"): 1.4, (2, "top"): 0.5, (1, "side"): 1.0, (2, "side"): 1.0, (3, "side"): 1.0}
    )
    with pytest.raises(ValueError, match="value"):
        placement_weights(frame.drop("value"))


def test_config_validation_and_strategy_names() -> None:
    assert split_strategy("paced") == ("linear", True)
    assert split_strategy("paced_ortb") == ("ortb", True)
    assert split_strategy("constant") == ("constant", False)
    with pytest.raises(ValueError, match="unknown strategy"):
        BiddingConfig(strategies=("linear", "greedy"))
    with pytest.raises(ValueError):
        BiddingConfig(min_multiplier=2.0, max_multiplier=1.0)
    with pytest.raises(ValueError):
        BiddingConfig(budget_fractions=(0.0,))
    with pytest.raises(ValueError):
        make_bids(BidParams("greedy", 1.0), [1.0], BiddingConfig())


# A golden bid table: six cells of three ads in two placements (one segment), by hand.
#   (ad, placement) goal  terms             pctr  pcvr  value
#   (1, top)        cpc   max_cpc 2         0.10  -     0.20
#   (1, side)       cpc   max_cpc 2         0.05  -     0.10
#   (2, top)        cpa   target_cpa 40     0.02  0.50  0.40
#   (2, side)       cpa   target_cpa 40     0.01  0.25  0.10
#   (3, top)        cpc   max_cpc 1         0.00  -     0.00
#   (3, side)       cpc   max_cpc 1         0.60  -     0.60
# placement means: top 0.6 / 3 = 0.2, side 0.8 / 3 = 0.2667
GOLDEN_CELLS = pl.DataFrame(
    {
        "ad_id": [1, 1, 2, 2, 3, 3],
        "placement": ["top", "side"] * 3,
        "segment": ["all"] * 6,
        "goal": ["cpc", "cpc", "cpa", "cpa", "cpc", "cpc"],
        "max_cpc": [2.0, 2.0, None, None, 1.0, 1.0],
        "target_cpa": [None, None, 40.0, 40.0, None, None],
        "pctr": [0.10, 0.05, 0.02, 0.01, 0.0, 0.6],
        "pcvr": [0.3, 0.3, 0.5, 0.25, 0.3, 0.3],
    }
)


def _golden(table: pl.DataFrame, col: str) -> list[float]:
    return table.sort("ad_id", pl.col("placement") == "side")[col].to_list()


def test_golden_bid_table_linear() -> None:
    # linear: b0 * value / mean value = 2 * v / 0.2 = 10 v, clipped to 2.5 * base_bid = 5
    cfg = BiddingConfig(max_multiplier=2.5)
    table = bid_table(GOLDEN_CELLS, BidParams("linear", base_bid=2.0, mean_value=0.2), cfg)
    assert _golden(table, "value") == pytest.approx([0.2, 0.1, 0.4, 0.1, 0.0, 0.6])
    assert _golden(table, "bid") == pytest.approx([2.0, 1.0, 4.0, 1.0, 0.0, 5.0])
    assert _golden(table, "bid_multiplier") == pytest.approx([1.0, 0.5, 2.0, 0.5, 0.0, 2.5])
    # ad value / placement mean: top 0.2 / 0.2, 0.4 / 0.2, 0 / 0.2; side 0.1 / (0.8 / 3) =
    # 0.375 twice and 0.6 / (0.8 / 3) = 2.25 (inside the 2.5 bound)
    assert _golden(table, "placement_weight") == pytest.approx([1.0, 0.375, 2.0, 0.375, 0.0, 2.25])


def test_golden_bid_table_ortb() -> None:
    # c = 0.5, bid 2 at mean value 0.2 -> lambda = 0.5 * 0.2 / (4 + 2) = 1/60;
    # bid = sqrt(30 v + 0.25) - 0.5: v 0.2 -> 2, 0.4 -> 3, 0.1 -> sqrt(3.25) - 0.5, 0.6 -> ...
    lam = ortb_lambda(2.0, 0.5, 0.2)
    assert lam == pytest.approx(1 / 60)
    params = BidParams("ortb", base_bid=2.0, mean_value=0.2, c=0.5, lam=lam, paced=True)
    table = bid_table(GOLDEN_CELLS, params, BiddingConfig())
    low, high = np.sqrt(3.25) - 0.5, np.sqrt(18.25) - 0.5
    assert _golden(table, "bid") == pytest.approx([2.0, low, 3.0, low, 0.0, high])
    assert _golden(table, "bid_multiplier") == pytest.approx(
        [1.0, low / 2, 1.5, low / 2, 0.0, high / 2]
    )


def test_placement_weights_are_the_same_to_the_last_bit_on_every_call():
    # a plain group_by mean sums partial results in thread order: 10 calls gave 10 different
    # tables at this size
    rng = np.random.default_rng(0)
    n = 400_000
    frame = pl.DataFrame(
        {
            "ad_id": rng.integers(0, 3000, n),
            "placement": rng.choice(["feed", "search_top", "search_side", "product_page"], n),
            "value": rng.random(n),
        }
    )
    tables = {placement_weights(frame)["placement_weight"].to_numpy().tobytes() for _ in range(4)}
    assert len(tables) == 1
