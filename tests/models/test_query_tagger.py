"""models.query_tagger on the tiny random BERT (conftest.tiny_bert_dir): it learns a small
separable task, is deterministic, round-trips through save / load, refuses slow tokenizers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.neural_loop import torch_settings
from models.query_tagger import Annotated, QueryTagger
from models.understand_config import UnderstandConfig

INTENTS = ("buy", "travel", "learn")
SENTIMENTS = ("negative", "positive")
KEYS = {"buy": ("buy", "shop"), "travel": ("hotel", "flight"), "learn": ("course", "online")}
BRANDS = ("zork", "vexa", "kipo")  # not in the tiny vocab: single-letter ## pieces
PRODUCTS = ("running shoes", "yoga mat", "smart watch", "laptop", "coffee machine")
FILLERS = ("the", "new", "fast delivery", "red", "for")
# a large learning rate: the tiny model is random, the task is keyed by words
CFG = UnderstandConfig(
    max_length=24, batch_size=16, learning_rate=3e-3, head_learning_rate=1e-2,
    max_steps=240, eval_every=40, patience=3, dtype="float32", train_layers=0,
)  # fmt: skip


def task(seed: int, n: int = 60) -> Annotated:
    """Queries of an intent key word, a brand, a product and fillers in a random order;
    sentiment positive with "best", negative with "cheap", else unlabelled."""
    rng = np.random.default_rng(seed)
    texts, intent, sentiment, spans = [], [], [], []
    for i in range(n):
        k = i % len(INTENTS)
        parts = [(str(rng.choice(KEYS[INTENTS[k]])), None)]
        parts.append((str(rng.choice(BRANDS)), "BRAND"))
        if rng.random() < 0.7:
            parts.append((str(rng.choice(PRODUCTS)), "PRODUCT"))
        mood = int(rng.integers(-1, 2))
        if mood >= 0:
            parts.append((("cheap", "best")[mood], None))
        parts.append((str(rng.choice(FILLERS)), None))
        order = rng.permutation(len(parts))
        text, found = "", []
        for j in order:
            word, label = parts[j]
            start = len(text) + (1 if text else 0)
            text = f"{text} {word}" if text else word
            if label:
                found.append((start, start + len(word), label))
        texts.append(text)
        intent.append(k)
        sentiment.append(mood)
        spans.append(sorted(found))
    return Annotated(texts, np.array(intent), np.array(sentiment), spans)


@pytest.fixture(scope="module")
def fitted(tiny_bert_dir):
    with torch_settings(1):
        tagger = QueryTagger(CFG, tiny_bert_dir, INTENTS, SENTIMENTS, seed=0)
        checks = tagger.fit(task(0), task(1))
    return tagger, checks


def test_learns_a_separable_task(fitted) -> None:
    tagger, checks = fitted
    assert [c["step"] for c in checks][:2] == [40, 80]
    assert set(checks[0]) >= {"loss", "valid_intent_macro_f1", "valid_entity_f1", "seconds"}
    with torch_settings(1):
        found = tagger.evaluate(task(1))
    assert found["intent_macro_f1"] > 0.9
    assert found["entity_f1"] > 0.8
    assert found["score"] == pytest.approx(max(c["valid_score"] for c in checks))  # best kept
    assert np.array(found["intent"]["confusion"]).sum() == 60
    assert set(found["entities"]) == {"BRAND", "PRODUCT", "PRICE", "micro"}


def test_same_seed_same_predictions(fitted, tiny_bert_dir) -> None:
    tagger, _ = fitted
    with torch_settings(1):
        again = QueryTagger(CFG, tiny_bert_dir, INTENTS, SENTIMENTS, seed=0)
        again.fit(task(0), task(1))
        a, b = tagger.predict(task(2).texts), again.predict(task(2).texts)
    assert np.array_equal(a.intent_probs, b.intent_probs)
    assert np.array_equal(a.sentiment_probs, b.sentiment_probs)
    assert a.spans == b.spans


def test_save_load_round_trip(fitted, tmp_path) -> None:
    tagger, _ = fitted
    tagger.save(tmp_path / "tagger")
    meta = json.loads((tmp_path / "tagger" / "tagger.json").read_text())
    assert meta["intents"] == list(INTENTS) and meta["hidden_size"] == 32
    assert meta["tags"][:3] == ["O", "B-BRAND", "I-BRAND"]
    assert (tmp_path / "tagger" / "model.safetensors").is_file()
    assert (tmp_path / "tagger" / "heads.safetensors").is_file()
    loaded = QueryTagger.load(tmp_path / "tagger")
    texts = task(3).texts
    with torch_settings(1):
        a, b = tagger.predict(texts), loaded.predict(texts, batch=7)
    assert np.allclose(a.intent_probs, b.intent_probs, atol=1e-6)
    assert np.array_equal(a.intent_probs.argmax(1), b.intent_probs.argmax(1))
    assert a.spans == b.spans


def test_empty_texts_get_uniform_probabilities(fitted) -> None:
    tagger, _ = fitted
    out = tagger.predict(["", "   ", "buy zork laptop", None])
    assert out.intent_probs.shape == (4, 3) and out.intent_probs.dtype == np.float32
    assert np.allclose(out.intent_probs[[0, 1, 3]], 1 / 3)
    assert np.allclose(out.sentiment_probs[0], 0.5)
    assert out.spans[0] == out.spans[1] == out.spans[3] == []
    assert np.allclose(out.intent_probs.sum(1), 1, atol=1e-5)
    assert tagger.predict([]).intent_probs.shape == (0, 3)


def test_top_layers_only_and_bf16(tiny_bert_dir) -> None:
    cfg = dataclasses.replace(CFG, train_layers=1, max_steps=4, eval_every=2)
    full = QueryTagger(CFG, tiny_bert_dir, INTENTS, SENTIMENTS, seed=0)
    top = QueryTagger(cfg, tiny_bert_dir, INTENTS, SENTIMENTS, seed=0, bf16=True)
    assert 0 < top.trainable < full.trainable
    before = top.net.encoder.embeddings.word_embeddings.weight.clone()
    checks = top.fit(task(0, 20), task(1, 10))
    assert [c["step"] for c in checks] == [2, 4]
    assert (top.net.encoder.embeddings.word_embeddings.weight == before).all()
    every = QueryTagger(
        dataclasses.replace(CFG, train_layers=3), tiny_bert_dir, INTENTS, SENTIMENTS, 0
    )
    assert every.top == 0 and every.trainable == full.trainable  # 3 of 2 layers: all of them


def test_slow_tokenizer_is_refused(tiny_bert_dir, monkeypatch) -> None:
    import transformers

    class Slow:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Slow())
    with pytest.raises(ValueError, match="offsets, which need a fast tokenizer"):
        QueryTagger(CFG, tiny_bert_dir, INTENTS, SENTIMENTS, seed=0)


def test_config_and_labels_are_checked(tiny_bert_dir) -> None:
    with pytest.raises(ValueError, match="holdout"):
        UnderstandConfig(holdout=0.6)
    with pytest.raises(ValueError, match="dtype"):
        UnderstandConfig(dtype="float16")
    with pytest.raises(ValueError, match="train_layers"):
        UnderstandConfig(train_layers=-1)
    with pytest.raises(ValueError, match="intents"):
        QueryTagger(CFG, tiny_bert_dir, ["only"], SENTIMENTS, seed=0)
    with pytest.raises(ValueError, match="differ in length"):
        Annotated(["a"], np.array([0, 1]), np.array([0]), [[]])
