"""Offline replay of bids against logged auctions, and tuning of strategies on an earlier period.

Rules, in the order of the log: an auction is won when `bid >= market_price` and the market price
still fits in the budget left; the winner pays the market price and collects the logged click and
conversion. An auction whose price exceeds the budget left is lost and the replay goes on, so a
later, cheaper auction can still be won. This is the rule of the iPinYou benchmark code (han-cai
/rlb-dp `Linear_Bidding.py` caps each bid at the budget left; Zhang et al.'s ORTB simulation wins
only when the cost still fits the budget); spend never exceeds the budget.

Pure numpy / polars: the loop over auctions is vectorised (cumulative sums between the points
where the budget runs short), except the pacing controller that steps once per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from models.bidding import (
    BiddingConfig,
    BidParams,
    bound_bids,
    fit_ortb_c,
    make_bids,
    ortb_lambda,
    pacing_update,
    split_strategy,
)

OBJECTIVES = ("clicks", "conversions")


@dataclass(frozen=True)
class Auctions:
    """A logged auction stream in time order: value per auction, market price, outcomes."""

    value: np.ndarray
    market_price: np.ndarray
    click: np.ndarray
    conversion: np.ndarray

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, value: str = "value") -> Auctions:
        """From a frame with `value` (the column named), `market_price`, `click`, `conversion`.

        A frame without `conversion` gets zeros.
        """
        conversion = (
            frame["conversion"].to_numpy()
            if "conversion" in frame.columns
            else np.zeros(len(frame))
        )
        return cls(
            value=frame[value].to_numpy().astype(np.float64),
            market_price=frame["market_price"].to_numpy().astype(np.float64),
            click=frame["click"].to_numpy().astype(np.int64),
            conversion=np.asarray(conversion).astype(np.int64),
        )

    def __len__(self) -> int:
        return int(self.market_price.size)

    @property
    def cost(self) -> float:
        """What the log paid for all its auctions: the base of budget fractions."""
        return float(self.market_price.sum())


@dataclass(frozen=True)
class ReplayResult:
    auctions: int
    impressions: int
    clicks: int
    conversions: int
    spend: float
    budget: float

    @property
    def ecpc(self) -> float:
        return self.spend / self.clicks if self.clicks else float("nan")

    @property
    def cpa(self) -> float:
        return self.spend / self.conversions if self.conversions else float("nan")

    @property
    def win_rate(self) -> float:
        return self.impressions / self.auctions if self.auctions else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "auctions": self.auctions,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "spend": self.spend,
            "budget": self.budget,
            "ecpc": self.ecpc,
            "cpa": self.cpa,
            "win_rate": self.win_rate,
        }


def win_mask(bids: ArrayLike, market_price: ArrayLike, budget: float) -> np.ndarray:
    """Which auctions are won, in order: `bid >= price` and the price fits the budget left."""
    bids = np.asarray(bids, dtype=np.float64)
    price = np.asarray(market_price, dtype=np.float64)
    won = np.zeros(price.size, dtype=bool)
    cand = np.flatnonzero(bids >= price)
    left = float(budget)
    while cand.size:
        cand = cand[price[cand] <= left]
        if not cand.size:
            break
        spent = np.cumsum(price[cand])
        k = int(np.searchsorted(spent, left, side="right"))  # prefix that fits, k >= 1
        won[cand[:k]] = True
        left -= float(spent[k - 1])
        cand = cand[k + 1 :]  # cand[k] (if any) costs more than what is left: lost
    return won


def _result(won: np.ndarray, stream: Auctions, budget: float) -> ReplayResult:
    return ReplayResult(
        auctions=len(stream),
        impressions=int(won.sum()),
        clicks=int(stream.click[won].sum()),
        conversions=int(stream.conversion[won].sum()),
        spend=float(stream.market_price[won].sum()),
        budget=float(budget),
    )


def replay(
    bids: ArrayLike,
    market_price: ArrayLike,
    click: ArrayLike,
    conversion: ArrayLike | None,
    budget: float,
) -> ReplayResult:
    """Replay fixed bids over a logged stream (time order) under a budget."""
    price = np.asarray(market_price, dtype=np.float64)
    stream = Auctions(
        value=np.zeros(price.size),
        market_price=price,
        click=np.asarray(click, dtype=np.int64),
        conversion=np.zeros(price.size, dtype=np.int64)
        if conversion is None
        else np.asarray(conversion, dtype=np.int64),
    )
    return _result(win_mask(bids, price, budget), stream, budget)


def _pace(
    bids: np.ndarray, stream: Auctions, budget: float, cfg: BiddingConfig, base_bid: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The pacing loop: (won mask, the multiplier each slot bid with)."""
    won = np.zeros(len(stream), dtype=bool)
    left, multiplier = float(budget), 1.0
    slots = np.array_split(np.arange(len(stream)), min(cfg.pacing_slots, max(len(stream), 1)))
    used = np.ones(len(slots))
    for i, idx in enumerate(slots):
        used[i] = multiplier
        if not idx.size:
            continue
        planned = left / (len(slots) - i)
        slot_bids = bound_bids(bids[idx] * multiplier, base_bid, cfg)
        allowance = min(left, cfg.pacing_slot_cap * planned) if cfg.pacing_slot_cap else left
        w = win_mask(slot_bids, stream.market_price[idx], allowance)
        won[idx] = w
        spent = float(stream.market_price[idx][w].sum())
        left -= spent
        multiplier = pacing_update(multiplier, spent, planned, cfg)
    return won, used


