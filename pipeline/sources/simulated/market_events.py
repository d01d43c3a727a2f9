"""Impressions, labels and behaviour events of the simulated marketplace (vectorised numpy).

A logging policy chooses which ad each impression shows (relevance estimate + bid + exploration
+ a bonus for new ads); hidden true probabilities decide clicks and conversions:

- click: semantic match between the user's tastes (and the query) and the ad's subtopic, the
  category-level match, position and placement bias, ad quality, user propensity, hour, device;
- conversion (only after a click): match, price against the user's price sensitivity, query
  intent, landing-page quality, buy propensity.
"""

from __future__ import annotations

from datetime import UTC

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.marketplace import DEVICES, Hidden, MarketConfig, subtopic_category
from pipeline.sources.simulated.vocabulary import QUERY_TEMPLATES, SUBTOPICS

PLACEMENTS = ("search_top", "search_side", "feed", "product_page")
PLACEMENT_MIX = (0.3, 0.2, 0.35, 0.15)
PLACEMENT_EFFECT = np.array([0.55, -0.55, -0.25, 0.0])
POSITION_SLOTS = (3, 5, 8, 4)  # positions per placement
POSITION_DECAY = np.array([0.45, 0.3, 0.12, 0.2])  # logit drop per position step
INTENTS = ("buy", "compare", "reviews", "cheap", "info")
INTENT_MIX = (0.3, 0.2, 0.2, 0.15, 0.15)
INTENT_CLICK = np.array([0.2, 0.1, 0.0, 0.05, -0.35])
INTENT_CONVERT = np.array([0.8, -0.1, -0.3, 0.2, -0.9])
HOUR_WEIGHT = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.4,
        0.8,
        1.4,
        1.8,
        2,
        2,
        2,
        2.2,
        2,
        1.9,
        1.9,
        2,
        2.2,
        2.6,
        3,
        3,
        2.6,
        2,
        1.4,
    ]
)
QUERIES_PER_INTENT = 4
DAY_S = 86_400


def to_datetime(cfg: MarketConfig, seconds: np.ndarray) -> pl.Series:
    """Seconds since `cfg.start` -> a naive microsecond Datetime series."""
    t0_us = int(cfg.t0.replace(tzinfo=UTC).timestamp()) * 1_000_000
    return pl.Series(t0_us + np.asarray(seconds, dtype=np.int64) * 1_000_000).cast(schema.TS)


def query_pool(rng: np.random.Generator) -> np.ndarray:
    """(n_subtopics, n_intents, QUERIES_PER_INTENT) query strings written from the vocabulary."""
    out = np.empty((len(SUBTOPICS), len(INTENTS), QUERIES_PER_INTENT), dtype=object)
    for s, sub in enumerate(SUBTOPICS):
        for i, intent in enumerate(INTENTS):
            for q in range(QUERIES_PER_INTENT):
                templates = QUERY_TEMPLATES[intent]
                text = templates[rng.integers(len(templates))].format(
                    noun=sub.nouns[rng.integers(len(sub.nouns))],
                    keyword=sub.keywords[rng.integers(len(sub.keywords))],
                    attr=sub.attributes[rng.integers(len(sub.attributes))],
                )
                out[s, i, q] = text
    return out


