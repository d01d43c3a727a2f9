"""Text features through the features stage: the job reads raw/ and embeddings/ (each table
once), builds the text columns only when it should, and the written spec feeds each model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.config import FeatureConfig
from features.interest import normalize
from features.schema import RAW_TABLES
from features.spec import AD_TEXT_TABLE, INTEREST, INTEREST_EVENTS, FeatureSpec
from pipeline import featurize
from pipeline.config import DataConfig, Experiment
from pipeline.datasets import SplitTable, load_split, load_tables, to_matrix, with_interest
from pipeline.io import DataError, write_tables
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.marketplace import MarketConfig
from pipeline.stage import Layout

TINY = MarketConfig(n_ads=50, n_users=120, n_impressions=2000, n_advertisers=20)
D = 8
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def market() -> dict[str, pl.DataFrame]:
    return simulate_market(TINY, seed=11)


def _exp(root: Path, text: bool = True) -> Experiment:
    features = FeatureConfig(text=text, lgbm_text_dim=3, interest_dim=2, recent_clicks=2)
    return Experiment(name="tx", data=DataConfig(root=str(root)), features=features)


def _write(
    exp: Experiment,
    market: dict[str, pl.DataFrame],
    has_text: bool = True,
    embeddings: bool = True,
    made_from: Path | None = None,
) -> np.ndarray:
    """Raw tables and random embeddings of every ad and query; the ads' vectors (by ad_id)."""
    layout = Layout.of(exp)
    write_tables(
        layout.raw,
        {n: market[n] for n in RAW_TABLES},
        config_digest="test",
        extra={"has_conversion": True, "has_text": has_text},
    )
    rng = np.random.default_rng(0)
    ad_ids = market["ads"]["ad_id"]
    ads = rng.standard_normal((len(ad_ids), D)).astype(np.float32)
    queries = (
        pl.concat([market["impressions"]["query"], market["behaviour"]["query"]])
        .drop_nulls()
        .unique(maintain_order=True)
    )
    if embeddings:
        q = rng.standard_normal((len(queries), D)).astype(np.float32)
        write_tables(
            layout.embeddings,
            {
                "ads": pl.DataFrame({"ad_id": ad_ids, "emb_fused": ads}),
                "queries": pl.DataFrame({"query": queries, "emb": q}),
            },
            config_digest="test",
            inputs={"raw": made_from or layout.raw},
        )
    return ads


