"""Query-understanding features (pure): what the `understand` stage read in each search query,
set against the ad it was shown with, and the intent mix of the user's earlier searches.

Per impression with a query (null on every other row):
- `n_q_intent_<label>`: the query's intent probabilities; `n_q_sentiment_<label>` likewise;
- `n_q_brand_named`: the query names a brand; `n_q_brand_match`: and it is the ad's brand (a
  close spelling counts: queries carry typos), null when no brand is named;
- `n_q_price_capped`: the query sets a price cap; `n_q_price_ok`: the ad's price is at or under
  it, null without a cap; `n_q_price_over`: log(ad price / cap), null without a cap;
- `n_q_entity_overlap`: the share of the query's brand and product words among the ad's keyword
  words (null when the query names neither).

Per impression: `n_u_intent_<label>`, the mean intent probabilities of the user's searches
strictly before the impression (null before the first): point-in-time correct by construction,
as the query of an impression is known when it is served.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import polars as pl

FAMILY = "query"
BRAND_SIMILARITY = 0.8  # difflib ratio from which a named brand counts as the ad's brand
_WORD = re.compile(r"[a-z0-9]+")


def prob_columns(queries: pl.DataFrame, prefix: str) -> list[str]:
    """The `<prefix><label>` probability columns of the understood-queries table, in order."""
    return [c for c in queries.columns if c.startswith(prefix)]


def _norm(name: str | None) -> str:
    return " ".join(_WORD.findall((name or "").lower()))


def brand_matches(pairs: pl.DataFrame) -> pl.DataFrame:
    """`pairs` (q_brand, brand): whether each distinct pair names the same brand."""
    out = pairs.unique(maintain_order=True).drop_nulls("q_brand")
    same = [
        difflib.SequenceMatcher(None, _norm(q), _norm(b)).ratio() >= BRAND_SIMILARITY
        if b is not None
        else False
        for q, b in zip(out["q_brand"], out["brand"], strict=True)
    ]
    return out.with_columns(pl.Series("same", same, pl.Boolean))


def _words(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.extract_all(r"[a-z0-9]+")


def query_features(
    rows: pl.DataFrame,
    queries: pl.DataFrame,
    searches: pl.DataFrame,
    ad_keywords: pl.DataFrame,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The columns above (row-aligned with `rows`) and their spec entries.

    rows: ts, user_id, query, ad_id, brand, price (the ad's), in time order. queries: the
    `understand` table (query, p_intent_*, p_sentiment_*, brand, product, price_cap).
    searches: user_id, ts, query of the behaviour log's searches. ad_keywords: ad_id, keywords.
    """
    intents = prob_columns(queries, "p_intent_")
    sentiments = prob_columns(queries, "p_sentiment_")
    q = queries.select(
        "query",
        *intents,
        *sentiments,
        pl.col("brand").alias("q_brand"),
        pl.col("product").alias("q_product"),
        pl.col("price_cap").alias("q_cap"),
    ).unique("query", keep="first")
    frame = rows.select("ts", "user_id", "query", "ad_id", "brand", "price").with_row_index("_row")
    frame = frame.join(q, on="query", how="left", maintain_order="left")
    frame = frame.join(
        ad_keywords.select("ad_id", pl.col("keywords").list.join(" ").alias("_kw")),
        on="ad_id",
        how="left",
        maintain_order="left",
    )
    same = brand_matches(frame.select("q_brand", "brand"))
    frame = frame.join(same, on=["q_brand", "brand"], how="left", maintain_order="left")
    has_query = pl.col("query").is_not_null() & (pl.col(intents[0]).is_not_null())
    named = pl.col("q_brand").is_not_null()
    capped = pl.col("q_cap").is_not_null()
    entity = _words(pl.concat_str(["q_brand", "q_product"], separator=" ", ignore_nulls=True))
    overlap = (
        pl.col("_ent").list.set_intersection(_words(pl.col("_kw").fill_null(""))).list.len()
        / pl.col("_ent").list.len()
    )
    f32 = pl.Float32
    cols = [
        *[pl.col(c).cast(f32).alias(f"n_q_{c[2:]}") for c in intents + sentiments],
        pl.when(has_query).then(named.cast(f32)).alias("n_q_brand_named"),
        pl.when(has_query & named).then(pl.col("same").fill_null(False).cast(f32))
        .alias("n_q_brand_match"),
        pl.when(has_query).then(capped.cast(f32)).alias("n_q_price_capped"),
        pl.when(has_query & capped).then((pl.col("price") <= pl.col("q_cap")).cast(f32))
        .alias("n_q_price_ok"),
        pl.when(has_query & capped & (pl.col("q_cap") > 0) & (pl.col("price") > 0))
        .then((pl.col("price") / pl.col("q_cap")).log().cast(f32))
        .alias("n_q_price_over"),
        pl.when(pl.col("_ent").list.len() > 0).then(overlap.cast(f32)).alias("n_q_entity_overlap"),
    ]  # fmt: skip
    out = frame.with_columns(entity.alias("_ent")).select("_row", "ts", "user_id", *cols)
    out = _with_user_mix(out, searches, q.select("query", *intents)).sort("_row")
    out = out.drop("_row", "ts", "user_id")
    spec = [
        {"name": c, "kind": "numeric", "source": c.removeprefix("n_"), "family": FAMILY}
        for c in out.columns
    ]
    return out, spec


def _with_user_mix(out: pl.DataFrame, searches: pl.DataFrame, q: pl.DataFrame) -> pl.DataFrame:
    """`n_u_intent_*`: the running mean of the intent probabilities of the user's searches
    strictly before each row (an as-of join on the running sums)."""
    intents = [c for c in q.columns if c != "query"]
    names = [f"n_u_{c[2:]}" for c in intents]
    past = (
        searches.select("user_id", "ts", "query")
        .drop_nulls()
        .join(q, on="query", how="inner")
        .sort("user_id", "ts")
        .select(
            "user_id",
            "ts",
            pl.int_range(1, pl.len() + 1).over("user_id").alias("_n"),
            *[pl.col(c).cum_sum().over("user_id").alias(f"_s_{c}") for c in intents],
        )
        .unique(["user_id", "ts"], keep="last")
        .sort("ts")
    )
    if past.height == 0 or "user_id" not in out.columns:
        return out.with_columns(pl.lit(None, pl.Float32).alias(n) for n in names)
    ordered = out.select("_row", "ts", "user_id").sort("ts", "_row")
    joined = ordered.join_asof(past, on="ts", by="user_id", strategy="backward",
                               allow_exact_matches=False, check_sortedness=False)  # fmt: skip
    mix = joined.select(
        "_row",
        *[(pl.col(f"_s_{c}") / pl.col("_n")).cast(pl.Float32).alias(n)
          for c, n in zip(intents, names, strict=True)],
    )  # fmt: skip
    return out.join(mix, on="_row", how="left")
