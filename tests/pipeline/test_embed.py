"""pipeline.embed: output contract, edge-case texts, and the (encoder id, text hash) cache."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import numpy as np
import polars as pl
import pytest

import pipeline.embed as stage
from features.schema import ADS, BEHAVIOUR, IMPRESSIONS
from features.text import EmbedConfig, TextEncoder
from pipeline.config import DataConfig, Experiment
from pipeline.io import MANIFEST, read_table, write_tables
from pipeline.stage import Layout

LONG = "waterproof running shoes with free delivery " * 300  # ~13,000 characters
DIM = 32


def raw_ads(titles=None) -> pl.DataFrame:
    ads = pl.DataFrame(
        {
            "ad_id": [10, 11, 12, 13, 14],
            "title": titles or ["Trail running shoes", "", None, "Café crème — 東京", "Red bike"],
            "description": ["Light and fast", "Espresso at home", None, LONG, "Light and fast"],
            "keywords": [["trail", "shoes"], [], None, ["café"], ["bike", "red"]],
        }
    )
    return (
        ads.with_columns(
            **{k: pl.lit(None, dtype=v) for k, v in ADS.items() if k not in ads.columns}
        )
        .select(list(ADS))
        .cast(ADS)
    )


def raw_log() -> tuple[pl.DataFrame, pl.DataFrame]:
    ts = datetime(2026, 3, 1)
    behaviour = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "ts": [ts] * 4,
            "event": ["search", "click", "search", "search"],
            "ad_id": [None, 10, None, None],
            "query": ["running shoes", None, "cheap bike", ""],
        },
        schema=BEHAVIOUR,
    )
    impressions = (
        pl.DataFrame(
            {
                "impression_id": [1, 2, 3],
                "ts": [ts] * 3,
                "user_id": [1, 2, 2],
                "ad_id": [10, 14, 14],
                "query": ["running shoes", None, "Bike  deals!"],
            }
        )
        .with_columns(
            **{
                k: pl.lit(None, dtype=v)
                for k, v in IMPRESSIONS.items()
                if k not in ("impression_id", "ts", "user_id", "ad_id", "query")
            }
        )
        .select(list(IMPRESSIONS))
        .cast(IMPRESSIONS)
    )
    return behaviour, impressions


def write_raw(exp: Experiment, ads: pl.DataFrame) -> None:
    behaviour, impressions = raw_log()
    tables = {"ads": ads, "behaviour": behaviour, "impressions": impressions}
    write_tables(Layout.of(exp).raw, tables, config_digest="test")


@pytest.fixture
def exp(tmp_path, tiny_bert_dir) -> Experiment:
    cfg = EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32", batch_size=3)
    exp = Experiment(name="t", data=DataConfig(root=str(tmp_path / "data")), embed=cfg)
    write_raw(exp, raw_ads())
    return exp


def test_output_contract(exp, tiny_bert_dir):
    summary = stage.run(exp)
    out = Layout.of(exp).embeddings
    vec = pl.Array(pl.Float32, DIM)
    ads = read_table(out, "ads").collect()
    assert ads.schema == pl.Schema(
        {
            "ad_id": pl.Int64,
            "emb_title": vec,
            "emb_description": vec,
            "emb_keywords": vec,
            "emb_fused": vec,
        }
    )
    assert ads["ad_id"].to_list() == [10, 11, 12, 13, 14]
    queries = read_table(out, "queries").collect()
    assert queries.schema == pl.Schema({"query": pl.String, "emb": vec})
    assert queries["query"].to_list() == ["", "Bike  deals!", "cheap bike", "running shoes"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["encoder"] == str(tiny_bert_dir)
    assert manifest["encoder_id"].startswith("tiny-bert-")
    assert len(manifest["revision"]) == 64
    assert manifest["dim"] == DIM and manifest["pooling"] == "mean"
    assert manifest["max_length"] == exp.embed.max_length and manifest["quantize"] is False
    assert manifest["counts"]["embedded"] == summary.notes["embedded"] > 0
    assert summary.rows_out == 5 + 4 and summary.output == str(out)


def test_vectors_empty_texts_and_counts(exp, tiny_bert_dir):
    summary = stage.run(exp)
    ads = read_table(Layout.of(exp).embeddings, "ads").collect()
    title = ads["emb_title"].to_numpy()
    np.testing.assert_array_equal(title[[1, 2]], 0.0)  # "" and None -> the zero vector
    np.testing.assert_array_equal(ads["emb_fused"].to_numpy()[2], 0.0)  # nothing at all
    ref = TextEncoder(exp.embed, tiny_bert_dir).encode(["Trail running shoes", LONG, "Red bike"])
    np.testing.assert_allclose(title[0], ref.vectors[0], atol=1e-5)
    np.testing.assert_allclose(ads["emb_description"].to_numpy()[3], ref.vectors[1], atol=1e-5)
    # same text in two ads (description "Light and fast") -> same vector, embedded once
    desc = ads["emb_description"].to_numpy()
    np.testing.assert_array_equal(desc[0], desc[4])
    # empties: titles "", None; description None; keywords [], None; fused of ad 12; query ""
    assert summary.notes["empty_texts"] == 7
    assert summary.notes["truncated"] == 2  # the long description and the fused text with it
    norms = np.linalg.norm(np.vstack([title[[0, 3, 4]], desc[[0, 3]]]), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_rerun_embeds_nothing_and_gives_the_same_tables(exp):
    first = stage.run(exp)
    before = read_table(Layout.of(exp).embeddings, "ads").collect()
    second = stage.run(exp)
    after = read_table(Layout.of(exp).embeddings, "ads").collect()
    assert second.notes["embedded"] == 0
    assert second.notes["cache_hits"] == first.notes["distinct"] == first.notes["embedded"]
    assert second.notes["truncated"] == first.notes["truncated"]
    assert after.equals(before)


def test_changing_one_ad_embeds_only_its_texts(exp):
    stage.run(exp)
    titles = ["Trail running shoes", "", None, "Café crème — 東京", "Blue bike"]
    write_raw(exp, raw_ads(titles))
    summary = stage.run(exp)
    assert summary.notes["embedded"] == 2  # the new title and the new fused text
    ads = read_table(Layout.of(exp).embeddings, "ads").collect()
    fresh = TextEncoder(exp.embed).encode(["Blue bike"]).vectors[0]
    np.testing.assert_allclose(ads["emb_title"].to_numpy()[4], fresh, atol=1e-5)


def test_cache_is_keyed_by_encoder_settings(exp):
    stage.run(exp)
    cls = replace(exp, embed=replace(exp.embed, pooling="cls"))
    summary = stage.run(cls)
    assert summary.notes["cache_hits"] == 0 and summary.notes["embedded"] > 0
    root = Layout.of(exp).embed_cache
    n, rows = exp.embed.max_length, exp.embed.batch_size
    names = sorted(p.name for p in root.glob("*/*"))
    assert names == [f"cls-len{n}-fp32-w8-r{rows}", f"mean-len{n}-fp32-w8-r{rows}"]


def test_cache_compaction_keeps_every_vector(exp, monkeypatch):
    monkeypatch.setattr(stage, "MAX_SHARDS", 2)
    stage.run(exp)
    for i in range(3):
        write_raw(exp, raw_ads(["Trail running shoes", "", None, "Café", f"bike {i}"]))
        stage.run(exp)
    shards = list(Layout.of(exp).embed_cache.glob("*/*/shard-*.parquet"))
    assert len(shards) <= 2
    again = stage.run(exp)
    assert again.notes["embedded"] == 0
    assert not list(Layout.of(exp).embed_cache.glob("*/*/.tmp-*"))


def test_selected_fields_only(exp):
    only = replace(exp, embed=replace(exp.embed, fields=("title", "fused")))
    stage.run(only)
    ads = read_table(Layout.of(only).embeddings, "ads").collect()
    assert ads.columns == ["ad_id", "emb_title", "emb_fused"]