def _read(exp: Experiment) -> tuple[pl.DataFrame, FeatureSpec]:
    layout = Layout.of(exp)
    frame = pl.concat([load_split(layout, s) for s in SPLITS])  # interest codes expanded
    return frame, FeatureSpec.load(layout.feature_spec)


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Every table the features job reads, as `<stage dir>/<table>`."""
    counts: Counter = Counter()
    real = featurize.read_table

    def counting(directory, name, *args, **kwargs):
        counts[f"{Path(directory).name}/{name}"] += 1
        return real(directory, name, *args, **kwargs)

    monkeypatch.setattr(featurize, "read_table", counting)
    return counts


def test_text_features_are_built_from_each_table_read_once(market, tmp_path, reads) -> None:
    exp = _exp(tmp_path)
    ads = _write(exp, market)
    featurize.run(exp)
    raw = ["raw/impressions", "raw/ads", "raw/users", "raw/behaviour"]
    assert reads == Counter([*raw, "embeddings/ads", "embeddings/queries"])
    frame, spec = _read(exp)
    assert spec.has_text is True
    text = [f.name for f in spec.family("text")]
    assert {"e_ad_text", "t_ad_pc00", "e_user_interest", "t_user_ad_cos"} <= set(text)
    assert {"t_query_ad_cos", "t_recent_click_sim", "t_interest_events"} <= set(text)
    # each row carries its own ad's unit-norm embedding
    row_of = {a: i for i, a in enumerate(market["ads"]["ad_id"])}
    want = normalize(ads)[[row_of[a] for a in frame["ad_id"]]]
    # the spec feeds each model its columns; the ad text is a code into a table of one row per ad
    tables = load_tables(Layout.of(exp), spec)
    assert tables[AD_TEXT_TABLE].shape == (len(ads) + 1, D)
    neural = to_matrix(frame, spec, "neural", tables)
    assert sorted(neural.embeddings) == ["e_ad_text", "e_user_interest"]
    assert neural.embeddings["e_ad_text"].shape == (frame.height, D)
    np.testing.assert_allclose(neural.embeddings["e_ad_text"].dense(), want, rtol=1e-6)
    assert "t_ad_pc00" not in neural.numeric_names
    gbm = spec.by_kind("lightgbm")
    assert gbm["embedding"] == ()
    assert {"t_ad_pc00", "t_user_ad_cos"} <= {f.name for f in gbm["numeric"]}


def test_the_interest_column_is_stored_as_codes_and_read_as_vectors(market, tmp_path) -> None:
    exp = _exp(tmp_path)
    _write(exp, market)
    featurize.run(exp)
    layout = Layout.of(exp)
    stored = pl.read_parquet(layout.features / "train.parquet")
    assert stored.schema[INTEREST] == pl.Int32
    events = pl.read_parquet(layout.features / f"{INTEREST_EVENTS}.parquet")
    assert stored[INTEREST].max() <= events.height and (stored[INTEREST] == 0).any()
    frame = load_split(layout, "train")
    assert frame.schema[INTEREST] == pl.Array(pl.Float32, 2)
    assert frame.drop(INTEREST).equals(stored.drop(INTEREST))
    assert (frame.filter(stored[INTEREST] == 0)[INTEREST].to_numpy() == 0).all()  # no history
    table = SplitTable.of(layout, "train")  # slab by slab, the same rows
    slabs = [table.slab(i, [INTEREST], 64) for i in range(len(table.slabs(64)))]
    assert pl.concat(slabs).equals(frame.select(INTEREST))
    spec = FeatureSpec.load(layout.feature_spec)
    with pytest.raises(ValueError, match="holds codes"):
        to_matrix(stored, spec, "neural", load_tables(layout, spec))
    broken = stored.with_columns(pl.lit(events.height + 1, pl.Int32).alias(INTEREST))
    with pytest.raises(DataError, match="codes outside"):  # one line, exit 2 from a stage
        with_interest(broken, layout.features)
    (layout.features / f"{INTEREST_EVENTS}.parquet").unlink()
    with pytest.raises(DataError, match=f"{INTEREST_EVENTS}.parquet"):
        load_split(layout, "train")


def _no_text(exp: Experiment) -> None:
    frame, spec = _read(exp)
    assert spec.has_text is False
    assert not spec.family("text")
    assert not [c for c in frame.columns if c.startswith(("e_", "t_"))]


def test_text_off_reads_no_embeddings_and_adds_nothing(market, tmp_path, reads) -> None:
    exp = _exp(tmp_path, text=False)
    _write(exp, market)
    featurize.run(exp)
    _no_text(exp)
    assert not [t for t in reads if t.startswith("embeddings/")]


def test_raw_without_text_adds_nothing(market, tmp_path) -> None:
    exp = _exp(tmp_path)
    _write(exp, market, has_text=False)
    featurize.run(exp)
    _no_text(exp)


def test_missing_embeddings_add_nothing(market, tmp_path) -> None:
    exp = _exp(tmp_path)
    _write(exp, market, embeddings=False)
    featurize.run(exp)
    _no_text(exp)


def test_embeddings_of_another_raw_are_refused_when_text_is_on(market, tmp_path) -> None:
    exp = _exp(tmp_path)
    other = tmp_path / "other-raw"
    write_tables(other, {"ads": market["ads"]}, config_digest="other")
    _write(exp, market, made_from=other)
    layout = Layout.of(exp)
    with pytest.raises(DataError, match=r"embeddings was built from raw \w{8}, but .*raw is now"):
        featurize.run(exp)
    assert not layout.features.exists()
    featurize.run(_exp(tmp_path, text=False))  # stale embeddings are not read without text
    assert _read(exp)[1].has_text is False
