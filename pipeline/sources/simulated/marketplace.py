"""The simulated ad marketplace (the embedded default dataset): ads, users and their hidden state.

Every ad belongs to a hidden subtopic that appears nowhere as a column: its title, description
and keywords are written from the subtopic's vocabulary with synonyms and paraphrases, so the
subtopic can be recovered only from the text. Users carry hidden tastes (a sparse mixture over
subtopics), price sensitivity and click / buy propensities. `impressions` and `behaviour` turn
these into impressions, labels, the behaviour log and the oracle's true probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.vocabulary import (
    BRANDS,
    DESCRIPTION_TEMPLATES,
    SUBTOPICS,
    TITLE_TEMPLATES,
)

AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("f", "m", "u")
REGIONS = tuple(f"region_{i:02d}" for i in range(12))
DEVICES = ("mobile", "desktop", "tablet")


@dataclass(frozen=True)
class MarketConfig:
    """Sizes and shape of the simulated marketplace. Days count from `start`."""

    n_ads: int = 3000
    n_users: int = 20_000
    n_impressions: int = 500_000
    n_advertisers: int = 300
    start: str = "2026-03-02"
    days: int = 28  # impression period
    history_days: int = 14  # behaviour before the impression period
    new_ad_days: int = 5  # a share of ads launches during the last days (the test period)
    new_ad_share: float = 0.15
    cpa_share: float = 0.4
    candidates: int = 16  # ads the logging policy scores per impression
    exploration: float = 1.0  # Gumbel noise scale of the logging policy
    new_ad_boost: float = 1.2  # logging-policy bonus for ads younger than 3 days
    history_events_per_user: float = 12.0
    ctr_bias: float = -6.2  # intercept of the true click logit
    cvr_bias: float = -4.3  # intercept of the true conversion-after-click logit
    n_annotations: int = 3000  # distinct train-period queries the annotation team labels

    def __post_init__(self) -> None:
        for name in ("n_ads", "n_users", "n_impressions", "n_advertisers", "days", "candidates"):
            if getattr(self, name) <= 0:
                raise ValueError(f"market.{name} must be positive, got {getattr(self, name)}")
        n_categories = len({s.category for s in SUBTOPICS})
        if self.n_advertisers < n_categories:
            raise ValueError(
                f"market.n_advertisers must be at least {n_categories} (one per category), "
                f"got {self.n_advertisers}"
            )
        if not 0 < self.new_ad_days < self.days:
            raise ValueError(
                f"market.new_ad_days must lie between 0 and market.days ({self.days}), "
                f"got {self.new_ad_days}"
            )
        for name in ("new_ad_share", "cpa_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"market.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("history_days", "exploration", "history_events_per_user", "n_annotations"):
            if getattr(self, name) < 0:
                raise ValueError(f"market.{name} must be >= 0, got {getattr(self, name)}")
        try:
            datetime.fromisoformat(self.start)
        except ValueError:
            raise ValueError(
                f"market.start must be an ISO 8601 date such as 2026-03-02, got {self.start!r}"
            ) from None

    @property
    def t0(self) -> datetime:
        return datetime.fromisoformat(self.start)


@dataclass(frozen=True)
class Hidden:
    """The simulator's ground truth; only `generate` sees it, and only the oracle gets it."""

    ad_subtopic: np.ndarray  # (n_ads,) index into SUBTOPICS
    ad_category: np.ndarray  # (n_ads,) index into the category list
    ad_quality: np.ndarray
    ad_landing: np.ndarray
    ad_log_price_z: np.ndarray  # price relative to its category, standardised
    ad_created_s: np.ndarray  # seconds since start (negative = before)
    ad_brand: np.ndarray  # (n_ads,) the ad's brand name (public, the ads' `brand`)
    ad_price: np.ndarray  # (n_ads,) the ad's price (public, the ads' `price`)
    tastes: np.ndarray  # (n_users, n_subtopics) sparse mixture, rows sum to 1
    price_sensitivity: np.ndarray
    click_propensity: np.ndarray
    buy_propensity: np.ndarray
    activity: np.ndarray
    user_device: np.ndarray  # (n_users,) index into DEVICES


