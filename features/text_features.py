"""Text features of the impressions (pure numpy / polars): the ads' and queries' embeddings,
the behaviour log and the impressions in, row-aligned feature columns and their
`feature_spec.json` entries (family "text") out.

Columns (every one point in time: only behaviour events strictly before the impression count):

- `e_ad_text` Int32: the ad's code into the ad text table (`features.spec.AD_TEXT_TABLE`: code
  -> the ad's fused text embedding, full width, each ad once; 0 the zero vector); a keyed
  embedding (neural model, looked up while batching).
- `t_ad_pc00..` Float32: the ad embedding projected on a PCA fitted on the distinct ads of train
  rows (`features.lgbm_text_dim` columns; LightGBM).
- `e_user_interest` (`features.interest_dim` wide; neural): the user's interest vector at the
  impression (time-decayed mean of the embeddings of earlier searches -> query, views and
  clicks -> ad; half-life `features.interest_half_life_days`), projected on a PCA fitted on the
  train rows that have a history; the zero vector (= the train mean) without history. Stored
  as Int32 codes into the interest store (`features.interest_store`: the sorted events and
  the projected text vectors, two tables returned beside the columns), which the readers of
  the feature tables expand.
- `t_user_ad_cos`: cosine of the full-width interest vector and the ad; null without history.
- `t_query_ad_cos`: cosine of the impression's search query and the ad; null on impressions
  without a query (non-search placements) or whose query has no embedding.
- `t_query_pc00..` Float32: the query's embedding on a PCA fitted on the distinct queries of
  train rows (`features.lgbm_text_dim` columns; the query's intent: buy, compare, ...); null
  without a query. Both models.
- `t_recent_click_sim`: mean cosine of the ad to the user's last `features.recent_clicks`
  clicked ads; null without earlier clicks.
- `t_interest_events`: how many earlier events the interest vector averages (0 = none).
- `s_ad_item`, `s_history` (item features, neural): the impressed ad's item code and the codes
  of the user's last `features.history_length` viewed or clicked ads strictly before the
  impression (`features.history`), with the item table (code -> the ad's text on the train ads'
  PCA, `features.lgbm_text_dim` wide) returned beside the columns.

The scalar features go to both models; ids of rows never enter a Python loop. What the data
rules out (no train ad with an embedding, no user ids, no behaviour events, no queries) is
decided here; whether to build text features at all (the switch, the raw data's text, the
embeddings' presence) is the job's call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl

from features.config import FeatureConfig
from features.history import item_table
from features.interest import row_dot
from features.lookup import attach
from features.spec import (
    AD_ITEM,
    AD_TEXT_TABLE,
    HISTORY,
    INTEREST,
    INTEREST_EVENTS,
    INTEREST_VECTORS,
    ITEM_TABLE,
)
from features.text_columns import (
    Vectors,
    ad_columns,
    history_columns,
    interest_columns,
    item_vectors,
    query_columns,
    recent_clicks,
    row_ads,
)

log = logging.getLogger(__name__)

ROW_COLS = ("impression_id", "ts", "user_id", "ad_id", "split", "query")
REQUIRED = ("impression_id", "ts", "ad_id", "split")


def _item_spec(items: int, width: int, k: int) -> list[dict[str, Any]]:
    """The spec entries of s_ad_item and s_history (`items` codes besides the padding 0)."""
    source = f"{ITEM_TABLE} (pca(ad text, {width}, fit on train ads))"
    return [
        {
            "name": name,
            "kind": "item",
            "dim": dim,
            "source": f"{source}; {what}",
            "cardinality": items + 1,
            "family": "text",
            "models": ["neural"],
        }
        for name, dim, what in (
            (AD_ITEM, 1, "the impressed ad"),
            (HISTORY, k, f"last {k} viewed or clicked ads before t"),
        )
    ]


def _spec(
    dim: int, pcs: list[str], interest_dim: int, scalars: list[str], cfg: FeatureConfig
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        {
            "name": "e_ad_text",
            "kind": "embedding",
            "dim": dim,
            "source": "embeddings/ads.emb_fused",
            "family": "text",
            "models": ["neural"],
            "table": AD_TEXT_TABLE,
        },
        *(
            {
                "name": n,
                "kind": "numeric",
                "source": f"pca(ad text, {len(pcs)}, fit on train ads)",
                "family": "text",
                "models": ["lightgbm"],
            }
            for n in pcs
        ),
    ]
    if interest_dim:
        half_life = cfg.interest_half_life_days
        entries.append(
            {
                "name": INTEREST,
                "kind": "embedding",
                "dim": interest_dim,
                "source": f"pca(user interest, half-life {half_life} d); codes into "
                f"{INTEREST_EVENTS}",
                "family": "text",
                "models": ["neural"],
            }
        )
    sources = {"t_query_pc": "pca(query text, fit on train queries)"}
    entries += [
        {"name": n, "kind": "numeric", "source": sources.get(n[:-2], n[2:]), "family": "text"}
        for n in scalars
    ]
    return entries


def _per_row(
    rows: pl.DataFrame,
    ads: Vectors,
    ad_idx: np.ndarray,
    queries: Vectors,
    behaviour: pl.DataFrame,
    cfg: FeatureConfig,
    seed: int,
    tables: dict[str, pl.DataFrame],
) -> Iterator[dict[str, pl.Series]]:
    """The user and query columns the data allows (row-aligned), one family at a time (the
    item columns last); the interest store's tables go to `tables`."""
    has_users = "user_id" in rows.columns and rows["user_id"].null_count() < rows.height
    if has_users:
        columns, store = interest_columns(rows, behaviour, ads, ad_idx, queries, cfg, seed)
        tables.update(store)
        yield columns
        yield {"t_recent_click_sim": recent_clicks(rows, behaviour, ads, cfg.recent_clicks)}
    else:
        log.info("no user ids: no user interest or recent-click features")
    if "query" in rows.columns and len(queries.ids):
        zero_ad = np.vstack([ads.matrix, np.zeros((1, ads.matrix.shape[1]), np.float32)])
        yield query_columns(rows, queries, zero_ad, ad_idx, cfg.lgbm_text_dim, seed)
    if has_users and cfg.history_length:
        yield history_columns(rows, behaviour, ads, ad_idx, cfg.history_length)


