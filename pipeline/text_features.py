"""Text features for the features stage. Reads `embeddings/` (ads, queries) and the `raw/`
behaviour log. Adds text feature columns to the impressions frame and returns their
`feature_spec.json` entries (family "text"); adds nothing when `features.text` is off, the raw
data has no text, or the embeddings are missing.

Columns (every one point in time: only behaviour events strictly before the impression count):

- `e_ad_text` Array(Float32, D): the ad's fused text embedding, full width (neural model).
- `t_ad_pc00..` Float32: the ad embedding projected on a PCA fitted on the distinct ads of train
  rows (`features.lgbm_text_dim` columns; LightGBM).
- `e_user_interest` Array(Float32, features.interest_dim): the user's interest vector at the
  impression (time-decayed mean of the embeddings of earlier searches -> query, views and
  clicks -> ad; half-life `features.interest_half_life_days`), projected on a PCA fitted on the
  train rows that have a history; the zero vector (= the train mean) without history (neural).
- `t_user_ad_cos`: cosine of the full-width interest vector and the ad; null without history.
- `t_query_ad_cos`: cosine of the impression's search query and the ad; null on impressions
  without a query (non-search placements) or whose query has no embedding.
- `t_query_pc00..` Float32: the query's embedding on a PCA fitted on the distinct queries of
  train rows (`features.lgbm_text_dim` columns; the query's intent: buy, compare, ...); null
  without a query. Both models.
- `t_recent_click_sim`: mean cosine of the ad to the user's last `features.recent_clicks`
  clicked ads; null without earlier clicks.
- `t_interest_events`: how many earlier events the interest vector averages (0 = none).

The scalar features go to both models; ids of rows never enter a Python loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import polars as pl

from features import schema
from features.behaviour import FeatureConfig
from features.interest import (
    apply_pca,
    fit_pca,
    normalize,
    recent_click_similarity,
    to_matrix,
    user_interest,
)
from pipeline.config import Experiment
from pipeline.io import input_digest, read_manifest, read_table
from pipeline.stage import Layout

log = logging.getLogger(__name__)

# what an event says about the user's interest: its weight and which embedding it carries
EVENT_WEIGHTS = {"search": 1.0, "view": 1.0, "click": 1.0}  # purchases repeat their click
PCA_FIT_ROWS = 200_000  # at most this many train rows (evenly spaced) fit the interest PCA
CHUNK = 65_536  # rows per block of row-wise products (bounded temporary memory)
ROW_COLS = ("impression_id", "ts", "user_id", "ad_id", "split", "query")


def _skip_reason(frame: pl.LazyFrame, layout: Layout, cfg: FeatureConfig) -> str | None:
    """Why no text features can be built, or None."""
    if not cfg.text:
        return "features.text is false"
    if not read_manifest(layout.raw).get("has_text", True):
        return f"{layout.raw} has no text (has_text false)"
    if not (layout.embeddings / "_manifest.json").is_file():
        return f"no embeddings at {layout.embeddings} (run the embed stage)"
    names = frame.collect_schema().names()
    missing = [c for c in ("impression_id", "ts", "ad_id", "split") if c not in names]
    if missing:
        return f"the impressions lack {missing}"
    return None


def _ad_matrix(layout: Layout) -> tuple[pl.Series, np.ndarray]:
    """Ad ids and their unit-norm fused embeddings (the mean of the fields when no fused)."""
    ads = read_table(layout.embeddings, "ads").collect()
    fields = [c for c in ads.columns if c.startswith("emb_")]
    if not fields:
        raise ValueError(f"{layout.embeddings}/ads.parquet has no emb_* column")
    if "emb_fused" in fields:
        matrix = to_matrix(ads["emb_fused"])
    else:
        log.info("no emb_fused: the ad embedding is the mean of %s", fields)
        matrix = sum(to_matrix(ads[c]) for c in fields) / len(fields)
    return ads["ad_id"], normalize(matrix)


def _query_matrix(layout: Layout) -> tuple[pl.Series, np.ndarray]:
    queries = read_table(layout.embeddings, "queries").collect()
    if queries.height == 0:
        return queries["query"], np.zeros((0, 0), np.float32)
    return queries["query"], normalize(to_matrix(queries["emb"]))


def _row_ads(rows: pl.DataFrame, layout: Layout) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Ad ids, their embeddings (zero rows added for impressed ads without one) and each
    row's index into them (len(ad_ids) for a null ad_id)."""
    ad_ids, ads = _ad_matrix(layout)
    ad_idx = _index(rows["ad_id"], ad_ids, len(ad_ids))
    absent = rows.filter(pl.Series(ad_idx == len(ad_ids)))["ad_id"].unique().drop_nulls()
    if len(absent):
        log.warning("%d impressed ads have no text embedding: zero vectors", len(absent))
        ad_ids = pl.concat([ad_ids, absent.cast(ad_ids.dtype)])
        ads = np.vstack([ads, np.zeros((len(absent), ads.shape[1]), np.float32)])
        ad_idx = _index(rows["ad_id"], ad_ids, len(ad_ids))
    return ad_ids, ads, ad_idx