def category_names() -> list[str]:
    return sorted({s.category for s in SUBTOPICS})


def subtopic_category() -> np.ndarray:
    cats = category_names()
    return np.array([cats.index(s.category) for s in SUBTOPICS])


def _pick(rng: np.random.Generator, items: tuple[str, ...], k: int = 1) -> list[str]:
    idx = rng.choice(len(items), size=min(k, len(items)), replace=False)
    return [items[i] for i in idx]


def _ad_text(rng: np.random.Generator, sub_idx: int, brand: str, price: float) -> tuple:
    sub = SUBTOPICS[sub_idx]
    attr, attr2 = _pick(rng, sub.attributes, 2)
    slots = {
        "brand": brand,
        "noun": _pick(rng, sub.nouns)[0],
        "attr": attr,
        "attr2": attr2,
        "benefit": _pick(rng, sub.benefits)[0],
        "price": f"${price:,.0f}",
    }
    title = TITLE_TEMPLATES[rng.integers(len(TITLE_TEMPLATES))].format(**slots)
    slots["noun"] = _pick(rng, sub.nouns)[0]  # the description often names it differently
    desc = DESCRIPTION_TEMPLATES[rng.integers(len(DESCRIPTION_TEMPLATES))].format(**slots)
    pool = sub.keywords + sub.nouns
    keywords = _pick(rng, pool, int(rng.integers(3, 7)))
    return title, desc, keywords


def make_ads(cfg: MarketConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, dict]:
    """The ads table (canonical schema) and the ads' hidden state."""
    n_sub = len(SUBTOPICS)
    cats = category_names()
    sub_cat = subtopic_category()
    popularity = rng.dirichlet(np.full(n_sub, 2.0))
    ad_sub = rng.choice(n_sub, size=cfg.n_ads, p=popularity)
    ad_cat = sub_cat[ad_sub]
    # advertisers specialise in one category; campaigns group an advertiser's ads
    adv_cat = rng.integers(len(cats), size=cfg.n_advertisers)
    adv_cat[: len(cats)] = np.arange(len(cats))  # every category has an advertiser
    adv_of_cat = [np.flatnonzero(adv_cat == c) for c in range(len(cats))]
    advertiser = np.array([rng.choice(adv_of_cat[c]) for c in ad_cat])
    campaign = advertiser * 10 + rng.integers(0, 4, size=cfg.n_ads)
    lo = np.array([SUBTOPICS[s].price_range[0] for s in ad_sub])
    hi = np.array([SUBTOPICS[s].price_range[1] for s in ad_sub])
    log_price = rng.uniform(np.log(lo), np.log(hi))
    price = np.round(np.exp(log_price), 2)
    mid = 0.5 * (np.log(lo) + np.log(hi))
    half = np.maximum(0.5 * (np.log(hi) - np.log(lo)), 1e-6)
    price_z = (log_price - mid) / half
    goal_cpa = rng.random(cfg.n_ads) < cfg.cpa_share
    max_cpc = np.round(rng.lognormal(np.log(0.8), 0.4, cfg.n_ads), 2)
    target_cpa = np.round(price * rng.uniform(0.08, 0.3, cfg.n_ads), 2)
    day_s = 86_400
    new = rng.random(cfg.n_ads) < cfg.new_ad_share
    old_created = rng.uniform(-60 * day_s, (cfg.days - cfg.new_ad_days) * day_s, cfg.n_ads)
    new_created = rng.uniform((cfg.days - cfg.new_ad_days) * day_s, cfg.days * day_s, cfg.n_ads)
    created_s = np.where(new, new_created, old_created).astype(np.int64)
    titles, descs, kws, brands = [], [], [], []
    for i in range(cfg.n_ads):
        cat_brands = BRANDS[cats[ad_cat[i]]]
        brand = cat_brands[advertiser[i] % len(cat_brands)]
        t, d, k = _ad_text(rng, int(ad_sub[i]), brand, float(price[i]))
        titles.append(t)
        descs.append(d)
        kws.append(k)
        brands.append(brand)
    created = [cfg.t0 + timedelta(seconds=int(s)) for s in created_s]
    ads = pl.DataFrame(
        {
            "ad_id": np.arange(1, cfg.n_ads + 1),
            "advertiser_id": advertiser + 1,
            "campaign_id": campaign + 1,
            "category": [cats[c] for c in ad_cat],
            "brand": brands,
            "title": titles,
            "description": descs,
            "keywords": kws,
            "price": price,
            "goal": np.where(goal_cpa, "cpa", "cpc"),
            "max_cpc": pl.Series(np.where(goal_cpa, np.nan, max_cpc)).fill_nan(None),
            "target_cpa": pl.Series(np.where(goal_cpa, target_cpa, np.nan)).fill_nan(None),
            "created_at": created,
        },
        schema=schema.ADS,
        strict=False,
    )
    hidden = {
        "ad_subtopic": ad_sub,
        "ad_category": ad_cat,
        "ad_quality": rng.normal(0.0, 0.35, cfg.n_ads),
        "ad_landing": rng.normal(0.0, 0.4, cfg.n_ads),
        "ad_log_price_z": price_z,
        "ad_created_s": created_s,
        "ad_brand": np.array(brands, dtype=object),
        "ad_price": price,
    }
    return ads, hidden


