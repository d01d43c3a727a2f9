"""Impressions, labels and the oracle of the simulated marketplace (vectorised numpy).

Each impression draws a context (user, time, placement, position, device, and what the user is
after right now); a logging policy chooses the ad it shows (relevance estimate + quality +
exploration + a bonus for new ads); hidden true probabilities decide clicks and conversions:

- click: semantic match between the user's tastes (and the query) and the ad's subtopic, the
  category-level match, position and placement bias, ad quality, user propensity, hour, device;
- conversion (only after a click): match, price against the user's price sensitivity, query
  intent, landing-page quality, buy propensity;
- on search, the query: its intent, whether it names the ad's brand or another one, and whether
  the ad's price is within the price cap it states (click and conversion).

The random draws happen in one fixed order (context, query pool, policy, labels, market price),
so a seed gives the same market byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.marketplace import DEVICES, Hidden, MarketConfig, subtopic_category
from pipeline.sources.simulated.queries import QUERIES_PER_INTENT, QueryPool, build_pool
from pipeline.sources.simulated.query_vocabulary import INTENTS
from pipeline.sources.simulated.sampling import (
    BLOCK,
    DAY_S,
    gathered,
    group_draws,
    grouped,
    pick_in_group,
    sample_taste,
    to_datetime,
)
from pipeline.sources.simulated.vocabulary import SUBTOPICS

PLACEMENTS = ("search_top", "search_side", "feed", "product_page")
PLACEMENT_MIX = (0.3, 0.2, 0.35, 0.15)
PLACEMENT_EFFECT = np.array([0.55, -0.55, -0.25, 0.0])
POSITION_SLOTS = (3, 5, 8, 4)  # positions per placement
POSITION_DECAY = np.array([0.45, 0.3, 0.12, 0.2])  # logit drop per position step
# per intent of query_vocabulary.INTENTS: buy compare reviews cheap info support
INTENT_MIX = (0.27, 0.18, 0.18, 0.14, 0.13, 0.10)
INTENT_CLICK = np.array([0.2, 0.1, 0.0, 0.05, -0.35, -0.5])
INTENT_CONVERT = np.array([0.8, -0.1, -0.3, 0.2, -0.9, -1.6])
BRAND_MATCH_CLICK = 1.0  # the query names the ad's brand
BRAND_MATCH_CONVERT = 0.6
BRAND_MISMATCH_CLICK = -0.5  # the query names another brand
BRAND_MISMATCH_CONVERT = -0.5
CAP_MET_CONVERT = 0.3  # the ad's price is within the query's price cap
CAP_EXCEEDED_CLICK = -0.3  # the ad's price is above it
CAP_EXCEEDED_CONVERT = -1.2
HOUR_WEIGHT = np.concatenate(  # by hour of day: 0-11, 12-23
    [
        [1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.4, 1.8, 2, 2, 2],
        [2.2, 2, 1.9, 1.9, 2, 2.2, 2.6, 3, 3, 2.6, 2, 1.4],
    ]
)


def is_search(placement: np.ndarray) -> np.ndarray:
    """Whether each placement code is a search placement (the first two of `PLACEMENTS`)."""
    return placement <= 1


def _match(h: Hidden, users: np.ndarray, ads: np.ndarray, sub_cat: np.ndarray) -> tuple:
    """Subtopic-level and category-level taste match of each (user, ad) pair, in [0, 1]."""
    sub = h.ad_subtopic[ads]
    w_sub = h.tastes[users, sub]
    n_cat = sub_cat.max() + 1
    per_cat = np.zeros((h.tastes.shape[0], n_cat))
    for c in range(n_cat):
        per_cat[:, c] = h.tastes[:, sub_cat == c].sum(axis=1)
    w_cat = per_cat[users, h.ad_category[ads]] - w_sub
    return np.minimum(1.0, 2.0 * w_sub), np.minimum(1.0, 2.0 * w_cat)


@dataclass(frozen=True)
class Context:
    """Who sees each impression, when, where, and what they are after (one entry per impression,
    in draw order). `target` (the subtopic the user is after right now) is hidden state."""

    user: np.ndarray
    hour: np.ndarray
    ts_s: np.ndarray  # seconds since the start of the period
    placement: np.ndarray
    position: np.ndarray
    device: np.ndarray
    target: np.ndarray
    intent: np.ndarray
    query_pick: np.ndarray

    @property
    def is_search(self) -> np.ndarray:
        return is_search(self.placement)


def draw_context(cfg: MarketConfig, h: Hidden, rng: np.random.Generator) -> Context:
    """The context of `cfg.n_impressions` impressions: active users more often, a daily rhythm,
    the placement mix, top positions more often, mostly the user's own device, and a target
    that is mostly one of the user's tastes and sometimes anything (exploring)."""
    n = cfg.n_impressions
    user_w = h.activity / h.activity.sum()
    user = rng.choice(len(user_w), size=n, p=user_w)
    day = rng.integers(cfg.days, size=n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    ts_s = day * DAY_S + hour * 3600 + rng.integers(3600, size=n)
    placement = rng.choice(len(PLACEMENTS), size=n, p=PLACEMENT_MIX)
    slots = np.array(POSITION_SLOTS)[placement]
    position = 1 + np.floor(rng.power(0.6, size=n) * slots).astype(np.int64)
    device = np.where(rng.random(n) < 0.9, h.user_device[user], rng.integers(3, size=n))
    target = sample_taste(rng, h.tastes, user)
    explore = rng.random(n) < 0.15
    target = np.where(explore, rng.integers(len(SUBTOPICS), size=n), target)
    intent = rng.choice(len(INTENTS), size=n, p=INTENT_MIX)
    query_pick = rng.integers(QUERIES_PER_INTENT, size=n)
    return Context(user, hour, ts_s, placement, position, device, target, intent, query_pick)


def logging_policy(
    cfg: MarketConfig, h: Hidden, ctx: Context, rng: np.random.Generator
) -> np.ndarray:
    """The ad index each impression shows: the best-scoring live ad among `cfg.candidates` drawn
    from the target subtopic, its category and anywhere (the oldest ads when none is live).

    Every random number is drawn for all impressions first, in one order, so a seed gives the
    same log; the candidates are then scored `BLOCK` impressions at a time, whose
    (block, candidates) arrays stay in the CPU's cache where the whole log's would not."""
    n, k = len(ctx.user), cfg.candidates
    sub_cat = subtopic_category()
    by_sub = grouped(h.ad_subtopic, len(SUBTOPICS))
    by_cat = grouped(h.ad_category, sub_cat.max() + 1)
    in_sub = group_draws(rng, by_sub, n, k // 2)
    in_cat = group_draws(rng, by_cat, n, k // 4)
    anywhere = rng.integers(len(h.ad_subtopic), size=(n, k - k // 2 - k // 4))
    noise = rng.gumbel(0.0, cfg.exploration, size=(n, k))
    ad = np.empty(n, np.int64)
    no_active = np.empty(n, bool)
    for start in range(0, n, BLOCK):
        r = slice(start, start + BLOCK)
        target = ctx.target[r]
        cand = np.concatenate(
            [
                pick_in_group(by_sub, target, in_sub[0][r], in_sub[1][r]),
                pick_in_group(by_cat, sub_cat[target], in_cat[0][r], in_cat[1][r]),
                anywhere[r],
            ],
            axis=1,
        )
        age_s = ctx.ts_s[r, None] - h.ad_created_s[cand]
        score = (
            1.5 * (h.ad_subtopic[cand] == target[:, None])
            + 0.6 * (h.ad_category[cand] == sub_cat[target][:, None])
            + 0.5 * h.ad_quality[cand]
            + cfg.new_ad_boost * (age_s < 3 * DAY_S)
            + noise[r]
        )
        score = np.where(age_s >= 0, score, -np.inf)
        best = np.argmax(score, axis=1)
        rows = np.arange(len(cand))
        ad[r] = cand[rows, best]
        no_active[r] = ~np.isfinite(score[rows, best])
    oldest = np.argsort(h.ad_created_s)[:50]
    return np.where(no_active, rng.choice(oldest, size=n), ad)


def query_effects(
    h: Hidden, ctx: Context, ad: np.ndarray, pool: QueryPool
) -> tuple[np.ndarray, np.ndarray]:
    """(click, conversion) logit shifts of each impression from its query's brand and price
    cap against the ad's (zero off search and for queries that name neither)."""
    pick = (ctx.target, ctx.intent, ctx.query_pick)
    named = ctx.is_search & pool.has_brand[pick]
    same = named & (pool.brand[pick] == h.ad_brand[ad])
    other = named & ~same
    cap = pool.price_cap[pick]
    capped = ctx.is_search & ~np.isnan(cap)
    within = capped & (h.ad_price[ad] <= cap)  # a nan cap compares False
    over = capped & ~within
    click = BRAND_MATCH_CLICK * same + BRAND_MISMATCH_CLICK * other + CAP_EXCEEDED_CLICK * over
    convert = (
        BRAND_MATCH_CONVERT * same
        + BRAND_MISMATCH_CONVERT * other
        + CAP_MET_CONVERT * within
        + CAP_EXCEEDED_CONVERT * over
    )
    return click, convert


def true_probabilities(
    cfg: MarketConfig, h: Hidden, ctx: Context, ad: np.ndarray, pool: QueryPool
) -> tuple[np.ndarray, np.ndarray]:
    """(p_click, p_conversion after a click) of each impression, from public and hidden state."""
    sub_cat = subtopic_category()
    q_click, q_convert = query_effects(h, ctx, ad, pool)
    m_sub, m_cat = _match(h, ctx.user, ad, sub_cat)
    is_search, target, user = ctx.is_search, ctx.target, ctx.user
    ad_sub = h.ad_subtopic[ad]
    q_same = is_search & (ad_sub == target)
    q_cat = is_search & (ad_sub != target) & (h.ad_category[ad] == sub_cat[target])
    hour = ctx.hour
    hour_eff = np.where((hour >= 18) & (hour <= 22), 0.15, np.where(hour < 6, -0.2, 0.0))
    logit_click = (
        cfg.ctr_bias
        + 1.9 * m_sub
        + 0.7 * m_cat
        + 1.3 * q_same
        + 0.35 * q_cat
        + np.where(is_search, INTENT_CLICK[ctx.intent], 0.0)
        + q_click
        + PLACEMENT_EFFECT[ctx.placement]
        - POSITION_DECAY[ctx.placement] * (ctx.position - 1)
        + h.ad_quality[ad]
        + h.click_propensity[user]
        + hour_eff
        + np.array([0.0, 0.1, -0.05])[ctx.device]
    )
    logit_conv = (
        cfg.cvr_bias
        + 1.0 * m_sub
        + 0.6 * q_same
        + np.where(is_search, INTENT_CONVERT[ctx.intent], 0.0)
        + q_convert
        - 1.1 * h.price_sensitivity[user] * h.ad_log_price_z[ad]
        + h.ad_landing[ad]
        + h.buy_propensity[user]
        + np.array([-0.15, 0.15, 0.0])[ctx.device]
    )
    return 1.0 / (1.0 + np.exp(-logit_click)), 1.0 / (1.0 + np.exp(-logit_conv))


def market_price(
    h: Hidden, placement: np.ndarray, ad: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The highest competing bid per impression, in the same currency as bids. It depends on
    public facts only (placement, the ad's category), never on the hidden taste match, so no
    column of the feature tables is derived from hidden state."""
    base_price = np.array([0.022, 0.008, 0.01, 0.012])[placement]
    n_categories = subtopic_category().max() + 1
    category_level = rng.lognormal(0.0, 0.25, n_categories)[h.ad_category[ad]]
    return np.round(base_price * category_level * rng.lognormal(0.0, 0.6, len(ad)), 5)


def simulate_impressions(
    cfg: MarketConfig, h: Hidden, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Impressions (canonical schema), the oracle (true probabilities), and extras for behaviour."""
    ctx = draw_context(cfg, h, rng)
    pool = build_pool(rng)
    ad = logging_policy(cfg, h, ctx, rng)
    p_click, p_conv = true_probabilities(cfg, h, ctx, ad, pool)
    click = rng.random(len(ad)) < p_click
    conversion = click & (rng.random(len(ad)) < p_conv)
    market = market_price(h, ctx.placement, ad, rng)
    order = np.lexsort((ctx.user, ctx.ts_s))
    o = gathered(
        order,
        ts_s=ctx.ts_s,
        user=ctx.user,
        ad=ad,
        placement=ctx.placement,
        position=ctx.position,
        device=ctx.device,
        target=ctx.target,
        intent=ctx.intent,
        query_pick=ctx.query_pick,
        click=click,
        conversion=conversion,
        market=market,
        p_click=p_click,
        p_conv=p_conv,
    )
    # the texts picked after the reordering: from the small pool, not a gather of n objects
    search = is_search(o["placement"])
    query = np.where(search, pool.text[o["target"], o["intent"], o["query_pick"]], None)
    ids = np.arange(1, len(ad) + 1)
    frame = pl.DataFrame(
        {
            "impression_id": ids,
            "ts": to_datetime(cfg, o["ts_s"]),
            "user_id": o["user"] + 1,
            "ad_id": o["ad"] + 1,
            "placement": np.array(PLACEMENTS)[o["placement"]],
            "position": o["position"],
            "device": np.array(DEVICES)[o["device"]],
            "query": query.tolist(),
            "click": o["click"].astype(np.int8),
            "conversion": o["conversion"].astype(np.int8),
            "cost": o["market"],
            "market_price": o["market"],
        },
        schema=schema.IMPRESSIONS,
        strict=False,
    )
    oracle = pl.DataFrame(
        {"impression_id": ids, "p_click": o["p_click"], "p_conversion": o["p_conv"]}
    )
    extras = {
        "ts_s": o["ts_s"],
        "user": o["user"],
        "ad": o["ad"],
        "placement": o["placement"],
        "target": o["target"],
        "click": o["click"],
        "conversion": o["conversion"],
        "queries": pool,
        "query_text": query,
        "intent": np.where(search, np.array(INTENTS)[o["intent"]], None),
    }
    return frame, oracle, extras
