"""features.text_features: the text feature columns from impressions, embeddings and the
behaviour log, all built in code (no files)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features import schema
from features.config import FeatureConfig
from features.history import table_matrix
from features.interest import apply_pca, fit_pca, normalize, user_interest
from features.interest_store import interest_table
from features.spec import AD_TEXT_TABLE, INTEREST, INTEREST_EVENTS, INTEREST_VECTORS
from features.text_columns import Vectors, ad_vectors, query_vectors
from features.text_features import text_features

D = 8
T0 = datetime(2026, 3, 1)
N_IMPS = 48
TEST_ONLY_AD = 6
QUERIES = ["red shoes", "coffee machine"]
SEED = 7


def _ad_vectors(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.eye(D, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]  # ads 1..6
    return (base + 0.3 * rng.standard_normal((6, D))).astype(np.float32)


def _query_vectors() -> np.ndarray:
    return normalize(np.eye(D, dtype=np.float32)[[0, 1]] + 0.1)


def _impressions() -> pl.DataFrame:
    i = np.arange(N_IMPS)
    ad = np.where(i < 36, 1 + i % 5, np.where(i % 2 == 0, TEST_ONLY_AD, 1 + i % 5))
    query = [QUERIES[(k // 2) % 2] if k % 2 == 0 else None for k in i]
    return pl.DataFrame(
        {
            "impression_id": i + 100,
            "ts": [T0 + timedelta(hours=6 * int(k)) for k in i],
            "user_id": 1 + i % 3,
            "ad_id": ad,
            "split": np.where(i < 24, "train", np.where(i < 36, "valid", "test")),
            "query": query,
            "placement": ["search_top" if q else "feed" for q in query],
        },
        schema_overrides={"ts": schema.TS, "user_id": pl.Int64, "ad_id": pl.Int64},
    )


def _behaviour(imps: pl.DataFrame, extra: list[tuple] = ()) -> pl.DataFrame:
    rows = []
    for u in (1, 2, 3):
        rows += [
            (u, T0 - timedelta(days=2), "search", None, QUERIES[u % 2]),
            (u, T0 - timedelta(days=1), "view", u, None),
            (u, T0 - timedelta(hours=12), "click", u + 1, None),
            (u, T0 - timedelta(hours=11), "purchase", u + 1, None),
        ]
    for k, r in enumerate(imps.iter_rows(named=True)):  # clicks that follow some impressions
        if k % 4 == 0 and r["ad_id"] != TEST_ONLY_AD:
            rows.append((r["user_id"], r["ts"] + timedelta(seconds=10), "click", r["ad_id"], None))
    rows += list(extra)
    cols = list(zip(*rows, strict=True))
    return pl.DataFrame(dict(zip(schema.BEHAVIOUR, cols, strict=True)), schema=schema.BEHAVIOUR)


def _vectors(ads: np.ndarray | None = None) -> tuple[Vectors, Vectors]:
    ads = _ad_vectors() if ads is None else ads
    table = pl.DataFrame({"ad_id": np.arange(1, 7), "emb_fused": ads})
    queries = pl.DataFrame({"query": QUERIES, "emb": _query_vectors()})
    return ad_vectors(table), query_vectors(queries)


def _cfg(**overrides) -> FeatureConfig:
    return FeatureConfig(lgbm_text_dim=3, interest_dim=2, recent_clicks=2, **overrides)


def _run(
    ads: np.ndarray | None = None,
    extra_events: list[tuple] = (),
    frame: pl.DataFrame | None = None,
    behaviour: pl.DataFrame | None = None,
    **overrides,
) -> tuple[pl.DataFrame, list[dict]]:
    """The impressions with their text columns beside them, and the spec entries."""
    out, spec, _ = _run_with_tables(ads, extra_events, frame, behaviour, **overrides)
    return out, spec


def _run_with_tables(
    ads: np.ndarray | None = None,
    extra_events: list[tuple] = (),
    frame: pl.DataFrame | None = None,
    behaviour: pl.DataFrame | None = None,
    **overrides,
) -> tuple[pl.DataFrame, list[dict], dict[str, pl.DataFrame]]:
    """`_run`, and the lookup tables by name. The interest codes come back expanded into their
    vectors, as the readers of the feature tables see them."""
    frame = _impressions() if frame is None else frame
    behaviour = _behaviour(_impressions(), extra_events) if behaviour is None else behaviour
    ad_vecs, query_vecs = _vectors(ads)
    cols, spec, tables = text_features(
        frame, ad_vecs, query_vecs, behaviour, _cfg(**overrides), SEED
    )
    assert cols.height == (frame.height if spec else 0)
    return frame.hstack(_expanded(cols, tables)), spec, tables


def _expanded(cols: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The interest codes (Int32) replaced by their vectors from the interest store."""
    if INTEREST not in cols.columns:
        assert INTEREST_EVENTS not in tables
        return cols
    assert cols.schema[INTEREST] == pl.Int32  # a code: each event is stored once
    states = interest_table(tables[INTEREST_EVENTS], tables[INTEREST_VECTORS], 10**9)
    return cols.with_columns(pl.Series(INTEREST, states[cols[INTEREST].to_numpy()]))


