"""The behaviour log of the simulated marketplace: searches, product views, clicks and purchases.

History before the impression period (and organic events during it) follows each user's hidden
tastes; around the impressions come the search behind each search impression, the product
viewed behind each product-page impression, and the clicks and purchases that follow them. Each
event is strictly ordered in time around the impression it belongs to.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.impressions import INTENT_MIX, is_search
from pipeline.sources.simulated.marketplace import Hidden, MarketConfig
from pipeline.sources.simulated.queries import QUERIES_PER_INTENT, QueryPool
from pipeline.sources.simulated.sampling import (
    DAY_S,
    Grouped,
    gathered,
    grouped,
    sample_in_group,
    sample_taste,
    to_datetime,
)
from pipeline.sources.simulated.vocabulary import SUBTOPICS

EVENTS = ("search", "view", "click", "purchase")  # event codes 0..3

# one block of events: (user, seconds, event code, ad index or -1, query text or None)
Events = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _history(
    cfg: MarketConfig, h: Hidden, pool: QueryPool, by_sub: Grouped, rng: np.random.Generator
) -> Events:
    """Poisson(activity) events per user over the history window and the period, on the user's
    tastes (a search: a pool query of the subtopic, its intent drawn from the impressions'
    intent mix); an ad cannot be seen before it exists, so such events move to the ad's
    launch."""
    n_hist = rng.poisson(cfg.history_events_per_user * h.activity / h.activity.mean())
    hu = np.repeat(np.arange(h.tastes.shape[0]), n_hist)
    span = (cfg.history_days + cfg.days) * DAY_S
    hts = -cfg.history_days * DAY_S + rng.integers(span, size=len(hu))
    hsub = sample_taste(rng, h.tastes, hu)
    hkind = rng.choice(4, size=len(hu), p=[0.45, 0.35, 0.16, 0.04])  # search view click purchase
    had = sample_in_group(rng, by_sub, hsub, 1)[:, 0]
    hts = np.maximum(hts, h.ad_created_s[had] + 60)
    keep = hts < cfg.days * DAY_S
    hu, hts, hsub, hkind, had = hu[keep], hts[keep], hsub[keep], hkind[keep], had[keep]
    intent = rng.choice(len(INTENT_MIX), size=len(hu), p=INTENT_MIX)
    hq = pool.text[hsub, intent, rng.integers(QUERIES_PER_INTENT, size=len(hu))]
    return hu, hts, hkind, np.where(hkind == 0, -1, had), np.where(hkind == 0, hq, None)


def _searches(extras: dict) -> Events:
    """The search behind each search impression, 2 s before it."""
    srch = is_search(extras["placement"])
    n = int(srch.sum())
    return (
        extras["user"][srch],
        extras["ts_s"][srch] - 2,
        np.zeros(n, int),
        np.full(n, -1),
        extras["query_text"][srch],
    )


def _product_views(h: Hidden, extras: dict, by_sub: Grouped, rng: np.random.Generator) -> Events:
    """The product being viewed behind each product-page impression (an ad of the subtopic the
    user is after that already existed), 5 s before it."""
    pp = extras["placement"] == 3
    ts_s = extras["ts_s"][pp]
    viewed = sample_in_group(rng, by_sub, extras["target"][pp], 1)[:, 0]
    ok = h.ad_created_s[viewed] < ts_s - 5
    n = int(ok.sum())
    return (
        extras["user"][pp][ok],
        ts_s[ok] - 5,
        np.ones(n, int),
        viewed[ok],
        np.full(n, None, dtype=object),
    )


def _follow_ups(extras: dict, rng: np.random.Generator) -> list[Events]:
    """The click (1-30 s later) and the purchase (1 min - 2 h later) that follow an impression."""
    out = []
    for mask, code, delay in ((extras["click"], 2, (1, 30)), (extras["conversion"], 3, (60, 7200))):
        m = int(mask.sum())
        out.append(
            (
                extras["user"][mask],
                extras["ts_s"][mask] + rng.integers(*delay, m),
                np.full(m, code),
                extras["ad"][mask],
                np.full(m, None, dtype=object),
            )
        )
    return out


def simulate_behaviour(
    cfg: MarketConfig, h: Hidden, extras: dict, rng: np.random.Generator
) -> pl.DataFrame:
    """Behaviour log (canonical schema) around the impressions that `extras` describes (see
    `impressions.simulate_impressions`), sorted by user, time and event."""
    by_sub = grouped(h.ad_subtopic, len(SUBTOPICS))
    parts = [
        _history(cfg, h, extras["queries"], by_sub, rng),
        _searches(extras),
        _product_views(h, extras, by_sub, rng),
        *_follow_ups(extras, rng),
    ]
    users, ts, kind, ads, qtext = (np.concatenate([p[i] for p in parts]) for i in range(5))
    order = np.lexsort((kind, ts, users))
    o = gathered(order, users=users, ts=ts, kind=kind, ads=ads)
    return pl.DataFrame(
        {
            "user_id": o["users"] + 1,
            "ts": to_datetime(cfg, o["ts"]),
            "event": np.array(EVENTS)[o["kind"]],
            "ad_id": pl.Series(o["ads"] + 1).set(pl.Series(o["ads"] < 0), None),
            "query": qtext[order].tolist(),
        },
        schema=schema.BEHAVIOUR,
        strict=False,
    )
