"""One simulated marketplace, every table of it, deterministic by seed: the ads and users
(`marketplace`), the impressions and the oracle (`impressions`), the behaviour log
(`behaviour`), the hidden subtopics and the truth of the queries (`queries`) for evaluation and
tests."""

from __future__ import annotations

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.behaviour import simulate_behaviour
from pipeline.sources.simulated.impressions import simulate_impressions
from pipeline.sources.simulated.marketplace import Hidden, MarketConfig, make_ads, make_users
from pipeline.sources.simulated.queries import truth_frame
from pipeline.sources.simulated.vocabulary import SUBTOPICS


def simulate_market(cfg: MarketConfig, seed: int) -> dict[str, pl.DataFrame]:
    """All tables of one simulated marketplace, deterministic by `seed`.

    Keys: ads, users, behaviour, impressions (the public raw tables), oracle (true
    probabilities by impression id), ads_hidden / user_tastes (the hidden subtopics),
    queries (the true labels of every distinct query of the log) and impression_intents (the
    true intent of each impression, null off search); the hidden ones are for tests and
    evaluation slices only, no feature job reads them.
    """
    rng = np.random.default_rng(seed)
    ads, ad_hidden = make_ads(cfg, rng)
    users, user_hidden = make_users(cfg, rng)
    hidden = Hidden(**ad_hidden, **user_hidden)
    impressions, oracle, extras = simulate_impressions(cfg, hidden, rng)
    behaviour = simulate_behaviour(cfg, hidden, extras, rng)
    u, s = np.nonzero(hidden.tastes)
    texts = pl.concat([impressions["query"], behaviour["query"]]).drop_nulls().unique()
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
        "queries": truth_frame(extras["queries"], texts.to_list()),
        "impression_intents": pl.DataFrame(
            {"impression_id": impressions["impression_id"], "intent": extras["intent"].tolist()},
            schema=schema.ORACLE_INTENTS,
        ),
    }
