"""features.text: the encoder on a tiny random BERT, and once on the real packaged encoder."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from features.text import (
    DEFAULT_ENCODER,
    EmbedConfig,
    TextEncoder,
    ad_texts,
    model_revision,
    resolve_model_dir,
    variant,
)

LONG = "waterproof running shoes on sale with free delivery " * 250  # ~13,000 characters
TEXTS = [
    "running shoes sale",
    "cheap espresso machine with free delivery",
    "electric bike",
    "wireless headphones: best deal!",
]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir) -> TextEncoder:
    return TextEncoder(EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32", batch_size=2))


def manual_embedding(encoder: TextEncoder, text: str, pooling: str) -> np.ndarray:
    """The textbook computation for one text, no batching or padding."""
    batch = encoder.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**batch)[0][0]
    vec = hidden.mean(0) if pooling == "mean" else hidden[0]
    return (vec / vec.norm()).numpy()


def test_vectors_are_unit_norm_float32_in_input_order(encoder):
    out = encoder.encode(TEXTS)
    assert out.vectors.shape == (4, 32)
    assert out.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(
            out.vectors[i], manual_embedding(encoder, text, "mean"), atol=1e-5
        )


def test_cls_pooling(tiny_bert_dir):
    enc = TextEncoder(EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32", pooling="cls"))
    out = enc.encode(TEXTS[:2])
    np.testing.assert_allclose(out.vectors[1], manual_embedding(enc, TEXTS[1], "cls"), atol=1e-5)


def test_padding_does_not_change_a_vector(tiny_bert_dir):
    """A short text batched with a long one (padded) equals the short text alone."""
    cfg = EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32", batch_size=8)
    together = TextEncoder(cfg).encode(["shoe", TEXTS[1]]).vectors[0]
    alone = TextEncoder(replace(cfg, batch_size=1)).encode(["shoe"]).vectors[0]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_order_and_duplicates_do_not_change_results(encoder):
    a = encoder.encode(TEXTS + TEXTS)
    b = encoder.encode(TEXTS[::-1])
    assert a.n_unique == 4
    np.testing.assert_array_equal(a.vectors[:4], b.vectors[::-1])
    np.testing.assert_array_equal(a.vectors[:4], a.vectors[4:])


def test_empty_missing_long_and_non_ascii_texts(encoder):
    texts = ["", None, "   \n", LONG, "Café crème ñandú 東京 — 50% off!", "shoe"]
    out = encoder.encode(texts)
    assert out.n_empty == 3
    np.testing.assert_array_equal(out.vectors[:3], 0.0)  # the defined empty-text vector
    assert out.truncated.tolist() == [False, False, False, True, False, False]
    np.testing.assert_allclose(np.linalg.norm(out.vectors[3:], axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(out.vectors).all()


def test_truncation_is_counted_exactly_at_the_limit(tiny_bert_dir):
    enc = TextEncoder(EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32", max_length=5))
    exact, over = "red blue green", "red blue green black"  # 3 + 2 specials = 5 tokens; 6
    out = enc.encode([exact, over])
    assert out.truncated.tolist() == [False, True]
    # the truncated text equals its first max_length - 2 words
    np.testing.assert_allclose(out.vectors[1], out.vectors[0], atol=1e-6)


def test_quantized_and_bf16_variants(tiny_bert_dir, encoder):
    ref = encoder.encode(TEXTS).vectors
    for cfg, name in [
        (EmbedConfig(encoder=str(tiny_bert_dir), quantize=True), "int8"),
        (EmbedConfig(encoder=str(tiny_bert_dir), dtype="bfloat16"), "bf16"),
    ]:
        enc = TextEncoder(cfg)
        assert enc.precision == name and f"-{name}-" in variant(cfg)
        vec = enc.encode(TEXTS).vectors
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, rtol=1e-4)
        assert (np.sum(vec * ref, axis=1) > 0.9).all()
        assert not np.array_equal(vec, ref)


def test_encoder_id_follows_the_weights(tiny_bert_dir, tmp_path, encoder):
    copy = tmp_path / "tiny-bert"
    shutil.copytree(tiny_bert_dir, copy)
    assert model_revision(copy) == encoder.revision
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    assert model_revision(copy) != encoder.revision
    assert encoder.encoder_id == f"tiny-bert-{encoder.revision[:8]}"


def test_config_and_path_errors(tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        EmbedConfig(pooling="max")
    with pytest.raises(ValueError, match="fields"):
        EmbedConfig(fields=("title", "body"))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model_dir(str(tmp_path))


def test_ad_texts_fuses_non_empty_parts():
    ads = pl.DataFrame(
        {
            "ad_id": [1, 2, 3],
            "title": ["Trail shoes!", " ", None],
            "description": ["Light and fast.", "Espresso at home", None],
            "keywords": [["trail", "", "shoes"], [], None],
        }
    )
    got = ad_texts(ads)
    expected = pl.DataFrame(
        {
            "ad_id": [1, 2, 3],
            "title": ["Trail shoes!", None, None],
            "description": ["Light and fast.", "Espresso at home", None],
            "keywords": ["trail, shoes", None, None],
            "fused": ["Trail shoes! Light and fast. trail, shoes", "Espresso at home.", None],
        }
    )
    assert got.equals(expected)


@pytest.mark.slow
def test_real_packaged_encoder():
    enc = TextEncoder(EmbedConfig())
    assert resolve_model_dir(DEFAULT_ENCODER).is_dir()
    texts = [
        "lightweight trail running shoes",
        "running shoes for trail runners",
        "home insurance quote online",
        "",
        "Chaussures de course légères — 東京",
    ]
    out = enc.encode(texts)
    assert out.vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(out.vectors[[0, 1, 2, 4]], axis=1), 1.0, rtol=1e-4)
    assert out.n_empty == 1
    sim = out.vectors @ out.vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.3


@pytest.mark.slow
def test_a_vector_does_not_depend_on_its_batch():
    """bf16 kernels round differently at different padded widths and row counts; each text
    runs at its own width in a batch of a fixed row count, so a vector computed alone (or
    cached from another run) is bit-identical to one computed among many other texts. (With
    batches of as many rows as there were texts left, 10 of 60 vectors differed.)"""
    from pipeline.sources.simulated.marketplace import MarketConfig, make_ads

    ads, _ = make_ads(MarketConfig(n_ads=150, n_advertisers=20), np.random.default_rng(3))
    texts = ads["title"].to_list() + ads["description"].to_list()
    enc = TextEncoder(EmbedConfig(dtype="bfloat16", batch_size=64))
    together = enc.encode(texts).vectors
    some = list(range(0, len(texts), 5))
    apart = enc.encode([texts[i] for i in some]).vectors
    np.testing.assert_array_equal(together[some], apart)
    alone = np.vstack([enc.encode([texts[i]]).vectors for i in some[:20]])
    np.testing.assert_array_equal(together[some[:20]], alone)