def _ad_text(out: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> np.ndarray:
    """Each row's ad text vector: its code looked up in the ad text table."""
    return table_matrix(tables[AD_TEXT_TABLE])[out["e_ad_text"].fill_null(0).to_numpy()]


def test_columns_spec_and_values():
    out, spec, tables = _run_with_tables()
    imps = _impressions()
    by_name = {e["name"]: e for e in spec}
    assert set(by_name) == {
        "e_ad_text",
        "t_ad_pc00",
        "t_ad_pc01",
        "t_ad_pc02",
        "e_user_interest",
        "t_user_ad_cos",
        "t_query_ad_cos",
        "t_query_pc00",
        "t_query_pc01",  # two distinct train queries: two components
        "t_recent_click_sim",
        "t_interest_events",
        "s_ad_item",
        "s_history",
    }
    assert out.columns == imps.columns + [e["name"] for e in spec]  # one column per entry
    assert all(e["family"] == "text" for e in spec)
    assert by_name["e_ad_text"] | {"source": ""} == {
        "name": "e_ad_text",
        "kind": "embedding",
        "dim": D,
        "source": "",
        "family": "text",
        "models": ["neural"],
        "table": AD_TEXT_TABLE,
    }
    assert by_name["e_user_interest"]["dim"] == 2
    assert by_name["t_ad_pc00"]["models"] == ["lightgbm"]
    assert out.schema["e_ad_text"] == pl.Int32  # a code: each ad's vector is stored once
    assert out.schema["e_user_interest"] == pl.Array(pl.Float32, 2)
    # the ad embedding is the row's ad (rows stay in frame order), unit norm
    ads = normalize(_ad_vectors())
    assert tables[AD_TEXT_TABLE]["ad_id"].n_unique() == tables[AD_TEXT_TABLE].height
    np.testing.assert_allclose(_ad_text(out, tables), ads[imps["ad_id"].to_numpy() - 1], rtol=1e-6)
    # query cosine: null without a query, the dot product of unit vectors with one
    q = _query_vectors()
    has_q = imps["query"].is_not_null().to_numpy()
    assert out["t_query_ad_cos"].is_null().to_numpy().tolist() == (~has_q).tolist()
    assert out["t_query_pc00"].is_null().to_numpy().tolist() == (~has_q).tolist()
    assert by_name["t_query_pc00"].get("models") is None  # both models
    assert out.filter(pl.col("query") == QUERIES[0])["t_query_pc00"].n_unique() == 1
    qi = np.array([QUERIES.index(x) for x in imps["query"].drop_nulls()])
    want = np.einsum("ij,ij->i", q[qi], ads[imps["ad_id"].to_numpy()[has_q] - 1])
    np.testing.assert_allclose(out["t_query_ad_cos"].drop_nulls().to_numpy(), want, rtol=1e-5)
    # every user has a history before the first impression
    assert out["t_user_ad_cos"].null_count() == 0
    assert (out["t_interest_events"] >= 3).all()
    assert out["t_user_ad_cos"].abs().max() <= 1.0 + 1e-6


def test_interest_from_the_store_is_the_projected_state_of_each_row():
    """The store's vectors equal the per-row computation: each row's full-width state
    (`user_interest`), projected on a PCA fitted on the train rows' states."""
    out, spec, tables = _run_with_tables(interest_half_life_days=1.5)
    imps = _impressions()
    ads, q = normalize(_ad_vectors()), _query_vectors()
    events = _behaviour(imps).filter(pl.col("event") != "purchase")
    emb = [q[QUERIES.index(r["query"])] if r["event"] == "search" else ads[r["ad_id"] - 1]
           for r in events.iter_rows(named=True)]  # fmt: skip
    events = events.select("user_id", "ts", weight=pl.lit(1.0), emb=pl.Series(np.array(emb)))
    states = user_interest(imps, events, 1.5)["interest"].to_numpy()
    train = imps["split"].eq("train").to_numpy()
    mean, comps = fit_pca(states[train], 2, SEED)
    np.testing.assert_allclose(
        out[INTEREST].to_numpy(), apply_pca(states, mean, comps), rtol=0, atol=2e-6
    )
    assert tables[INTEREST_VECTORS]["vec"].dtype == pl.Array(pl.Float32, 2)
    assert INTEREST_EVENTS in next(e["source"] for e in spec if e["name"] == INTEREST)


def test_interest_in_blocks_of_users_equals_one_block(monkeypatch):
    whole, _, tables = _run_with_tables()
    monkeypatch.setattr("features.text_columns.INTEREST_BLOCK_EVENTS", 5)
    blocks, _, in_blocks = _run_with_tables()
    assert blocks.equals(whole)
    for name in (INTEREST_EVENTS, INTEREST_VECTORS):
        assert in_blocks[name].equals(tables[name])


def test_user_interest_at_first_impression_by_hand():
    out, _ = _run(interest_half_life_days=1.0)
    ads = normalize(_ad_vectors())
    q = _query_vectors()
    # user 1 before T0: search QUERIES[1] at -2 d, view ad 1 at -1 d, click ad 2 at -12 h
    s = q[1] * 2.0**-2 + ads[0] * 2.0**-1 + ads[1] * 2.0**-0.5
    s /= np.linalg.norm(s)
    assert out["t_interest_events"][0] == 3
    assert out["t_user_ad_cos"][0] == pytest.approx(float(s @ ads[0]), abs=1e-5)
    # recent clicks (k=2) of user 1 at its 2nd impression (T0 + 18 h): ad 2 (-12 h) and ad 1
    # (the click after the first impression at T0 + 10 s); its ad is 4
    row = 3
    assert out["user_id"][row] == 1 and out["ad_id"][row] == 4
    want = (ads[3] @ ads[1] + ads[3] @ ads[0]) / 2
    assert out["t_recent_click_sim"][row] == pytest.approx(float(want), abs=1e-5)


def test_event_at_or_after_t_changes_nothing_before_it():
    base, _ = _run()
    imps = _impressions()
    row = 40  # a test-period impression of user 2 (after train: the PCA fits stay the same)
    t, user = imps["ts"][row], imps["user_id"][row]
    assert user == 2
    planted = [
        (user, t, "click", 5, None),  # at exactly t: not before t
        (user, t, "search", None, QUERIES[0]),
        (user, t + timedelta(minutes=1), "view", 3, None),
    ]
    moved, _ = _run(extra_events=planted)
    cols = [c for c in base.columns if c.startswith(("t_", "e_"))]
    upto = (imps["ts"] <= t).to_numpy()
    assert (
        base.filter(pl.Series(upto)).select(cols).equals(moved.filter(pl.Series(upto)).select(cols))
    )
    later = ~upto & (imps["user_id"] == user).to_numpy()
    assert later.any()
    changed = (
        base.filter(pl.Series(later))["t_user_ad_cos"]
        != moved.filter(pl.Series(later))["t_user_ad_cos"]
    )
    assert changed.any()  # the planted events do count after t


def test_pca_fitted_on_train_ads_only():
    base, _ = _run()
    ads = _ad_vectors()
    ads[TEST_ONLY_AD - 1] = np.random.default_rng(0).standard_normal(D)  # new text, test only
    moved, _ = _run(ads)
    pcs = ["t_ad_pc00", "t_ad_pc01", "t_ad_pc02"]
    other = pl.col("ad_id") != TEST_ONLY_AD
    assert (
        base.filter(other)
        .select(*pcs, "e_user_interest")
        .equals(moved.filter(other).select(*pcs, "e_user_interest"))
    )
    assert not base.select(pcs).equals(moved.select(pcs))  # its own components did move
    # a train ad's text does change the fit
    ads = _ad_vectors()
    ads[0] = np.random.default_rng(1).standard_normal(D)
    changed, _ = _run(ads)
    assert not base.filter(other).select(pcs).equals(changed.filter(other).select(pcs))


def test_ad_without_embedding_gets_zero_vector():
    frame = _impressions().with_columns(
        pl.when(pl.col("impression_id") == 130).then(99).otherwise(pl.col("ad_id")).alias("ad_id")
    )
    out, _, tables = _run_with_tables(frame=frame)
    vectors = _ad_text(out, tables)[(out["impression_id"] == 130).to_numpy()]
    assert vectors.tolist() == [[0.0] * D]
    assert out.filter(pl.col("impression_id") == 130)["t_user_ad_cos"][0] == 0.0


def test_null_ad_gets_null_ad_columns():
    frame = _impressions().with_columns(
        pl.when(pl.col("impression_id") == 130).then(None).otherwise(pl.col("ad_id")).alias("ad_id")
    )
    out, _ = _run(frame=frame)
    row = out.filter(pl.col("impression_id") == 130)
    assert row["e_ad_text"].is_null().all() and row["t_ad_pc00"].is_null().all()
    assert out.filter(pl.col("impression_id") != 130)["e_ad_text"].null_count() == 0


def test_without_behaviour_only_ad_and_query_features():
    out, spec = _run(behaviour=schema.empty(schema.BEHAVIOUR))
    names = [e["name"] for e in spec]
    assert names == [
        "e_ad_text",
        "t_ad_pc00",
        "t_ad_pc01",
        "t_ad_pc02",
        "t_query_ad_cos",
        "t_query_pc00",
        "t_query_pc01",
    ]
    assert out.columns == _impressions().columns + names


def test_without_user_ids_no_user_features():
    frame = _impressions().with_columns(pl.lit(None, pl.Int64).alias("user_id"))
    _, spec = _run(frame=frame)
    names = {e["name"] for e in spec}
    assert "e_ad_text" in names and "t_query_ad_cos" in names
    assert not names & {"e_user_interest", "t_user_ad_cos", "t_recent_click_sim"}


def test_what_the_data_rules_out_adds_nothing():
    # no train impression's ad has an embedding: only the test-only ad has one
    ads = _ad_vectors()
    ads[: TEST_ONLY_AD - 1] = 0.0
    out, spec = _run(ads)
    assert spec == [] and out.columns == _impressions().columns
    # the impressions lack a column text features need
    out, spec = _run(frame=_impressions().drop("split"))
    assert spec == [] and out.columns == [c for c in _impressions().columns if c != "split"]


def test_ad_vectors_fuse_the_fields_when_no_fused_column():
    a = np.array([[3.0, 0.0], [0.0, 0.0]], np.float32)
    b = np.array([[0.0, 4.0], [0.0, 0.0]], np.float32)
    got = ad_vectors(pl.DataFrame({"ad_id": [1, 2], "emb_title": a, "emb_keywords": b}))
    np.testing.assert_allclose(got.matrix, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
    assert got.ids.to_list() == [1, 2]
    fused = ad_vectors(pl.DataFrame({"ad_id": [1, 2], "emb_title": a, "emb_fused": b}))
    np.testing.assert_allclose(fused.matrix, [[0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="emb_"):
        ad_vectors(pl.DataFrame({"ad_id": [1]}))


def test_no_query_embeddings_no_query_features():
    ad_vecs, _ = _vectors()
    empty = query_vectors(pl.DataFrame(schema={"query": pl.String, "emb": pl.Array(pl.Float32, D)}))
    assert empty.matrix.size == 0
    _, spec, _ = text_features(
        _impressions(), ad_vecs, empty, _behaviour(_impressions()), _cfg(), 7
    )
    names = {e["name"] for e in spec}
    assert "e_user_interest" in names  # views and clicks still make an interest
    assert not any(n.startswith("t_query") for n in names)
