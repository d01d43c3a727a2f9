"""models.text_tuner and models.retrieval on the tiny random BERT (conftest.tiny_bert_dir)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from features.text import EmbedConfig, TextEncoder
from models.finetune_config import FinetuneConfig
from models.retrieval import retrieval_metrics, retrieval_ranks
from models.text_tuner import EncoderTuner, PairSet, RetrievalTask, info_nce

# (query, ad) pairs a random encoder cannot tell apart but a tuned one can
TOPICS = [
    ("buy running shoes", "trail shoe sale"),
    ("cheap coffee", "espresso machine deal"),
    ("electric bike", "bike fast delivery"),
    ("yoga mat", "lightweight mat free"),
    ("wireless headphones", "headphones best sale"),
    ("smart watch", "watch new black"),
    ("hotel deal", "hotel off % for"),
    ("dog food", "food for dog cheap"),
]
TEXTS = [q for q, _ in TOPICS] + [a for _, a in TOPICS] + [f"{q} now" for q, _ in TOPICS]
CFG = FinetuneConfig(
    method="top", top_layers=1, batch_size=4, max_steps=40, eval_every=10, patience=10, lr=3e-3
)


def pairs() -> PairSet:
    n = len(TOPICS)
    return PairSet(
        kind="query",
        anchors=[(i,) for i in range(n)],
        positives=np.arange(n, 2 * n),
        anchor_key=np.arange(n),
        positive_key=np.arange(n),
    )


def task() -> RetrievalTask:
    n = len(TOPICS)
    return RetrievalTask(
        anchors=[(i,) for i in range(2 * n, 3 * n)],  # paraphrases of the train queries
        candidates=np.arange(n, 2 * n),
        query_of=np.arange(n),
        target_of=np.arange(n),
    )


def test_select_last_keeps_the_last_steps_weights(tiny_bert_dir) -> None:
    cfg = dataclasses.replace(CFG, select="last", max_steps=5, eval_every=5)
    tuner = EncoderTuner(cfg, tiny_bert_dir, TEXTS, seed=0)
    before = tuner.vectors(np.arange(len(TEXTS)))
    checks = tuner.fit([pairs()], VALID, SELECT)
    assert [c["step"] for c in checks] == [0, 5]
    assert tuner.evaluate(task())["mrr"] == pytest.approx(checks[-1][SELECT])
    assert not np.allclose(tuner.vectors(np.arange(len(TEXTS))), before)


VALID = {"query": task()}
SELECT = "valid_query_mrr"


def test_ranks_count_only_strictly_better_candidates() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    ranks = retrieval_ranks(q, c, query_of=[0, 1, 1], target_of=[0, 0, 2])
    assert ranks.tolist() == [1, 3, 1]  # a tie with the target does not rank above it
    m = retrieval_metrics(ranks, k=2)
    assert m["recall_at_2"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert np.isnan(retrieval_metrics(np.array([], dtype=np.int64))["mrr"])


def test_info_nce_masks_a_shared_positive_instead_of_pushing_it_away() -> None:
    a = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    p = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
    shared = info_nce(a, p, np.arange(3), np.array([0, 0, 1]), 0.1)
    distinct = info_nce(a, p, np.arange(3), np.arange(3), 0.1)
    assert shared < distinct  # one negative fewer in rows 0 and 1
    # the masked loss equals the loss without the masked column, computed by hand
    logits = a @ p.T / 0.1
    row0 = -torch.log_softmax(logits[0, [0, 2]], 0)[0]
    row1 = -torch.log_softmax(logits[1, [1, 2]], 0)[0]
    row2 = -torch.log_softmax(logits[2], 0)[2]
    col0 = -torch.log_softmax(logits[[0, 2], 0], 0)[0]
    col1 = -torch.log_softmax(logits[[1, 2], 1], 0)[0]
    col2 = -torch.log_softmax(logits[:, 2], 0)[2]
    by_hand = ((row0 + row1 + row2) / 3 + (col0 + col1 + col2) / 3) / 2
    assert float(shared) == pytest.approx(float(by_hand), rel=1e-5)


def test_the_top_layers_on_cached_states_give_the_full_models_vectors(tiny_bert_dir) -> None:
    tuner = EncoderTuner(CFG, tiny_bert_dir, TEXTS, seed=0)
    full = TextEncoder(EmbedConfig(encoder=str(tiny_bert_dir), dtype="float32")).encode(TEXTS)
    cos = (tuner.vectors(np.arange(len(TEXTS))) * full.vectors).sum(1)
    assert cos.min() > 0.999  # the cache holds float16 states
    assert tuner.trainable == sum(
        p.numel() for p in torch.nn.ModuleList([tuner._full[2][-1]]).parameters()
    )


@pytest.mark.parametrize("method", ["top", "lora"])
def test_tuning_lifts_retrieval_of_held_out_paraphrases(tiny_bert_dir, method) -> None:
    cfg = dataclasses.replace(CFG, method=method, lr=3e-3 if method == "top" else 2e-2)
    tuner = EncoderTuner(cfg, tiny_bert_dir, TEXTS, seed=0)
    checks = tuner.fit([pairs()], VALID, SELECT)
    assert checks[0]["step"] == 0
    best = max(c[SELECT] for c in checks)
    assert best > checks[0][SELECT] + 0.1
    assert tuner.evaluate(task())["mrr"] == pytest.approx(best)  # the best check's weights


def test_same_seed_gives_bit_identical_weights(tiny_bert_dir, tmp_path: Path) -> None:
    digests = []
    for k in range(2):
        tuner = EncoderTuner(CFG, tiny_bert_dir, TEXTS, seed=3)
        tuner.fit([pairs()], VALID, SELECT)
        tuner.save(tmp_path / str(k))
        digests.append((tmp_path / str(k) / "model.safetensors").read_bytes())
    assert digests[0] == digests[1]
    other = EncoderTuner(CFG, tiny_bert_dir, TEXTS, seed=4)
    other.fit([pairs()], VALID, SELECT)
    other.save(tmp_path / "other")
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != digests[0]


def test_a_saved_lora_encoder_is_a_plain_model_the_embedder_loads(tiny_bert_dir, tmp_path) -> None:
    cfg = dataclasses.replace(CFG, method="lora", lr=2e-2, max_steps=10)
    tuner = EncoderTuner(cfg, tiny_bert_dir, TEXTS, seed=0)
    total = sum(p.numel() for p in tuner.model.parameters())
    assert 0 < tuner.trainable < total / 2
    tuner.fit([pairs()], VALID, SELECT)
    want = tuner.vectors(np.arange(len(TEXTS)))
    tuner.save(tmp_path / "enc")
    assert "lora" not in json.dumps(json.loads((tmp_path / "enc" / "config.json").read_text()))
    got = TextEncoder(EmbedConfig(encoder=str(tmp_path / "enc"), dtype="float32")).encode(TEXTS)
    assert np.allclose(got.vectors, want, atol=1e-4)


def test_a_tokenizer_that_does_not_fit_the_weights_is_refused(tiny_bert_dir, tmp_path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    bad = tmp_path / "bad"
    BertTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(bad)
    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.vocab_size = 8  # fewer embeddings than the tokenizer's ids
    BertModel(config).save_pretrained(bad)
    with pytest.raises(ValueError, match="do not belong together"):
        EncoderTuner(CFG, bad, TEXTS, seed=0)
