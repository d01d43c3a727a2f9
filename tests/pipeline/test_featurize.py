"""The features stage: row accounting and quarantine, determinism, the feature_spec contract,
and datasets without some keys."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import tabular
from features.config import FeatureConfig
from features.schema import ADS, BEHAVIOUR, IMPRESSIONS, RAW_TABLES, USERS
from pipeline import featurize
from pipeline.config import DataConfig, Experiment
from pipeline.io import read_manifest, write_tables
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.marketplace import MarketConfig
from pipeline.stage import Layout

TINY = MarketConfig(n_ads=50, n_users=120, n_impressions=2000, n_advertisers=20)
SPLITS = ("train", "valid", "test")


def _exp(root: Path, name: str = "fx") -> Experiment:
    return Experiment(
        name=name, data=DataConfig(root=str(root)), features=FeatureConfig(text=False)
    )


def _write_raw(exp: Experiment, tables: dict[str, pl.DataFrame], **extra) -> None:
    write_tables(
        Layout.of(exp).raw,
        {n: tables[n] for n in RAW_TABLES},
        config_digest="test",
        extra={"has_conversion": True, **extra},
    )


def _read(exp: Experiment) -> tuple[dict[str, pl.DataFrame], dict]:
    out = Layout.of(exp).features
    tables = {s: pl.read_parquet(out / f"{s}.parquet") for s in (*SPLITS, "vocab")}
    return tables, json.loads((out / "feature_spec.json").read_text())


@pytest.fixture(scope="module")
def market() -> dict[str, pl.DataFrame]:
    return simulate_market(TINY, seed=11)


@pytest.fixture(scope="module")
def built(market, tmp_path_factory):
    exp = _exp(tmp_path_factory.mktemp("fx"))
    _write_raw(exp, market)
    summary = featurize.run(exp)
    return exp, summary


# ---------------------------------------------------------------- quarantine and row accounting


def _with_bad_rows(market: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, dict[int, str]]:
    imps = market["impressions"]
    base = imps.row(100, named=True)
    nxt = imps["impression_id"].max() + 1
    last = imps["ts"].max()
    planted = {
        nxt: ("null_ts", {"ts": None}),
        nxt + 1: ("unknown_ad", {"ad_id": 10_000}),
        nxt + 2: ("unknown_user", {"user_id": 10_000}),
        nxt + 3: ("bad_click", {"click": 3}),
        nxt + 4: ("bad_conversion", {"click": 0, "conversion": 1}),
        nxt + 5: ("outside_split_period", {"ts": last + timedelta(days=30)}),
        nxt + 6: ("null_ad_id", {"ad_id": None}),
    }
    rows = [{**base, "impression_id": i, **change} for i, (_, change) in planted.items()]
    dup = {**imps.row(200, named=True), "click": 1 - imps.row(200, named=True)["click"]}
    rows.append({**dup, "conversion": 0})
    bad = pl.DataFrame(rows, schema=IMPRESSIONS)
    expected = {i: reason for i, (reason, _) in planted.items()}
    return pl.concat([imps, bad]), expected


def test_every_impression_is_accounted_for(market, tmp_path) -> None:
    imps, expected = _with_bad_rows(market)
    exp = _exp(tmp_path)
    _write_raw(exp, {**market, "impressions": imps})
    summary = featurize.run(exp)
    tables, spec = _read(exp)
    quarantine = pl.read_parquet(Layout.of(exp).quarantine / "features" / "impressions.parquet")
    kept = sum(tables[s].height for s in SPLITS)
    assert imps.height == kept + quarantine.height
    assert summary.rows_in == imps.height and summary.rows_quarantined == quarantine.height == 8
    assert summary.rows_out == kept == market["impressions"].height
    got = dict(zip(quarantine["impression_id"], quarantine["reason"], strict=True))
    dup_id = imps.row(200, named=True)["impression_id"]
    assert got == {**expected, dup_id: "duplicate_impression_id"}
    # the duplicate is the second occurrence: the original row is kept unchanged
    kept_dup = pl.concat([tables[s] for s in SPLITS]).filter(pl.col("impression_id") == dup_id)
    assert kept_dup["click"].item() == imps.row(200, named=True)["click"]
    assert set(quarantine.columns) == {*IMPRESSIONS, "reason"}
    line = summary.line()
    assert (
        "quarantined=8" in line and "unknown_user:1" in line and "duplicate_impression_id:1" in line
    )
    assert spec["rows"] == {s: tables[s].height for s in SPLITS}
    manifest = read_manifest(Layout.of(exp).features)
    assert manifest["quarantined"] == 8 and manifest["rows_in"] == imps.height


def test_a_clean_rerun_leaves_an_empty_quarantine(built) -> None:
    exp, summary = built
    quarantine = pl.read_parquet(Layout.of(exp).quarantine / "features" / "impressions.parquet")
    assert quarantine.height == 0 == summary.rows_quarantined


# ---------------------------------------------------------------- determinism and the contract


def test_rebuilding_gives_equal_frames(market, built, tmp_path) -> None:
    exp, _ = built
    again = _exp(tmp_path)
    _write_raw(again, market)
    featurize.run(again)
    (a, spec_a), (b, spec_b) = _read(exp), _read(again)
    for name in (*SPLITS, "vocab"):
        assert_frame_equal(a[name], b[name])
    assert spec_a == spec_b


def test_feature_spec_contract(built) -> None:
    exp, _ = built
    tables, spec = _read(exp)
    meta = tabular.META
    assert spec["meta"] == meta and spec["labels"] == ["click", "conversion"]
    for s in SPLITS:
        assert tables[s].columns[: len(meta)] == meta
        assert (tables[s]["split"] == s).all() and tables[s]["ts"].is_sorted()
    names = [f["name"] for f in spec["features"]]
    assert len(names) == len(set(names))
    for f in spec["features"]:
        assert f["kind"] in ("categorical", "numeric", "embedding")
        assert {"name", "kind", "source", "family"} <= set(f)
        col = pl.concat([tables[s][f["name"]] for s in SPLITS])
        if f["kind"] == "categorical":
            assert col.dtype == pl.Int32 and col.min() >= 0 and col.max() < f["cardinality"]
            train_codes = tables["train"][f["name"]]
            assert train_codes.min() >= 1  # every train value has a code; 0 is for unseen
        else:
            assert col.dtype == pl.Float32
            assert np.isfinite(col.drop_nulls().to_numpy()).all()
    families = {f["family"] for f in spec["features"]}
    assert {"id", "context", "behaviour", "ad"} <= families
    # no column from the oracle or the hidden subtopic
    assert not any("subtopic" in n or n.startswith(("p_click", "p_conv")) for n in names)
    assert tables["test"]["cold_start"].any() and not tables["train"]["cold_start"].any()


def test_unseen_values_get_code_zero(built) -> None:
    exp, _ = built
    tables, _ = _read(exp)
    cold = tables["test"].filter(pl.col("cold_start"))
    assert (cold["c_ad_id"] == 0).all()


# ---------------------------------------------------------------- datasets without some keys


def test_keyless_dataset_with_given_split_and_extra_columns(tmp_path) -> None:
    """Criteo-like: no user, ad, ads or users; cat_*/num_* columns; the split comes with it."""
    n = 300
    rng = np.random.default_rng(0)
    imps = pl.DataFrame(
        {
            "impression_id": np.arange(1, n + 1),
            "ts": pl.datetime_range(
                pl.datetime(2026, 1, 1),
                pl.datetime(2026, 1, 1) + timedelta(seconds=n - 1),
                "1s",
                eager=True,
            ),
            "click": (rng.random(n) < 0.2).astype(np.int8),
            "cat_site": rng.choice(["a", "b", "c"], n),
            "num_x": rng.normal(size=n),
            "split": [*np.repeat(["train", "valid", "test"], n // 3)[:-1], "holdout"],
        }
    )
    for col, dtype in IMPRESSIONS.items():
        if col not in imps.columns:
            imps = imps.with_columns(pl.lit(None, dtype).alias(col))
    imps = imps.with_columns(pl.col("click").cast(pl.Int8))
    empty = {"ads": pl.DataFrame(schema=ADS), "users": pl.DataFrame(schema=USERS)}
    exp = _exp(tmp_path, "keyless")
    _write_raw(
        exp,
        {**empty, "behaviour": pl.DataFrame(schema=BEHAVIOUR), "impressions": imps},
        has_conversion=False,
    )
    summary = featurize.run(exp)
    tables, spec = _read(exp)
    assert summary.rows_quarantined == 1 and summary.rows_out == n - 1
    assert {s: tables[s].height for s in SPLITS} == {"train": 100, "valid": 100, "test": 99}
    quarantine = pl.read_parquet(Layout.of(exp).quarantine / "features" / "impressions.parquet")
    assert quarantine.select("impression_id", "reason").rows() == [(n, "unknown_split")]
    assert spec["split"] == {"split_mode": "given"} and spec["labels"] == ["click"]
    names = {f["name"] for f in spec["features"]}
    assert {"c_cat_site", "n_num_x", "c_hour"} <= names
    assert not any(n.startswith(("n_user_", "n_ad_", "c_user_id", "c_ad_id")) for n in names)
    assert not any("cvr" in n or "convs" in n for n in names)
    assert "n_placement_imps_all" not in names  # placement is all null: key skipped
    assert_frame_equal(
        tables["train"].select("impression_id", "n_num_x"),
        imps.filter(pl.col("split") == "train").select(
            "impression_id", pl.col("num_x").cast(pl.Float32).alias("n_num_x")
        ),
    )
