"""The columns behind the text features (pure numpy / polars), one builder per family; the
definitions are in `features.text_features`, which assembles them.

`Vectors` holds texts' keys and their unit-norm embeddings (the ads', the queries'); every
builder looks rows up in them by position (`features.lookup.positions`) and multiplies rows
against them by index (`features.interest.row_dot`), in blocks of `CHUNK` rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from features.config import FeatureConfig
from features.history import HISTORY_EVENTS, item_table, recent_items
from features.interest import (
    apply_pca,
    by_user_time,
    decayed_sums,
    event_decays,
    fit_pca,
    last_prior,
    micros,
    normalize,
    recent_click_similarity,
    row_dot,
    to_matrix,
    unit_rows,
    user_starts,
)
from features.interest_store import (
    INTEREST_BLOCK_EVENTS,
    events_frame,
    interest_blocks,
    vectors_frame,
)
from features.lookup import positions
from features.spec import INTEREST, INTEREST_EVENTS, INTEREST_VECTORS

log = logging.getLogger(__name__)

# what an event says about the user's interest: its weight and which embedding it carries
EVENT_WEIGHTS = {"search": 1.0, "view": 1.0, "click": 1.0}  # purchases repeat their click
PCA_FIT_ROWS = 200_000  # at most this many train rows (evenly spaced) fit the interest PCA
CHUNK = 65_536  # rows per block of row-wise products (bounded temporary memory)


@dataclass(frozen=True)
class Vectors:
    """Texts' keys (ad ids or query strings) and their unit-norm embeddings: `matrix[i]` (float32,
    (len(ids), D)) is the vector of `ids[i]`."""

    ids: pl.Series
    matrix: np.ndarray


def ad_vectors(table: pl.DataFrame) -> Vectors:
    """The ads' unit-norm fused embeddings from `embeddings/ads` (ad_id, emb_* columns); the
    mean of the fields when there is no emb_fused."""
    fields = [c for c in table.columns if c.startswith("emb_")]
    if not fields:
        raise ValueError("the ads' embeddings have no emb_* column")
    if "emb_fused" in fields:
        matrix = to_matrix(table["emb_fused"])
    else:
        log.info("no emb_fused: the ad embedding is the mean of %s", fields)
        matrix = sum(to_matrix(table[c]) for c in fields) / len(fields)
    return Vectors(table["ad_id"], normalize(matrix))


def query_vectors(table: pl.DataFrame) -> Vectors:
    """The queries' unit-norm embeddings from `embeddings/queries` (query, emb)."""
    if table.height == 0:
        return Vectors(table["query"], np.zeros((0, 0), np.float32))
    return Vectors(table["query"], normalize(to_matrix(table["emb"])))


def _rows_of(values: pl.Series, keys: pl.Series, missing: int) -> np.ndarray:
    """Position of each value in `keys` (int64), `missing` where absent or null."""
    return positions(values, keys).fill_null(missing).to_numpy().astype(np.int64)


def row_ads(rows: pl.DataFrame, ads: Vectors) -> tuple[Vectors, np.ndarray]:
    """The ads (zero vectors added for impressed ads without an embedding) and each row's
    index into them (len(ads.ids) for a null ad_id)."""
    ad_idx = _rows_of(rows["ad_id"], ads.ids, len(ads.ids))
    absent = rows.filter(pl.Series(ad_idx == len(ads.ids)))["ad_id"].unique().drop_nulls()
    if len(absent):
        log.warning("%d impressed ads have no text embedding: zero vectors", len(absent))
        ids = pl.concat([ads.ids, absent.cast(ads.ids.dtype)])
        matrix = np.vstack([ads.matrix, np.zeros((len(absent), ads.matrix.shape[1]), np.float32)])
        ads = Vectors(ids, matrix)
        ad_idx = _rows_of(rows["ad_id"], ads.ids, len(ads.ids))
    return ads, ad_idx


def _pca_dim(wanted: int, rows: int, width: int, what: str) -> int:
    dim = min(wanted, rows, width)
    if dim < wanted:
        log.warning("%s PCA: %d components instead of %d (%d fit rows)", what, dim, wanted, rows)
    return dim


def ad_columns(
    ads: Vectors, train_ads: np.ndarray, dim: int, seed: int
) -> tuple[pl.DataFrame, list[str]]:
    """ad_id and the PCA columns fitted on the train ads (one row per ad, in the order of
    `ads`)."""
    fit_rows = ads.matrix[train_ads]
    dim = _pca_dim(dim, len(fit_rows), ads.matrix.shape[1], "ad text")
    mean, comps = fit_pca(fit_rows, dim, seed)
    reduced = apply_pca(ads.matrix, mean, comps)
    names = [f"t_ad_pc{i:02d}" for i in range(dim)]
    table = pl.DataFrame({"ad_id": ads.ids}).with_columns(
        pl.Series(n, reduced[:, i]) for i, n in enumerate(names)
    )
    return table, names