def replay_paced(
    bids: ArrayLike,
    stream: Auctions,
    budget: float,
    cfg: BiddingConfig,
    base_bid: float | None = None,
) -> ReplayResult:
    """Replay `bids` times a pacing multiplier that is updated after each of `cfg.pacing_slots`.

    Slots are equal-count chunks of the stream; each slot plans the budget left spread evenly
    over the slots left and may spend at most `pacing_slot_cap` times that plan (auctions
    beyond are lost, as when the budget is out); the multiplier starts at 1 and moves by
    `pacing_update`. Paced bids are bounded again (`bound_bids` around `base_bid`, or only the
    absolute bounds without it).
    """
    won, _ = _pace(np.asarray(bids, dtype=np.float64), stream, budget, cfg, base_bid)
    return _result(won, stream, budget)


def pacing_multipliers(
    params: BidParams, stream: Auctions, budget: float, cfg: BiddingConfig
) -> np.ndarray:
    """The pacing multiplier of every slot when `params` bid over `stream` under `budget`."""
    bids = make_bids(params, stream.value, cfg)
    return _pace(bids, stream, budget, cfg, params.base_bid)[1]


def run_strategy(
    params: BidParams, stream: Auctions, budget: float, cfg: BiddingConfig
) -> ReplayResult:
    """Bid with `params` over `stream` and replay (paced strategies through the controller)."""
    bids = make_bids(params, stream.value, cfg)
    if params.paced:
        return replay_paced(bids, stream, budget, cfg, params.base_bid)
    return _result(win_mask(bids, stream.market_price, budget), stream, budget)


def base_bid_grid(stream: Auctions, cfg: BiddingConfig) -> np.ndarray:
    """Candidate bids at mean value: a log grid of multiples of the mean market price."""
    mean_price = float(stream.market_price.mean())
    return mean_price * np.geomspace(cfg.grid_min, cfg.grid_max, cfg.grid_points)


def _candidates(strategy: str, stream: Auctions, cfg: BiddingConfig) -> list[BidParams]:
    base, paced = split_strategy(strategy, cfg.paced_base)
    mean_value = float(stream.value.mean()) or 1.0
    grid = [float(b) for b in base_bid_grid(stream, cfg)]
    if base == "ortb":
        c = cfg.ortb_c or fit_ortb_c(stream.market_price)
        return [
            BidParams(base, b, mean_value, c, ortb_lambda(b, c, mean_value), paced) for b in grid
        ]
    return [BidParams(base, b, mean_value, paced=paced) for b in grid]