def _index(values: pl.Series, keys: pl.Series, missing: int) -> np.ndarray:
    """Position of each value in `keys` (int64), `missing` where absent or null."""
    lookup = pl.DataFrame({"_key": keys, "_pos": np.arange(len(keys), dtype=np.int64)})
    found = (
        pl.DataFrame({"_key": values.cast(keys.dtype)})
        .join(lookup.unique("_key", keep="first"), on="_key", how="left", maintain_order="left")
        .get_column("_pos")
    )
    return found.fill_null(missing).to_numpy().astype(np.int64)


def _row_dot(a: np.ndarray, b_table: np.ndarray, b_idx: np.ndarray) -> np.ndarray:
    """a[i] . b_table[b_idx[i]] for every row i, in blocks."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), CHUNK):
        out[s : s + CHUNK] = np.einsum("ij,ij->i", a[s : s + CHUNK], b_table[b_idx[s : s + CHUNK]])
    return out


def _pca_dim(wanted: int, rows: int, width: int, what: str) -> int:
    dim = min(wanted, rows, width)
    if dim < wanted:
        log.warning("%s PCA: %d components instead of %d (%d fit rows)", what, dim, wanted, rows)
    return dim


def _ad_columns(
    ad_ids: pl.Series, ads: np.ndarray, train_ads: np.ndarray, dim: int, seed: int
) -> tuple[pl.DataFrame, list[str]]:
    """ad_id, e_ad_text and the PCA columns fitted on the train ads (one row per ad)."""
    fit_rows = ads[train_ads]
    dim = _pca_dim(dim, len(fit_rows), ads.shape[1], "ad text")
    mean, comps = fit_pca(fit_rows, dim, seed)
    reduced = apply_pca(ads, mean, comps)
    names = [f"t_ad_pc{i:02d}" for i in range(dim)]
    table = pl.DataFrame({"ad_id": ad_ids, "e_ad_text": ads}).with_columns(
        pl.Series(n, reduced[:, i]) for i, n in enumerate(names)
    )
    return table, names


def _events(
    behaviour: pl.LazyFrame, ad_ids: pl.Series, queries: pl.Series, users: pl.Series, until: Any
) -> pl.DataFrame:
    """Interest events of the impressed users before the last impression: user_id, ts, weight,
    row (into the stacked [ads; queries; zero] table)."""
    kinds = list(EVENT_WEIGHTS)
    events = (
        behaviour.filter(
            pl.col("event").is_in(kinds)
            & pl.col("user_id").is_in(users.unique().implode())
            & (pl.col("ts") < until)
        )
        .select("user_id", "ts", "event", "ad_id", "query")
        .collect()
    )
    n_ads, n_q = len(ad_ids), len(queries)
    ad_row = _index(events["ad_id"], ad_ids, n_ads + n_q)
    q_row = n_ads + _index(events["query"], queries, n_q)
    row = np.where(events["event"].eq("search").to_numpy(), q_row, ad_row)
    weight = events["event"].replace_strict(EVENT_WEIGHTS, return_dtype=pl.Float64)
    keep = row < n_ads + n_q  # events whose ad or query has no embedding add nothing
    return pl.DataFrame(
        {"user_id": events["user_id"], "ts": events["ts"], "weight": weight, "row": row}
    ).filter(pl.Series(keep))


def _interest_columns(
    rows: pl.DataFrame,
    behaviour: pl.LazyFrame,
    ad_ids: pl.Series,
    ads: np.ndarray,
    ad_idx: np.ndarray,
    queries: tuple[pl.Series, np.ndarray],
    cfg: FeatureConfig,
    seed: int,
) -> tuple[dict[str, pl.Series], int]:
    """e_user_interest (PCA on train), t_user_ad_cos and t_interest_events, row-aligned."""
    q_ids, q_mat = queries
    if q_mat.size == 0:
        q_mat = np.zeros((0, ads.shape[1]), np.float32)
    events = _events(behaviour, ad_ids, q_ids, rows["user_id"], rows["ts"].max())
    if events.height == 0:
        log.info("no search, view or click events: no user interest features")
        return {}, 0
    table = np.vstack([ads, q_mat, np.zeros((1, ads.shape[1]), np.float32)])
    log.info("user interest from %s events", f"{events.height:,}")
    emb = pl.Series("emb", np.take(table, events["row"].to_numpy(), axis=0))
    events = events.drop("row").with_columns(emb)
    del emb, table
    out = user_interest(
        rows.select("impression_id", "user_id", "ts"), events, cfg.interest_half_life_days
    )
    del events
    interest = to_matrix(out["interest"])
    n_events = out["interest_events"].to_numpy()
    has = n_events > 0
    ad_table = np.vstack([ads, np.zeros((1, ads.shape[1]), np.float32)])
    cos = pl.Series(_row_dot(interest, ad_table, ad_idx)).set(pl.Series(~has), None)
    train = np.flatnonzero(rows["split"].eq("train").to_numpy() & has)
    train = train[:: max(1, len(train) // PCA_FIT_ROWS)]
    if len(train) == 0:
        log.info("no train impression has an earlier event: no user interest features")
        return {}, 0
    dim = _pca_dim(cfg.interest_dim, len(train), interest.shape[1], "user interest")
    mean, comps = fit_pca(interest[train], dim, seed)
    reduced = np.zeros((len(interest), dim), np.float32)
    for s in range(0, len(interest), CHUNK):
        reduced[s : s + CHUNK] = apply_pca(interest[s : s + CHUNK], mean, comps)
    reduced[~has] = 0.0  # no history: the train mean
    columns = {
        "e_user_interest": pl.Series("e_user_interest", reduced),
        "t_user_ad_cos": cos.cast(pl.Float32).alias("t_user_ad_cos"),
        "t_interest_events": pl.Series("t_interest_events", n_events.astype(np.float32)),
    }
    return columns, dim


def _query_columns(
    rows: pl.DataFrame,
    queries: tuple[pl.Series, np.ndarray],
    ads: np.ndarray,
    ad_idx: np.ndarray,
    dim: int,
    seed: int,
) -> dict[str, pl.Series]:
    """t_query_ad_cos (the query against its ad) and t_query_pcNN (the query's embedding on a
    PCA fitted on the distinct queries of train rows: search intent); null without a query
    embedding (non-search placements)."""
    q_ids, q_mat = queries
    q_idx = _index(rows["query"], q_ids, len(q_ids))
    has = q_idx < len(q_ids)
    cos = np.full(rows.height, np.nan, dtype=np.float32)
    if has.any():
        cos[has] = _row_dot(q_mat[q_idx[has]], ads, ad_idx[has])
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


def _recent_clicks(
    rows: pl.DataFrame, behaviour: pl.LazyFrame, ad_ids: pl.Series, ads: np.ndarray, k: int
) -> pl.Series:
    clicks = (
        behaviour.filter((pl.col("event") == "click") & pl.col("ad_id").is_not_null())
        .select("user_id", "ts", "ad_id")
        .collect()
    )
    sim = recent_click_similarity(
        rows.select("impression_id", "user_id", "ts", "ad_id"),
        clicks,
        pl.DataFrame({"ad_id": ad_ids, "emb": ads}),
        k,
    )
    none = sim["recent_clicks"].eq(0)
    return sim["recent_click_sim"].set(none, None).alias("t_recent_click_sim")


def _spec(
    dim: int, pcs: list[str], interest_dim: int, scalars: list[str], exp: Experiment
) -> list[dict[str, Any]]:
    cfg = exp.features
    entries: list[dict[str, Any]] = [
        {
            "name": "e_ad_text",
            "kind": "embedding",
            "dim": dim,
            "source": "embeddings/ads.emb_fused",
            "family": "text",
            "models": ["neural"],
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
        entries.append(
            {
                "name": "e_user_interest",
                "kind": "embedding",
                "dim": interest_dim,
                "source": f"pca(user interest, half-life {cfg.interest_half_life_days} d)",
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


def add_text_features(
    frame: pl.LazyFrame, layout: Layout, exp: Experiment
) -> tuple[pl.LazyFrame, list[dict[str, Any]]]:
    """The frame with the text feature columns (see the module docstring) and their spec
    entries; (frame, []) when text features are off or impossible (the reason is logged)."""
    cfg = exp.features
    reason = _skip_reason(frame, layout, cfg)
    if reason:
        log.info("no text features: %s", reason)
        return frame, []
    started = time.perf_counter()
    emb_manifest = read_manifest(layout.embeddings)
    if emb_manifest.get("inputs", {}).get("raw") not in (None, input_digest(layout.raw)):
        log.warning("embeddings were made from another raw/ (rerun the embed stage)")
    names = frame.collect_schema().names()
    rows = frame.select([c for c in ROW_COLS if c in names]).collect()
    ad_ids, ads, ad_idx = _row_ads(rows, layout)
    zero_ad = np.vstack([ads, np.zeros((1, ads.shape[1]), np.float32)])  # row -1: null ad_id
    train_ads = np.unique(ad_idx[rows["split"].eq("train").to_numpy() & (ad_idx < len(ad_ids))])
    train_ads = train_ads[np.einsum("ij,ij->i", ads[train_ads], ads[train_ads]) > 0]
    if len(train_ads) == 0:
        log.info("no text features: no train impression's ad has a text embedding")
        return frame, []
    ad_table, pcs = _ad_columns(ad_ids, ads, train_ads, cfg.lgbm_text_dim, exp.data.seed)

    queries = _query_matrix(layout)
    per_row: dict[str, pl.Series] = {}
    interest_dim = 0
    has_users = "user_id" in rows.columns and rows["user_id"].null_count() < rows.height
    if has_users:
        behaviour = read_table(layout.raw, "behaviour", schema.BEHAVIOUR)
        cols, interest_dim = _interest_columns(
            rows, behaviour, ad_ids, ads, ad_idx, queries, cfg, exp.data.seed
        )
        per_row |= cols
        per_row["t_recent_click_sim"] = _recent_clicks(
            rows, behaviour, ad_ids, ads, cfg.recent_clicks
        )
    else:
        log.info("no user ids: no user interest or recent-click features")
    if "query" in rows.columns and len(queries[0]):
        per_row |= _query_columns(rows, queries, zero_ad, ad_idx, cfg.lgbm_text_dim, exp.data.seed)
    is_train = rows["split"].eq("train")
    for name in [n for n in per_row if n.startswith("t_")]:
        if per_row[name].filter(is_train).null_count() == int(is_train.sum()):
            log.info("%s: no value on train rows, left out", name)
            del per_row[name]
    scalars = [n for n in per_row if n.startswith("t_")]
    extra = pl.DataFrame({"impression_id": rows["impression_id"], **per_row})
    out = frame.join(ad_table.lazy(), on="ad_id", how="left", maintain_order="left").join(
        extra.lazy(), on="impression_id", how="left", maintain_order="left"
    )
    spec = _spec(ads.shape[1], pcs, interest_dim, scalars, exp)
    log.info(
        "text features: %d columns (%d-d ad text, %d PCs, %d-d interest) for %s rows in %.1fs",
        len(spec),
        ads.shape[1],
        len(pcs),
        interest_dim,
        f"{rows.height:,}",
        time.perf_counter() - started,
    )
    return out, spec