def _grouped(values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR layout of item indices by group: (order, starts, counts)."""
    order = np.argsort(values, kind="stable")
    counts = np.bincount(values, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def _sample_in_group(rng, csr, groups: np.ndarray, size: int) -> np.ndarray:
    order, starts, counts = csr
    c = counts[groups][:, None]
    pick = np.floor(rng.random((len(groups), size)) * np.maximum(c, 1)).astype(np.int64)
    idx = order[np.minimum(starts[groups][:, None] + pick, len(order) - 1)]
    return np.where(c > 0, idx, rng.integers(len(order), size=(len(groups), size)))


def _sample_taste(rng: np.random.Generator, tastes: np.ndarray, users: np.ndarray) -> np.ndarray:
    """One subtopic per row drawn from the user's taste mixture (at most 4 non-zeros a user)."""
    top = np.argsort(-tastes, axis=1, kind="stable")[:, :4]
    weights = np.take_along_axis(tastes, top, axis=1)
    cum = np.cumsum(weights[users], axis=1)
    pick = (cum < rng.random((len(users), 1)) * cum[:, -1:]).sum(axis=1)
    return top[users, np.minimum(pick, 3)]


def _match(h: Hidden, users: np.ndarray, ads: np.ndarray, sub_cat: np.ndarray) -> tuple:
    """Subtopic-level and category-level taste match of each (user, ad) pair, in [0, 1]."""
    sub = h.ad_subtopic[ads]
    w_sub = h.tastes[users, sub]
    n_cat = sub_cat.max() + 1
    per_cat = np.zeros((h.tastes.shape[0], n_cat))
    for c in range(n_cat):
        per_cat[:, c] = h.tastes[:, sub_cat == c].sum(axis=1)
    cat_mass = per_cat[users]
    w_cat = cat_mass[np.arange(len(users)), h.ad_category[ads]] - w_sub
    return np.minimum(1.0, 2.0 * w_sub), np.minimum(1.0, 2.0 * w_cat)


def simulate_impressions(
    cfg: MarketConfig, h: Hidden, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Impressions (canonical schema), the oracle (true probabilities), and extras for behaviour."""
    n = cfg.n_impressions
    sub_cat = subtopic_category()
    n_sub = len(SUBTOPICS)
    user_w = h.activity / h.activity.sum()
    user = rng.choice(len(user_w), size=n, p=user_w)
    day = rng.integers(cfg.days, size=n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    ts_s = day * DAY_S + hour * 3600 + rng.integers(3600, size=n)
    placement = rng.choice(len(PLACEMENTS), size=n, p=PLACEMENT_MIX)
    is_search = placement <= 1
    slots = np.array(POSITION_SLOTS)[placement]
    position = 1 + np.floor(rng.power(0.6, size=n) * slots).astype(np.int64)
    device = np.where(rng.random(n) < 0.9, h.user_device[user], rng.integers(3, size=n))
    # what the user is after right now: mostly one of their tastes, sometimes exploring
    target = _sample_taste(rng, h.tastes, user)
    explore = rng.random(n) < 0.15
    target = np.where(explore, rng.integers(n_sub, size=n), target)
    intent = rng.choice(len(INTENTS), size=n, p=INTENT_MIX)
    q_pick = rng.integers(QUERIES_PER_INTENT, size=n)
    # logging policy: candidates from the target subtopic, its category, and anywhere
    k = cfg.candidates
    by_sub = _grouped(h.ad_subtopic, n_sub)
    by_cat = _grouped(h.ad_category, sub_cat.max() + 1)
    cand = np.concatenate(
        [
            _sample_in_group(rng, by_sub, target, k // 2),
            _sample_in_group(rng, by_cat, sub_cat[target], k // 4),
            rng.integers(len(h.ad_subtopic), size=(n, k - k // 2 - k // 4)),
        ],
        axis=1,
    )
    age_s = ts_s[:, None] - h.ad_created_s[cand]
    score = (
        1.5 * (h.ad_subtopic[cand] == target[:, None])
        + 0.6 * (h.ad_category[cand] == sub_cat[target][:, None])
        + 0.5 * h.ad_quality[cand]
        + cfg.new_ad_boost * (age_s < 3 * DAY_S)
        + rng.gumbel(0.0, cfg.exploration, size=cand.shape)
    )
    score = np.where(age_s >= 0, score, -np.inf)
    best = np.argmax(score, axis=1)
    ad = cand[np.arange(n), best]
    no_active = ~np.isfinite(score[np.arange(n), best])
    oldest = np.argsort(h.ad_created_s)[:50]
    ad = np.where(no_active, rng.choice(oldest, size=n), ad)
    # true probabilities
    m_sub, m_cat = _match(h, user, ad, sub_cat)
    ad_sub = h.ad_subtopic[ad]
    q_same = is_search & (ad_sub == target)
    q_cat = is_search & (ad_sub != target) & (h.ad_category[ad] == sub_cat[target])
    hour_eff = np.where((hour >= 18) & (hour <= 22), 0.15, np.where(hour < 6, -0.2, 0.0))
    logit_click = (
        cfg.ctr_bias
        + 1.9 * m_sub
        + 0.7 * m_cat
        + 1.3 * q_same
        + 0.35 * q_cat
        + np.where(is_search, INTENT_CLICK[intent], 0.0)
        + PLACEMENT_EFFECT[placement]
        - POSITION_DECAY[placement] * (position - 1)
        + h.ad_quality[ad]
        + h.click_propensity[user]
        + hour_eff
        + np.array([0.0, 0.1, -0.05])[device]
    )
    p_click = 1.0 / (1.0 + np.exp(-logit_click))
    logit_conv = (
        cfg.cvr_bias
        + 1.0 * m_sub
        + 0.6 * q_same
        + np.where(is_search, INTENT_CONVERT[intent], 0.0)
        - 1.1 * h.price_sensitivity[user] * h.ad_log_price_z[ad]
        + h.ad_landing[ad]
        + h.buy_propensity[user]
        + np.array([-0.15, 0.15, 0.0])[device]
    )
    p_conv = 1.0 / (1.0 + np.exp(-logit_conv))
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < p_conv)
    # market: the highest competing bid per impression, in the same currency as bids
    # competing bids depend on public facts only (placement, the ad's category), never on the
    # hidden taste match, so no column of the feature tables is derived from hidden state
    base_price = np.array([0.022, 0.008, 0.01, 0.012])[placement]
    category_level = rng.lognormal(0.0, 0.25, sub_cat.max() + 1)[h.ad_category[ad]]
    market = np.round(base_price * category_level * rng.lognormal(0.0, 0.6, n), 5)
    queries = query_pool(rng)
    query = np.where(is_search, queries[target, intent, q_pick], None)
    order = np.lexsort((user, ts_s))
    frame = pl.DataFrame(
        {
            "impression_id": np.arange(1, n + 1),
            "ts": to_datetime(cfg, ts_s[order]),
            "user_id": user[order] + 1,
            "ad_id": ad[order] + 1,
            "placement": np.array(PLACEMENTS)[placement[order]],
            "position": position[order],
            "device": np.array(DEVICES)[device[order]],
            "query": query[order].tolist(),
            "click": click[order].astype(np.int8),
            "conversion": conversion[order].astype(np.int8),
            "cost": market[order],
            "market_price": market[order],
        },
        schema=schema.IMPRESSIONS,
        strict=False,
    )
    oracle = pl.DataFrame(
        {
            "impression_id": np.arange(1, n + 1),
            "p_click": p_click[order],
            "p_conversion": p_conv[order],
        }
    )
    extras = {
        "ts_s": ts_s[order],
        "user": user[order],
        "ad": ad[order],
        "placement": placement[order],
        "target": target[order],
        "click": click[order],
        "conversion": conversion[order],
        "queries": queries,
        "query_text": query[order],
    }
    return frame, oracle, extras


def simulate_behaviour(
    cfg: MarketConfig, h: Hidden, extras: dict, rng: np.random.Generator
) -> pl.DataFrame:
    """Behaviour log: history before the period, and the searches, product views, clicks and
    purchases that surround the impressions (each strictly ordered in time around them)."""
    queries = extras["queries"]
    n_users = h.tastes.shape[0]
    by_sub = _grouped(h.ad_subtopic, len(SUBTOPICS))
    # 1. history: Poisson(activity) events per user over the history window (and organic
    #    events during the period), on the user's tastes
    n_hist = rng.poisson(cfg.history_events_per_user * h.activity / h.activity.mean())
    hu = np.repeat(np.arange(n_users), n_hist)
    span = (cfg.history_days + cfg.days) * DAY_S
    hts = -cfg.history_days * DAY_S + rng.integers(span, size=len(hu))
    hsub = _sample_taste(rng, h.tastes, hu)
    hkind = rng.choice(4, size=len(hu), p=[0.45, 0.35, 0.16, 0.04])  # search view click purchase
    had = _sample_in_group(rng, by_sub, hsub, 1)[:, 0]
    # an ad cannot be viewed before it exists: move such events to the ad's launch
    hts = np.maximum(hts, h.ad_created_s[had] + 60)
    keep = hts < cfg.days * DAY_S
    hu, hts, hsub, hkind, had = hu[keep], hts[keep], hsub[keep], hkind[keep], had[keep]
    hq = queries[hsub, rng.integers(queries.shape[1], size=len(hu)), 0]
    parts = [
        (hu, hts, hkind, np.where(hkind == 0, -1, had), np.where(hkind == 0, hq, None)),
    ]
    # 2. the search behind each search impression, just before it
    ts_s, user, ad, target = extras["ts_s"], extras["user"], extras["ad"], extras["target"]
    srch = extras["placement"] <= 1
    parts.append(
        (
            user[srch],
            ts_s[srch] - 2,
            np.zeros(srch.sum(), int),
            np.full(srch.sum(), -1),
            extras["query_text"][srch],
        )
    )
    # 3. the product being viewed behind each product-page impression
    pp = extras["placement"] == 3
    viewed = _sample_in_group(rng, by_sub, target[pp], 1)[:, 0]
    viewed_ok = h.ad_created_s[viewed] < ts_s[pp] - 5
    n_pp = int(viewed_ok.sum())
    parts.append(
        (
            user[pp][viewed_ok],
            ts_s[pp][viewed_ok] - 5,
            np.ones(n_pp, int),
            viewed[viewed_ok],
            np.full(n_pp, None, dtype=object),
        )
    )
    # 4. clicks and purchases that follow the impressions
    c, v = extras["click"], extras["conversion"]
    for mask, kind_code, delay in ((c, 2, (1, 30)), (v, 3, (60, 7200))):
        m = int(mask.sum())
        parts.append(
            (
                user[mask],
                ts_s[mask] + rng.integers(*delay, m),
                np.full(m, kind_code),
                ad[mask],
                np.full(m, None, dtype=object),
            )
        )
    users = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([p[2] for p in parts])
    ads = np.concatenate([p[3] for p in parts])
    qtext = np.concatenate([p[4] for p in parts])
    order = np.lexsort((kind, ts, users))
    events = np.array(["search", "view", "click", "purchase"])
    return pl.DataFrame(
        {
            "user_id": users[order] + 1,
            "ts": to_datetime(cfg, ts[order]),
            "event": events[kind[order]],
            "ad_id": pl.Series(ads[order] + 1).set(pl.Series(ads[order] < 0), None),
            "query": qtext[order].tolist(),
        },
        schema=schema.BEHAVIOUR,
        strict=False,
    )


def simulate_market(cfg: MarketConfig, seed: int) -> dict[str, pl.DataFrame]:
    """All tables of one simulated marketplace, deterministic by `seed`.

    Keys: ads, users, behaviour, impressions (the public raw tables), oracle (true
    probabilities by impression id), ads_hidden / user_tastes (the hidden subtopics, for tests
    and evaluation slices only; no feature job reads them).
    """
    from pipeline.sources.simulated.marketplace import make_ads, make_users

    rng = np.random.default_rng(seed)
    ads, ad_hidden = make_ads(cfg, rng)
    users, user_hidden = make_users(cfg, rng)
    hidden = Hidden(**ad_hidden, **user_hidden)
    impressions, oracle, extras = simulate_impressions(cfg, hidden, rng)
    behaviour = simulate_behaviour(cfg, hidden, extras, rng)
    u, s = np.nonzero(hidden.tastes)
    return {
        "ads": ads,
        "users": users,
        "behaviour": behaviour,
        "impressions": impressions,
        "oracle": oracle,
        "ads_hidden": pl.DataFrame(
            {
                "ad_id": ads["ad_id"],
                "subtopic": [SUBTOPICS[i].key for i in hidden.ad_subtopic],
            }
        ),
        "user_tastes": pl.DataFrame(
            {
                "user_id": u + 1,
                "subtopic": [SUBTOPICS[i].key for i in s],
                "weight": hidden.tastes[u, s],
            }
        ),
    }