def tune(
    strategy: str,
    stream: Auctions,
    budget: float,
    cfg: BiddingConfig,
    objective: str = "clicks",
) -> BidParams:
    """Grid-search the bid at mean value (and so ORTB's lambda) that maximises `objective`.

    Ties go to more clicks (for the conversions objective, where a short tuning period holds
    few conversions), then to the smaller spend. The mean value and ORTB's c come from `stream`
    too, so the returned parameters carry everything needed to bid on a later period.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    best: tuple[float, ...] | None = None
    chosen: BidParams | None = None
    for params in _candidates(strategy, stream, cfg):
        res = run_strategy(params, stream, budget, cfg)
        score = (float(getattr(res, objective)), float(res.clicks), -res.spend)
        if best is None or score > best:
            best, chosen = score, params
    assert chosen is not None  # grid_points >= 2
    return chosen


def compare_strategies(
    tuning: Auctions,
    test: Auctions,
    cfg: BiddingConfig,
    objective: str = "clicks",
    fractions: tuple[float, ...] | None = None,
) -> pl.DataFrame:
    """Tune every configured strategy on `tuning`, replay on `test`, for each budget fraction.

    A budget is a fraction of the logged cost of its own period (tuning or test). One row per
    (strategy, budget fraction): the tuned parameters and the test-period replay result.
    """
    rows = []
    for fraction in fractions or cfg.budget_fractions:
        for strategy in cfg.strategies:
            params = tune(strategy, tuning, fraction * tuning.cost, cfg, objective)
            result = run_strategy(params, test, fraction * test.cost, cfg)
            rows.append(
                {
                    "strategy": strategy,
                    "budget_fraction": fraction,
                    **params.as_dict(),
                    **result.as_dict(),
                }
            )
    return pl.DataFrame(rows)


def oracle_share(
    table: pl.DataFrame, objective: str = "conversions", reference: str = "oracle"
) -> pl.DataFrame:
    """How much of the reference stream's `objective` each other stream collects per budget.

    `table` is `compare_strategies` output with a `stream` column (one stream is `reference`,
    bidding on true probabilities over the same auctions). Rows per (stream, budget_fraction):
    one per strategy (`share` = the stream's / the reference's result with that strategy) and
    one with strategy "best" (the stream's best strategy / the reference's best strategy, named
    in `best_strategy` and `reference_strategy`). A reference result of 0 gives a NaN share.
    """
    keys = ["strategy", "budget_fraction"]
    ref = table.filter(pl.col("stream") == reference).select(
        *keys, reference_result=pl.col(objective)
    )
    rest = table.filter(pl.col("stream") != reference).select(
        "stream", *keys, result=pl.col(objective)
    )

    def best(frame: pl.DataFrame, by: list[str], col: str, name: str) -> pl.DataFrame:
        ranked = frame.sort([*by, col, "strategy"], descending=[False] * len(by) + [True, False])
        return ranked.group_by(by, maintain_order=True).first().rename({"strategy": name})

    per_strategy = rest.join(ref, on=keys, how="inner").with_columns(
        best_strategy=pl.lit(None, pl.String), reference_strategy=pl.lit(None, pl.String)
    )
    best_rows = (
        best(rest, ["stream", "budget_fraction"], "result", "best_strategy")
        .join(
            best(ref, ["budget_fraction"], "reference_result", "reference_strategy"),
            on="budget_fraction",
        )
        .with_columns(strategy=pl.lit("best"))
    )
    cols = ["stream", "budget_fraction", "strategy", "result", "reference_result"]
    cols += ["best_strategy", "reference_strategy"]
    out = pl.concat([per_strategy.select(cols), best_rows.select(cols)], how="vertical")
    share = (
        pl.when(pl.col("reference_result") > 0)
        .then(pl.col("result") / pl.col("reference_result"))
        .otherwise(float("nan"))
    )
    return out.with_columns(share=share.cast(pl.Float64)).sort(
        "stream", "budget_fraction", "strategy"
    )