def _trained(columns: dict[str, pl.Series], is_train: pl.Series) -> pl.DataFrame:
    """The family's columns as a frame, less the scalar ones without a value on train rows."""
    for name in [n for n in columns if n.startswith("t_")]:
        if columns[name].filter(is_train).null_count() == int(is_train.sum()):
            log.info("%s: no value on train rows, left out", name)
            del columns[name]
    return pl.DataFrame([col.alias(name) for name, col in columns.items()])


def text_features(
    frame: pl.DataFrame,
    ads: Vectors,
    queries: Vectors,
    behaviour: pl.DataFrame,
    cfg: FeatureConfig,
    seed: int,
    emit: Callable[[pl.DataFrame], None] | None = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]], dict[str, pl.DataFrame]]:
    """The text feature columns of `frame`'s rows (see the module docstring), row-aligned with
    it, their spec entries and the lookup tables they index by name (the ad text table, and the
    item table with history columns); (an empty frame, [], {}) when the data allows none
    (logged).

    frame: impression_id, ts, ad_id, split (+ user_id, query when the data has them; other
    columns are ignored). ads, queries: from `ad_vectors` / `query_vectors`. behaviour: the raw
    behaviour log (user_id, ts, event, ad_id, query), possibly empty. seed: the PCA fits'.
    emit: given, each family's columns (row-aligned) are handed to it as soon as they are
    built and not kept (a caller writing them away holds one family at a time); the frame
    returned is then empty.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        log.info("no text features: the impressions lack %s", missing)
        return pl.DataFrame(), [], {}
    started = time.perf_counter()
    rows = frame.select([c for c in ROW_COLS if c in frame.columns])
    ads, ad_idx = row_ads(rows, ads)
    is_train = rows["split"].eq("train")
    known = is_train.to_numpy() & (ad_idx < len(ads.ids))
    train_ads = np.unique(ad_idx[known])
    # an ad without text (a zero vector) neither fits the PCA nor counts as embedded
    train_ads = train_ads[row_dot(ads.matrix, ads.matrix, train_ads, train_ads) > 0]
    if len(train_ads) == 0:
        log.info("no text features: no train impression's ad has a text embedding")
        return pl.DataFrame(), [], {}
    ad_table, pcs = ad_columns(ads, train_ads, cfg.lgbm_text_dim, seed)
    codes = pl.Series("e_ad_text", ad_idx + 1, dtype=pl.Int32)  # item_table's codes
    codes = codes.set(pl.Series(ad_idx == len(ads.ids)), None)  # a null ad_id: null
    kept: list[pl.DataFrame] = []
    names: list[str] = []

    def take(block: pl.DataFrame) -> None:
        if block.width == 0:  # a family the data rules out
            return
        names.extend(block.columns)
        if emit is None:
            kept.append(block)
        else:
            emit(block)

    take(attach(rows.select("ad_id"), ad_table, "ad_id").drop("ad_id").insert_column(0, codes))
    del codes
    store: dict[str, pl.DataFrame] = {}
    for columns in _per_row(rows, ads, ad_idx, queries, behaviour, cfg, seed, store):
        block = _trained(columns, is_train)
        del columns
        take(block)
        del block
    interest_dim = store[INTEREST_VECTORS].schema["vec"].size if store else 0
    scalars = [n for n in names if n.startswith("t_") and n not in pcs]
    spec = _spec(ads.matrix.shape[1], pcs, interest_dim, scalars, cfg)
    tables = {AD_TEXT_TABLE: item_table(ads.ids, ads.matrix), **store}
    if HISTORY in names:
        tables[ITEM_TABLE] = item_vectors(ads, ad_table, pcs)
        spec += _item_spec(tables[ITEM_TABLE].height, len(pcs), cfg.history_length)
    log.info(
        "text features: %d columns (%d-d ad text, %d PCs, %d-d interest) for %s rows in %.1fs",
        len(spec),
        ads.matrix.shape[1],
        len(pcs),
        interest_dim,
        f"{rows.height:,}",
        time.perf_counter() - started,
    )
    out = pl.concat(kept, how="horizontal") if kept else pl.DataFrame()
    return out, spec, tables
