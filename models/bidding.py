"""Bidding math: expected value per impression, bid strategies, pacing, placement weights.

Pure numpy / polars. Bids are in the unit of the market prices they compete with (e.g. CPM).

- constant: the same bid everywhere.
- linear (Perlich et al., KDD 2012): `b0 * value / mean value`.
- ORTB (Zhang, Yuan & Wang, KDD 2014): `sqrt(c / lambda * value + c^2) - c`, where `c` is fitted
  to the market-price distribution through the winning function `w(b) = b / (c + b)`.
- paced: the linear (or any) bid times a multiplier that a controller moves slot by slot so that
  spend tracks the budget (see `pacing_update`; the loop lives in `models.replay`).

Every strategy is parametrised by `base_bid`, the bid for an impression of mean value; for ORTB
`lambda` follows from it (`ortb_lambda`). Bids are bounded as multipliers of `base_bid`
(`[min_multiplier, max_multiplier]`) and in absolute terms (`[bid_floor, bid_cap]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

BASE_STRATEGIES = ("constant", "linear", "ortb")
STRATEGIES = (*BASE_STRATEGIES, "paced")  # also "paced_<base>", e.g. "paced_ortb"


@dataclass(frozen=True)
class BiddingConfig:
    """Strategies, bounds, tuning grid and pacing for bids, replay and export."""

    # compared by the replay; "paced" = "paced_<paced_base>"
    strategies: tuple[str, ...] = (
        "constant",
        "linear",
        "ortb",
        "paced_constant",
        "paced_linear",
        "paced_ortb",
    )
    budget_fractions: tuple[float, ...] = (0.015625, 0.03125, 0.0625, 0.125)  # of logged cost
    base_bid: float = 1.0  # bid for an impression of mean value when nothing is tuned (export)
    min_multiplier: float = 0.0  # bid / base_bid and placement weights are clipped into
    max_multiplier: float = 10.0  # [min_multiplier, max_multiplier]
    bid_floor: float = 0.0  # absolute bounds on every bid; bid_cap 0 = no cap
    bid_cap: float = 0.0
    ortb_c: float = 0.0  # 0 = fit c to the tuning period's market prices
    # tuning grid for base_bid, as multiples of the tuning period's mean market price
    grid_min: float = 0.05
    grid_max: float = 6.0
    grid_points: int = 48
    paced_base: str = "linear"  # the strategy the pacing multiplier scales
    pacing_slots: int = 192  # equal-count slots of the auction stream
    pacing_gain: float = 1.0  # exponent on the planned / actual spend ratio
    pacing_step: float = 2.0  # per-slot change of the multiplier within [1/step, step]
    pacing_slot_cap: float = 3.0  # a slot spends at most this multiple of its plan; 0 = no cap
    pacing_min: float = 0.1  # bounds of the pacing multiplier
    pacing_max: float = 10.0
    replay_ipinyou: bool = False  # the replay stage also runs the iPinYou 2997 bid log
    ipinyou_path: str = "../shared/data/ipinyou-2997-bidlog"

    def __post_init__(self) -> None:
        if self.paced_base not in BASE_STRATEGIES:
            raise ValueError(
                f"paced_base must be constant, linear or ortb, got {self.paced_base!r}"
            )
        for name in self.strategies:
            try:
                split_strategy(name, self.paced_base)
            except ValueError as exc:
                raise ValueError(f"strategies: {exc}") from None
        if not self.strategies or len(set(self.strategies)) < len(self.strategies):
            raise ValueError(f"strategies must name distinct strategies, got {self.strategies}")
        fractions = self.budget_fractions
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"budget_fractions must lie in (0, 1], got {fractions}")
        if len(set(fractions)) < len(fractions):
            raise ValueError(f"budget_fractions names a budget twice: {fractions}")
        self._check_bounds()
        if not 0 < self.grid_min < self.grid_max or self.grid_points < 2:
            raise ValueError(
                "need 0 < grid_min < grid_max and grid_points >= 2, got "
                f"{self.grid_min}, {self.grid_max} and {self.grid_points}"
            )
        self._check_pacing()

    def _check_pacing(self) -> None:
        minimum = {"pacing_slots": 1, "pacing_step": 1, "pacing_gain": 0, "pacing_min": 0}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.pacing_max <= 0 or self.pacing_max < self.pacing_min:
            raise ValueError(
                f"pacing_max must be > 0 and >= pacing_min ({self.pacing_min}), "
                f"got {self.pacing_max}"
            )
        if self.pacing_slot_cap and self.pacing_slot_cap < 1:
            raise ValueError(
                f"pacing_slot_cap must be 0 (no cap) or >= 1, got {self.pacing_slot_cap}"
            )

    def _check_bounds(self) -> None:
        if self.base_bid <= 0:
            raise ValueError(f"base_bid must be > 0, got {self.base_bid}")
        if not 0 <= self.min_multiplier <= self.max_multiplier or self.max_multiplier <= 0:
            raise ValueError(
                "need 0 <= min_multiplier <= max_multiplier and max_multiplier > 0, got "
                f"{self.min_multiplier} and {self.max_multiplier}"
            )
        if self.bid_floor < 0 or self.ortb_c < 0:
            raise ValueError(
                f"bid_floor and ortb_c must be >= 0, got {self.bid_floor} and {self.ortb_c}"
            )
        if self.bid_cap and self.bid_cap < self.bid_floor:
            raise ValueError(
                f"bid_cap must be 0 (none) or >= bid_floor ({self.bid_floor}), got {self.bid_cap}"
            )


def split_strategy(name: str, paced_base: str = "linear") -> tuple[str, bool]:
    """Base strategy and whether it is paced: "paced" -> (paced_base, True), "paced_ortb" ->
    ("ortb", True), "linear" -> ("linear", False)."""
    base, paced = name, False
    if name == "paced":
        base, paced = paced_base, True
    elif name.startswith("paced_"):
        base, paced = name.removeprefix("paced_"), True
    if base not in BASE_STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)}, paced_<base>)"
        )
    return base, paced


@dataclass(frozen=True)
class BidParams:
    """A strategy and the parameters that turn values into bids."""

    strategy: str  # constant | linear | ortb
    base_bid: float  # bid at mean value (the constant bid; b0 for linear)
    mean_value: float = 1.0  # normaliser: mean value of the tuning period
    c: float = 0.0  # ORTB market constant
    lam: float = 0.0  # ORTB lambda
    paced: bool = False  # scaled by a pacing multiplier during the replay

    def as_dict(self) -> dict[str, float | str | bool]:
        return {
            "base_strategy": self.strategy,
            "paced": self.paced,
            "base_bid": self.base_bid,
            "mean_value": self.mean_value,
            "c": self.c,
            "lam": self.lam,
        }


def expected_value(
    pctr: ArrayLike, pcvr: ArrayLike, goal: ArrayLike, max_cpc: ArrayLike, target_cpa: ArrayLike
) -> np.ndarray:
    """Value of one impression: `pctr * max_cpc` (goal cpc) or `pctr * pcvr * target_cpa` (cpa)."""
    goal = np.asarray(goal, dtype=object)
    bad = ~np.isin(goal, ["cpc", "cpa"])
    if bad.any():
        raise ValueError(f"goal must be 'cpc' or 'cpa', got {sorted(set(goal[bad].tolist()))}")
    pctr = np.asarray(pctr, dtype=np.float64)
    pcvr = np.asarray(pcvr, dtype=np.float64)
    cpc = np.asarray(max_cpc, dtype=np.float64)
    cpa = np.asarray(target_cpa, dtype=np.float64)
    is_cpa = goal == "cpa"
    with np.errstate(invalid="ignore"):
        value = np.where(is_cpa, pctr * pcvr * cpa, pctr * cpc)
    return value


def frame_value(frame: pl.DataFrame, pctr: str = "pctr", pcvr: str = "pcvr") -> np.ndarray:
    """`expected_value` of a frame's `pctr` / `pcvr` columns (named) and its `goal`, `max_cpc`,
    `target_cpa` columns."""
    return expected_value(
        frame[pctr].to_numpy(),
        frame[pcvr].to_numpy(),
        frame["goal"].to_numpy(),
        frame["max_cpc"].to_numpy(),
        frame["target_cpa"].to_numpy(),
    )


def constant_bids(value: ArrayLike, bid: float) -> np.ndarray:
    return np.full(np.shape(value), float(bid))


def linear_bids(value: ArrayLike, b0: float, mean_value: float) -> np.ndarray:
    """Perlich et al. 2012: `b0 * value / mean_value`."""
    return b0 * np.asarray(value, dtype=np.float64) / mean_value


def ortb_bids(value: ArrayLike, c: float, lam: float) -> np.ndarray:
    """Zhang, Yuan & Wang 2014 (ORTB1): `sqrt(c / lam * value + c^2) - c`."""
    v = np.maximum(np.asarray(value, dtype=np.float64), 0.0)
    return np.sqrt(c / lam * v + c * c) - c


def ortb_lambda(base_bid: float, c: float, mean_value: float) -> float:
    """The lambda for which ORTB bids `base_bid` on an impression of mean value."""
    return c * mean_value / (base_bid * base_bid + 2.0 * base_bid * c)


def fit_ortb_c(market_price: ArrayLike) -> float:
    """Least-squares fit of `w(b) = b / (c + b)` to the empirical win-rate curve.

    The curve is `W(b) = P(market price <= b)` at every integer bid from 1 to the largest price
    (or 64 points for non-integer prices); a coarse log grid over c is refined twice.
    """
    price = np.sort(np.asarray(market_price, dtype=np.float64))
    if price.size == 0 or price[-1] <= 0:
        raise ValueError("need positive market prices to fit ORTB's c")
    top = price[-1]
    b = np.arange(1.0, np.ceil(top) + 1) if top >= 8 else np.linspace(top / 64, top, 64)
    win = np.searchsorted(price, b, side="right") / price.size
    grid = np.geomspace(top * 1e-3, top * 1e2, 400)
    for _ in range(3):
        err = ((b[None, :] / (grid[:, None] + b[None, :]) - win[None, :]) ** 2).sum(axis=1)
        i = int(np.argmin(err))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        best = grid[i]
        grid = np.linspace(lo, hi, 200)
    return float(best)


def raw_bids(params: BidParams, value: ArrayLike) -> np.ndarray:
    """Unbounded bids of `params.strategy` (for paced params: before the pacing multiplier)."""
    name = params.strategy
    if name == "constant":
        return constant_bids(value, params.base_bid)
    if name == "linear":
        return linear_bids(value, params.base_bid, params.mean_value)
    if name == "ortb":
        return ortb_bids(value, params.c, params.lam)
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(BASE_STRATEGIES)})")


def bound_bids(bids: ArrayLike, base_bid: float | None, cfg: BiddingConfig) -> np.ndarray:
    """Clip `bids / base_bid` into the multiplier bounds, then into `[bid_floor, bid_cap]`.

    `base_bid=None` applies only the absolute bounds.
    """
    out = np.asarray(bids, dtype=np.float64)
    if base_bid is not None:
        out = np.clip(out, base_bid * cfg.min_multiplier, base_bid * cfg.max_multiplier)
    out = np.maximum(out, cfg.bid_floor)
    return np.minimum(out, cfg.bid_cap) if cfg.bid_cap > 0 else out


def make_bids(params: BidParams, value: ArrayLike, cfg: BiddingConfig) -> np.ndarray:
    """Bounded bids of a strategy for every value."""
    return bound_bids(raw_bids(params, value), params.base_bid, cfg)


def pacing_update(
    multiplier: float, slot_spend: float, planned: float, cfg: BiddingConfig
) -> float:
    """Next slot's multiplier: scaled by `(planned / spent) ** gain`, step- and range-bounded.

    `planned` is the budget left spread evenly over the slots left. A slot that spent nothing
    raises the multiplier by the full step.
    """
    ratio = cfg.pacing_step if slot_spend <= 0 else planned / slot_spend
    factor = float(np.clip(ratio**cfg.pacing_gain, 1.0 / cfg.pacing_step, cfg.pacing_step))
    return float(np.clip(multiplier * factor, cfg.pacing_min, cfg.pacing_max))


def stable_mean(column: str) -> pl.Expr:
    """The mean of a column within a group of an eager group_by, the same to the last bit on
    every run: a plain `mean()` in a group_by or over(), or any mean in a lazy group_by, sums
    partial results in thread order."""
    return pl.col(column).sort().mean()


def stable_sum(column: str) -> pl.Expr:
    """The sum of a column within a group, in a fixed order (see `stable_mean`)."""
    return pl.col(column).sort().sum()


def placement_weights(frame: pl.DataFrame, cfg: BiddingConfig | None = None) -> pl.DataFrame:
    """Per (ad_id, placement): the ad's mean value there / the placement's mean value.

    `frame` has columns `ad_id`, `placement`, `value`. Weights are clipped into the multiplier
    bounds; a placement whose mean value is 0 gives weight 1 (no information to tilt on).
    """
    cfg = cfg or BiddingConfig()
    missing = {"ad_id", "placement", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"placement_weights needs columns {sorted(missing)}")
    placement_mean = frame.group_by("placement").agg(placement_mean=stable_mean("value"))
    return (
        frame.group_by("ad_id", "placement")
        .agg(ad_mean=stable_mean("value"))
        .join(placement_mean, on="placement")
        .with_columns(
            placement_weight=pl.when(pl.col("placement_mean") > 0)
            .then(pl.col("ad_mean") / pl.col("placement_mean"))
            .otherwise(1.0)
            .clip(cfg.min_multiplier, cfg.max_multiplier)
        )
        .select("ad_id", "placement", "placement_weight")
        .sort("ad_id", "placement")
    )


def bid_table(cells: pl.DataFrame, params: BidParams, cfg: BiddingConfig) -> pl.DataFrame:
    """Value, bid, bid multiplier and placement weight per (ad_id, placement, segment) cell.

    `cells` has `ad_id`, `placement`, `segment`, `goal`, `max_cpc`, `target_cpa`, `pctr`,
    `pcvr`. `bid` is `params`' base formula, bounded (`make_bids`; a paced strategy's pacing
    multiplier is applied by the ad server on top); `bid_multiplier = bid / params.base_bid`;
    `placement_weight` is the ad's mean cell value in the placement over the placement's mean
    (`placement_weights`, cells weighted equally).
    """
    value = frame_value(cells)
    bids = make_bids(params, value, cfg)
    out = cells.with_columns(
        value=pl.Series(value, dtype=pl.Float64),
        bid=pl.Series(bids, dtype=pl.Float64),
        bid_multiplier=pl.Series(bids / params.base_bid, dtype=pl.Float64),
    )
    weights = placement_weights(out.select("ad_id", "placement", "value"), cfg)
    return out.join(weights, on=["ad_id", "placement"], how="left")