def _events(
    behaviour: pl.DataFrame, ads: pl.Series, queries: pl.Series, users: pl.Series, until: Any
) -> pl.DataFrame:
    """Interest events of the impressed users before the last impression: user_id, ts, weight,
    row (into the stacked [ads; queries; zero] table)."""
    events = (
        behaviour.lazy()
        .filter(
            pl.col("event").is_in(list(EVENT_WEIGHTS))
            & pl.col("user_id").is_in(users.unique().implode())
            & (pl.col("ts") < until)
        )
        .select("user_id", "ts", "event", "ad_id", "query")
        .collect()
    )
    n_ads, n_q = len(ads), len(queries)
    ad_row = _rows_of(events["ad_id"], ads, n_ads + n_q)
    q_row = n_ads + _rows_of(events["query"], queries, n_q)
    row = np.where(events["event"].eq("search").to_numpy(), q_row, ad_row)
    weight = events["event"].replace_strict(EVENT_WEIGHTS, return_dtype=pl.Float64)
    keep = row < n_ads + n_q  # events whose ad or query has no embedding add nothing
    return pl.DataFrame(
        {"user_id": events["user_id"], "ts": events["ts"], "weight": weight, "row": row}
    ).filter(pl.Series(keep))


def _pca_sample(train: np.ndarray, has: np.ndarray) -> np.ndarray:
    """The train rows with a history that fit the interest PCA: at most about `PCA_FIT_ROWS`,
    evenly spaced."""
    rows = np.flatnonzero(train & has)
    return rows[:: max(1, len(rows) // PCA_FIT_ROWS)]


def interest_columns(
    rows: pl.DataFrame,
    behaviour: pl.DataFrame,
    ads: Vectors,
    ad_idx: np.ndarray,
    queries: Vectors,
    cfg: FeatureConfig,
    seed: int,
) -> tuple[dict[str, pl.Series], dict[str, pl.DataFrame]]:
    """e_user_interest (Int32 codes into the interest store, `features.interest_store`),
    t_user_ad_cos and t_interest_events, row-aligned, and the store's two tables by name
    (INTEREST_EVENTS, INTEREST_VECTORS).

    The events are sorted by (user, ts) once; the full-width states are held for one block of
    whole users at a time (`INTEREST_BLOCK_EVENTS` events), which gives the cosines, each
    event's norm and the PCA's fit rows in one pass. No projected vector is made per row: the
    readers rebuild them from the store."""
    width = ads.matrix.shape[1]
    q_mat = queries.matrix if queries.matrix.size else np.zeros((0, width), np.float32)
    events = _events(behaviour, ads.ids, queries.ids, rows["user_id"], rows["ts"].max())
    if events.height == 0:
        log.info("no search, view or click events: no user interest features")
        return {}, {}
    table = np.vstack([ads.matrix, q_mat])
    user, ts = events["user_id"].to_numpy().astype(np.int64), micros(events["ts"])
    order = by_user_time(user, ts)
    user, ts = user[order], ts[order]
    weight = events["weight"].to_numpy()[order]
    ev_rows = events["row"].to_numpy().astype(np.int64)[order]
    first, decay = user_starts(user), event_decays(user, ts, cfg.interest_half_life_days)
    last, n_events = last_prior(
        rows["user_id"].to_numpy().astype(np.int64), micros(rows["ts"]), user, ts
    )
    has = last >= 0
    train = _pca_sample(rows["split"].eq("train").to_numpy(), has)
    if len(train) == 0:
        log.info("no train impression has an earlier event: no user interest features")
        return {}, {}
    dim = _pca_dim(cfg.interest_dim, len(train), width, "user interest")
    blocks = interest_blocks(first, INTEREST_BLOCK_EVENTS)
    log.info(
        "user interest from %s events%s", f"{events.height:,}",
        f" in {len(blocks)} blocks of users" if len(blocks) > 1 else "",
    )  # fmt: skip
    ad_table = np.vstack([ads.matrix, np.zeros((1, width), np.float32)])
    cos = np.zeros(rows.height, np.float32)
    norm = np.zeros(len(user), np.float32)
    fit = np.zeros((len(train), width), np.float32)
    imp_order = np.argsort(last, kind="stable")  # impressions by their last event
    imp_last = last[imp_order]
    fit_last = last[train]
    for start, stop in blocks:
        part = slice(start, stop)
        sums, where = decayed_sums(first[part], decay[part], weight[part], table, ev_rows[part])
        norm[part] = unit_rows(sums)[where]
        lo, hi = np.searchsorted(imp_last, [start, stop])
        imp = imp_order[lo:hi]
        cos[imp] = row_dot(sums, ad_table, where[last[imp] - start], ad_idx[imp], chunk=CHUNK)
        at = np.flatnonzero((fit_last >= start) & (fit_last < stop))
        fit[at] = sums[where[fit_last[at] - start]]
        del sums, where
    mean, comps = fit_pca(fit, dim, seed)
    del fit
    used = np.unique(ev_rows)
    cos_series = pl.Series(cos).set(pl.Series(~has), None).cast(pl.Float32)
    columns = {
        INTEREST: pl.Series(INTEREST, last + 1, dtype=pl.Int32),
        "t_user_ad_cos": cos_series.alias("t_user_ad_cos"),
        "t_interest_events": pl.Series("t_interest_events", n_events.astype(np.float32)),
    }
    store = {
        INTEREST_EVENTS: events_frame(first, decay, weight, ev_rows, norm),
        INTEREST_VECTORS: vectors_frame(used, table[used], mean, comps),
    }
    return columns, store


def query_columns(
    rows: pl.DataFrame, queries: Vectors, ads: np.ndarray, ad_idx: np.ndarray, dim: int, seed: int
) -> dict[str, pl.Series]:
    """t_query_ad_cos (the query against its ad; `ads` ends with a zero row for a null ad) and
    t_query_pcNN (the query's embedding on a PCA fitted on the distinct queries of train rows:
    search intent); null without a query embedding (non-search placements)."""
    q_mat = queries.matrix
    q_idx = _rows_of(rows["query"], queries.ids, len(queries.ids))
    has = q_idx < len(queries.ids)
    cos = np.full(rows.height, np.nan, dtype=np.float32)
    if has.any():
        cos[has] = row_dot(q_mat[q_idx[has]], ads, b_rows=ad_idx[has], chunk=CHUNK)
    out = {"t_query_ad_cos": pl.Series("t_query_ad_cos", cos).fill_nan(None)}
    train_q = np.unique(q_idx[has & rows["split"].eq("train").to_numpy()])
    if len(train_q) < 2:
        return out
    dim = _pca_dim(dim, len(train_q), q_mat.shape[1], "query text")
    mean, comps = fit_pca(q_mat[train_q], dim, seed)
    reduced = np.full((rows.height, dim), np.nan, dtype=np.float32)
    reduced[has] = apply_pca(q_mat, mean, comps)[q_idx[has]]
    for i in range(dim):
        out[f"t_query_pc{i:02d}"] = pl.Series(reduced[:, i]).fill_nan(None)
    return out


def recent_clicks(rows: pl.DataFrame, behaviour: pl.DataFrame, ads: Vectors, k: int) -> pl.Series:
    clicks = behaviour.filter((pl.col("event") == "click") & pl.col("ad_id").is_not_null())
    sim = recent_click_similarity(
        rows.select("impression_id", "user_id", "ts", "ad_id"),
        clicks.select("user_id", "ts", "ad_id"),
        pl.DataFrame({"ad_id": ads.ids, "emb": ads.matrix}),
        k,
    )
    none = sim["recent_clicks"].eq(0)
    return sim["recent_click_sim"].set(none, None).alias("t_recent_click_sim")


def history_columns(
    rows: pl.DataFrame, behaviour: pl.DataFrame, ads: Vectors, ad_idx: np.ndarray, k: int
) -> dict[str, pl.Series]:
    """s_ad_item (Int32: the impressed ad's item code, row i of `ads` is code i + 1, 0 for a
    null ad) and s_history (Array(Int32, k): the codes of the user's last k viewed or clicked
    ads with a text vector strictly before the impression, most recent first, 0 = padding),
    row-aligned; {} when no such event precedes any impression."""
    known = ads.matrix.any(axis=1)  # an ad without text (zero vector) is no history item
    events = behaviour.filter(
        pl.col("event").is_in(list(HISTORY_EVENTS))
        & pl.col("ad_id").is_not_null()
        & pl.col("user_id").is_in(rows["user_id"].unique().drop_nulls().implode())
    ).select("user_id", "ts", "ad_id")
    row = _rows_of(events["ad_id"], ads.ids, len(ads.ids))
    keep = row < len(ads.ids)
    keep[keep] = known[row[keep]]
    events = pl.DataFrame(
        {"user_id": events["user_id"], "ts": events["ts"], "code": row + 1}
    ).filter(pl.Series(keep))
    codes, used = recent_items(rows.select("user_id", "ts"), events, k)
    if not used.any():
        log.info("no view or click precedes any impression: no history columns")
        return {}
    log.info("history of the last %d items: %.1f on average", k, float(used.mean()))
    ad_code = np.where(ad_idx < len(ads.ids), ad_idx + 1, 0).astype(np.int32)
    return {
        "s_ad_item": pl.Series("s_ad_item", ad_code, dtype=pl.Int32),
        "s_history": pl.Series("s_history", codes, dtype=pl.Array(pl.Int32, k)),
    }


def item_vectors(ads: Vectors, ad_table: pl.DataFrame, pcs: list[str]) -> pl.DataFrame:
    """The item table: every ad's code and its text vector on the train ads' PCA (`pcs`
    columns of `ad_columns`' table, same order as `ads`); zero for an ad without text."""
    reduced = ad_table.select(pcs).to_numpy().astype(np.float32)
    reduced[~ads.matrix.any(axis=1)] = 0.0
    return item_table(ads.ids, reduced)