def make_users(cfg: MarketConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, dict]:
    """The users table (profile only) and the users' hidden tastes and propensities."""
    n, n_sub = cfg.n_users, len(SUBTOPICS)
    sub_cat = subtopic_category()
    n_cat = sub_cat.max() + 1
    age = rng.choice(len(AGE_BUCKETS), size=n, p=[0.15, 0.3, 0.25, 0.18, 0.12])
    gender = rng.choice(len(GENDERS), size=n, p=[0.47, 0.47, 0.06])
    region = rng.integers(len(REGIONS), size=n)
    device = rng.choice(len(DEVICES), size=n, p=[0.62, 0.3, 0.08])
    # profile shifts which categories a user cares about (so profile features carry signal)
    affinity = rng.dirichlet(np.full(n_cat, 0.8), size=(len(AGE_BUCKETS), len(GENDERS)))
    home_cat = np.array(
        [rng.choice(n_cat, p=affinity[a, g]) for a, g in zip(age, gender, strict=True)]
    )
    k = rng.choice([1, 2, 3, 4], size=n, p=[0.3, 0.4, 0.2, 0.1])
    subs_of_cat = [np.flatnonzero(sub_cat == c) for c in range(n_cat)]
    tastes = np.zeros((n, n_sub))
    for u in range(n):
        first = rng.choice(subs_of_cat[home_cat[u]])
        chosen = [first]
        for _ in range(k[u] - 1):
            pool = subs_of_cat[home_cat[u]] if rng.random() < 0.6 else np.arange(n_sub)
            chosen.append(rng.choice(pool))
        weights = rng.dirichlet(np.ones(len(chosen)))
        np.add.at(tastes[u], chosen, weights)
    users = pl.DataFrame(
        {
            "user_id": np.arange(1, n + 1),
            "age_bucket": [AGE_BUCKETS[i] for i in age],
            "gender": [GENDERS[i] for i in gender],
            "region": [REGIONS[i] for i in region],
            "device": [DEVICES[i] for i in device],
        },
        schema=schema.USERS,
    )
    hidden = {
        "tastes": tastes,
        "price_sensitivity": rng.uniform(0.0, 1.0, n),
        "click_propensity": rng.normal(0.0, 0.45, n),
        "buy_propensity": rng.normal(0.0, 0.45, n),
        "activity": rng.lognormal(0.0, 0.8, n),
        "user_device": device,
    }
    return users, hidden
