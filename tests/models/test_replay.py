"""Replay evaluator: a hand-computed stream, ties, budget exhaustion, pacing and tuning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from models.bidding import BiddingConfig, BidParams
from models.replay import (
    Auctions,
    compare_strategies,
    oracle_share,
    pacing_multipliers,
    replay,
    replay_paced,
    run_strategy,
    tune,
    win_mask,
)

# 10 auctions in time order. Walk with budget 40 (hand-computed):
#  1 bid 10 >= 8  win, pay 8  (left 32)  click, conversion
#  2 bid 5  <  6  lost
#  3 bid 8  == 8  win (tie), pay 8 (left 24)
#  4 bid 20 >= 12 win, pay 12 (left 12)  click
#  5 bid 3  >= 1  win, pay 1  (left 11)
#  6 bid 7  == 7  win (tie), pay 7 (left 4)  click, conversion
#  7 bid 15 >= 14 but 14 > 4 left: lost, the replay goes on
#  8 bid 9  >= 2  win, pay 2  (left 2)
#  9 bid 4  == 4  but 4 > 2 left: lost
# 10 bid 12 >= 10 but 10 > 2 left: lost
BIDS = np.array([10, 5, 8, 20, 3, 7, 15, 9, 4, 12], dtype=float)
PRICE = np.array([8, 6, 8, 12, 1, 7, 14, 2, 4, 10], dtype=float)
CLICK = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1])
CONV = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 1])


def test_hand_made_stream_known_outcome() -> None:
    res = replay(BIDS, PRICE, CLICK, CONV, budget=40)
    won = win_mask(BIDS, PRICE, 40)
    assert np.flatnonzero(won).tolist() == [0, 2, 3, 4, 5, 7]
    assert (res.impressions, res.clicks, res.conversions, res.spend) == (6, 3, 2, 38.0)
    assert res.auctions == 10
    assert res.win_rate == pytest.approx(0.6)
    assert res.ecpc == pytest.approx(38 / 3)
    assert res.cpa == pytest.approx(19.0)


def test_ties_win_and_exact_budget_is_affordable() -> None:
    assert win_mask([5.0], [5.0], 100).tolist() == [True]
    assert win_mask([4.999], [5.0], 100).tolist() == [False]
    # budget 38 is used to the last unit: auction 8 costs exactly what is left
    res = replay(BIDS, PRICE, CLICK, CONV, budget=38)
    assert (res.impressions, res.clicks, res.spend) == (6, 3, 38.0)


def test_budget_exhaustion_skips_unaffordable_and_continues() -> None:
    res = replay(BIDS, PRICE, CLICK, CONV, budget=20)
    # wins 1 (8), 3 (8), 5 (1), 8 (2); 4 and 6 no longer fit
    assert np.flatnonzero(win_mask(BIDS, PRICE, 20)).tolist() == [0, 2, 4, 7]
    assert (res.impressions, res.clicks, res.conversions, res.spend) == (4, 1, 1, 19.0)
    unlimited = replay(BIDS, PRICE, CLICK, CONV, budget=1e9)
    assert (unlimited.impressions, unlimited.clicks, unlimited.spend) == (9, 6, 66.0)


def test_no_click_gives_nan_ecpc_and_zero_budget_wins_nothing() -> None:
    res = replay(BIDS, PRICE, np.zeros(10), None, budget=0)
    assert res.impressions == 0 and res.spend == 0
    assert math.isnan(res.ecpc) and math.isnan(res.cpa)


def _reference_mask(bids: np.ndarray, price: np.ndarray, budget: float) -> np.ndarray:
    """The rule written as the obvious loop, to check the vectorised one."""
    won, left = np.zeros(price.size, dtype=bool), budget
    for i in range(price.size):
        if bids[i] >= price[i] and price[i] <= left:
            won[i], left = True, left - price[i]
    return won


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_replay_matches_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    price = rng.integers(0, 120, n).astype(float)
    bids = rng.integers(0, 150, n).astype(float)
    for budget in (0.0, 37.0, 5000.0, 40_000.0, 1e9):
        got = win_mask(bids, price, budget)
        assert np.array_equal(got, _reference_mask(bids, price, budget))
        assert price[got].sum() <= budget


def _stream(n: int = 4000, seed: int = 0) -> Auctions:
    rng = np.random.default_rng(seed)
    value = rng.uniform(0.001, 0.02, n)
    price = rng.integers(1, 100, n).astype(float)
    click = (rng.uniform(size=n) < value * 5).astype(int)
    conv = click * (rng.uniform(size=n) < 0.3)
    return Auctions(value, price, click, conv)


def test_pacing_spreads_spend_over_the_stream() -> None:
    stream = _stream()
    n = len(stream)
    # clicks only in the second half: a bid that wins everything spends the budget before it
    click = np.r_[np.zeros(n // 2, dtype=int), np.ones(n - n // 2, dtype=int)]
    stream = dataclasses.replace(stream, click=click)
    cfg = BiddingConfig(pacing_slots=20, pacing_step=2.0)
    budget = stream.cost / 16
    high = np.full(n, 200.0)
    unpaced = replay(high, stream.market_price, stream.click, None, budget)
    paced = replay_paced(high, stream, budget, cfg)
    assert unpaced.clicks == 0 and unpaced.spend <= budget
    assert paced.clicks > 0.25 * paced.impressions  # a good part of the wins in the second half
    assert paced.spend <= budget
    assert replay_paced(high, stream, budget, cfg) == paced  # deterministic


def test_tune_finds_the_best_constant_bid() -> None:
    # ten useless auctions priced 5, then ten clicking auctions priced 10; budget 100:
    # a bid in [5, 10) spends 50 for no click; a bid >= 10 also wins five clicking auctions
    price = np.array([5.0] * 10 + [10.0] * 10)
    click = np.array([0] * 10 + [1] * 10)
    stream = Auctions(np.ones(20), price, click, np.zeros(20, dtype=int))
    cfg = BiddingConfig(grid_min=0.3, grid_max=2.0, grid_points=40)
    params = tune("constant", stream, budget=100.0, cfg=cfg)
    res = run_strategy(params, stream, 100.0, cfg)
    assert params.strategy == "constant" and not params.paced
    assert res.clicks == 5 and 10 <= params.base_bid < 10.5  # the smallest bid that gets them


def test_tune_linear_prefers_value_and_conversions_objective() -> None:
    # the value marks the clicking auctions; linear bidding can win only those
    value = np.array([1.0, 3.0] * 20)
    price = np.full(40, 10.0)
    click = np.array([0, 1] * 20)
    conv = np.array([0, 1] * 20)
    stream = Auctions(value, price, click, conv)
    cfg = BiddingConfig(grid_min=0.2, grid_max=3.0, grid_points=60)
    lin = tune("linear", stream, budget=100.0, cfg=cfg, objective="conversions")
    const = tune("constant", stream, budget=100.0, cfg=cfg, objective="conversions")
    assert run_strategy(lin, stream, 100.0, cfg).conversions == 10
    assert run_strategy(const, stream, 100.0, cfg).conversions == 5
    with pytest.raises(ValueError, match="objective"):
        tune("linear", stream, 100.0, cfg, objective="revenue")


def test_compare_strategies_one_row_per_strategy_and_budget() -> None:
    tuning, test = _stream(seed=1), _stream(seed=2)
    cfg = BiddingConfig(grid_points=8, pacing_slots=8)
    table = compare_strategies(tuning, test, cfg, fractions=(1 / 32, 1 / 8))
    assert table.height == 2 * len(cfg.strategies)
    assert set(table["strategy"]) == set(cfg.strategies)
    assert (table["spend"] <= table["budget"]).all()
    assert table.filter(pl.col("strategy") == "ortb")["c"].min() > 0
    assert table.filter(pl.col("strategy").str.starts_with("paced"))["paced"].all()


def test_from_frame_defaults_conversion_to_zero() -> None:
    frame = pl.DataFrame({"pctr": [0.1, 0.2], "market_price": [3, 4], "click": [0, 1]})
    stream = Auctions.from_frame(frame, "pctr")
    assert stream.conversion.tolist() == [0, 0] and stream.cost == 7.0
    assert len(stream) == 2
    params = BidParams("linear", 10.0, mean_value=0.15)
    assert run_strategy(params, stream, 100, BiddingConfig()).impressions == 2


def test_conversion_ties_go_to_more_clicks() -> None:
    # no conversion anywhere: every bid ties on conversions; bids >= 10 also win the clicks
    price = np.array([5.0] * 10 + [10.0] * 10)
    click = np.array([0] * 10 + [1] * 10)
    stream = Auctions(np.ones(20), price, click, np.zeros(20, dtype=int))
    cfg = BiddingConfig(grid_min=0.3, grid_max=2.0, grid_points=40)
    params = tune("constant", stream, 100.0, cfg, objective="conversions")
    assert run_strategy(params, stream, 100.0, cfg).clicks == 5


def test_oracle_share_per_strategy_and_best() -> None:
    rows = [
        # stream, strategy, budget, conversions
        ("oracle", "linear", 0.5, 10),
        ("oracle", "ortb", 0.5, 8),
        ("oracle", "linear", 1.0, 0),
        ("oracle", "ortb", 1.0, 0),
        ("lgbm", "linear", 0.5, 6),
        ("lgbm", "ortb", 0.5, 9),
        ("lgbm", "linear", 1.0, 1),
        ("lgbm", "ortb", 1.0, 2),
    ]
    table = pl.DataFrame(
        rows, schema=["stream", "strategy", "budget_fraction", "conversions"], orient="row"
    )
    out = oracle_share(table, "conversions")
    got = {
        (r["budget_fraction"], r["strategy"]): (r["share"], r["best_strategy"])
        for r in out.iter_rows(named=True)
    }
    assert set(out["stream"]) == {"lgbm"}
    # same strategy: 6 / 10 and 9 / 8; best: ortb's 9 against the oracle's best, linear's 10
    assert got[(0.5, "linear")] == (pytest.approx(0.6), None)
    assert got[(0.5, "ortb")] == (pytest.approx(9 / 8), None)
    assert got[(0.5, "best")] == (pytest.approx(0.9), "ortb")
    assert out.filter(pl.col("strategy") == "best")["reference_strategy"].to_list()[0] == "linear"
    # the oracle got nothing: no share
    assert math.isnan(got[(1.0, "best")][0]) and math.isnan(got[(1.0, "linear")][0])


def test_pacing_multipliers_trace_the_controller() -> None:
    # 40 auctions at price 10, a constant bid of 1, budget ample: nothing is won until the
    # multiplier reaches 10 (doubling per empty slot, capped by pacing_max and max_multiplier)
    stream = Auctions(np.ones(40), np.full(40, 10.0), np.zeros(40, int), np.zeros(40, int))
    cfg = BiddingConfig(pacing_slots=8, pacing_step=2.0, pacing_max=10.0, max_multiplier=10.0)
    params = BidParams("constant", 1.0, paced=True)
    trace = pacing_multipliers(params, stream, 1000.0, cfg)
    assert trace.tolist() == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert run_strategy(params, stream, 1000.0, cfg).impressions == 20  # slots 5 to 8
