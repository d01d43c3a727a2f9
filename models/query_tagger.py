"""Query understanding: a local Hugging Face encoder fine-tuned with three heads (pure: texts and
labels in, probabilities and spans out; no file I/O besides loading the base, `save` and `load`).

Intent and sentiment are linear heads on the mean-pooled (attention-masked) last hidden state;
entities are BIO tags per word (`models.spans`: on each word's first sub-word token), a linear
head on every token state. The token offsets of a fast tokenizer map the tags back to character
spans. One loss: CE(intent, label-smoothed) + sentiment_weight · CE(sentiment, unlabelled rows
skipped) + entity_weight · CE(tags, special tokens and later sub-word pieces skipped). AdamW
in two groups (encoder, heads), linear warmup then linear decay; every `eval_every` steps a
check on valid, whose selection `score` is the mean of intent macro-F1, sentiment accuracy
(when valid has labelled sentiments) and entity micro-F1 (when valid has spans); the best
check's weights are kept. Runs on the CPU, the forward passes under bfloat16 autocast when
`bf16`. Deterministic for a seed and a thread count (run it under
`models.neural_loop.torch_settings` to fix the latter).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.spans import (
    ENTITY_TYPES,
    IGNORE,
    Annotated,
    Span,
    align_labels,
    bio_tags,
    decode_spans,
    understanding_scores,
)
from models.text_tuner import _Cycle, layer_list, top_layers_only
from models.understand_config import UnderstandConfig

HEADS_FILE = "heads.safetensors"
TAGGER_FILE = "tagger.json"
__all__ = ["Annotated", "QueryTagger", "TaggerOutput"]
CHECK_METRICS = ("intent_macro_f1", "sentiment_accuracy", "entity_f1", "score")


@dataclass(frozen=True)
class TaggerOutput:
    """Per query: intent and sentiment probabilities (float32, rows sum to 1) and its spans."""

    intent_probs: np.ndarray
    sentiment_probs: np.ndarray
    spans: list[list[Span]]


class _Net(nn.Module):
    """The encoder and its three heads."""

    def __init__(self, encoder: nn.Module, hidden: int, sizes: tuple[int, int, int], dropout):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.intent = nn.Linear(hidden, sizes[0])
        self.sentiment = nn.Linear(hidden, sizes[1])
        self.token = nn.Linear(hidden, sizes[2])

    def forward(self, ids: torch.Tensor | None, mask: torch.Tensor, bf16: bool, states=None):
        """Logits from token ids, or (`states`) from cached lower-layer states while the
        encoder is cut to its top layers (`top_layers_only`)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if states is None:
                hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            else:
                hidden = self.encoder(inputs_embeds=states, attention_mask=mask)[0]
        hidden = hidden.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = self.dropout((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))
        return self.intent(pooled), self.sentiment(pooled), self.token(self.dropout(hidden))


class QueryTagger:
    """The encoder with intent, sentiment and entity heads; `fit` tunes all of it (or the top
    `train_layers` layers and the heads), `predict` labels queries, `save` / `load` a dir."""

    def __init__(
        self,
        cfg: UnderstandConfig,
        model_dir: Path,
        intents: Sequence[str],
        sentiments: Sequence[str],
        seed: int,
        bf16: bool = False,
        types: Sequence[str] = ENTITY_TYPES,
    ) -> None:
        """`bf16`: forward passes under bfloat16 autocast (weights and optimiser float32)."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        for name, labels in (("intents", intents), ("sentiments", sentiments)):
            few = len(labels) < 2 and (name == "intents" or len(labels) == 1)
            if few or len(set(labels)) != len(labels):
                raise ValueError(
                    f"{name} must be 2 distinct labels or more{' (or none)' * (name != 'intents')}"
                    f", got {list(labels)}"
                )
        self.cfg, self.seed, self.bf16 = cfg, seed, bf16
        self.intents, self.sentiments = tuple(intents), tuple(sentiments)
        self.types, self.tags = tuple(types), bio_tags(types)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(
                f"{model_dir}: entity spans need token offsets, which need a fast tokenizer "
                f"(a tokenizer.json); {type(self.tokenizer).__name__} is not one"
            )
        self.pad_id = self.tokenizer.pad_token_id or 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = AutoModel.from_pretrained(
                model_dir, local_files_only=True, dtype=torch.float32
            )
            self.hidden = int(encoder.config.hidden_size)
            # no sentiment labels: a one-class head that never trains (its output is unused)
            sizes = (len(self.intents), max(1, len(self.sentiments)), len(self.tags))
            self.net = _Net(encoder, self.hidden, sizes, cfg.dropout)
        if len(self.tokenizer) > int(encoder.config.vocab_size):
            raise ValueError(
                f"{model_dir}: the tokenizer has {len(self.tokenizer)} tokens but the model "
                f"{encoder.config.vocab_size} embeddings (they do not belong together)"
            )
        # the top layers that train; 0 (or a count at or above the model's) = every layer
        self.top = 0
        if cfg.train_layers:
            parent, name = layer_list(encoder)
            layers = getattr(parent, name)
            if cfg.train_layers < len(layers):
                self.top = cfg.train_layers
                for p in encoder.parameters():
                    p.requires_grad_(False)
                for p in layers[-self.top :].parameters():
                    p.requires_grad_(True)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list]]:
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.cfg.max_length,
            return_offsets_mapping=True, verbose=False,
        )  # fmt: skip
        return enc["input_ids"], enc["offset_mapping"]

    def _pad(self, rows: list[list[int]], fill: int) -> torch.Tensor:
        out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        return out

    def _batch(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self._pad([[1] * len(r) for r in ids], 0)
        return self._pad(ids, self.pad_id), mask

    def fit(
        self, train: Annotated, valid: Annotated, progress: Callable[[dict], None] | None = None
    ) -> list[dict]:
        """Train until `max_steps` or `patience` checks without a better valid `score`, then
        keep the best check's weights. Returns the checks: step, mean loss since the previous
        check, valid intent macro-F1, sentiment accuracy, entity micro-F1, score, seconds."""
        cfg = self.cfg
        if not len(train) or not len(valid):
            raise ValueError(f"fit needs train and valid queries, got {len(train)} / {len(valid)}")
        bounds = (("intent", train.intent, 0, len(self.intents)),
                  ("sentiment", train.sentiment, -1, len(self.sentiments)))  # fmt: skip
        for name, y, low, n in bounds:
            if y.min() < low or y.max() >= n:
                raise ValueError(f"train {name} indices must lie in [{low}, {n})")
        ids, offsets = self._tokenize(train.texts)
        tags = [align_labels(o, s, self.tags) for o, s in zip(offsets, train.spans, strict=True)]
        intent, sentiment = torch.as_tensor(train.intent), torch.as_tensor(train.sentiment)
        heads = list(self._heads(self.net.named_parameters()).values())
        encoder = [p for p in self.net.encoder.parameters() if p.requires_grad]
        params = encoder + heads
        opt = torch.optim.AdamW(
            [{"params": encoder, "lr": cfg.learning_rate},
             {"params": heads, "lr": cfg.head_learning_rate}],
            weight_decay=cfg.weight_decay,
        )  # fmt: skip
        warm, total = round(cfg.warmup * cfg.max_steps), cfg.max_steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / (warm + 1) if s < warm else (total - s) / max(1, total - warm)
        )
        # only the top layers train: the lower ones run once per query, their states are kept
        cache = self._lower_states(ids) if self.top else None
        draw = _Cycle(len(train), cfg.batch_size, np.random.default_rng(self.seed))
        ce = nn.functional.cross_entropy
        checks: list[dict] = []
        best, best_state, waited, losses, t0 = -math.inf, None, 0, [], time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the dropout masks
            for step in range(1, total + 1):
                rows = draw.next().tolist()
                self.net.train()
                x, mask = self._batch([ids[r] for r in rows])
                y_tags = self._pad([tags[r] for r in rows], IGNORE)
                if cache is None:
                    a, b, c = self.net(x, mask, self.bf16)
                else:
                    with top_layers_only(self.net.encoder, self.top):
                        a, b, c = self.net(None, mask, self.bf16, states=_stack(cache, rows))
                loss = ce(a, intent[rows], label_smoothing=cfg.label_smoothing)
                if (sentiment[rows] >= 0).any():
                    loss = loss + cfg.sentiment_weight * ce(b, sentiment[rows], ignore_index=-1)
                if (y_tags != IGNORE).any():
                    loss = loss + cfg.entity_weight * ce(
                        c.reshape(-1, c.shape[-1]), y_tags.reshape(-1), ignore_index=IGNORE
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if step % cfg.eval_every and step != total:
                    continue
                found = self.evaluate(valid)
                check = {"step": step, "loss": float(np.mean(losses))}
                check |= {f"valid_{k}": found[k] for k in CHECK_METRICS}
                checks.append(check | {"seconds": round(time.perf_counter() - t0, 2)})
                losses = []
                if progress:
                    progress(checks[-1])
                if found["score"] > best:
                    best, waited = found["score"], 0
                    best_state = {n: p.detach().clone() for n, p in self._trainable()}
                else:
                    waited += 1
                    if waited >= cfg.patience:
                        break
        if best_state is not None:
            with torch.no_grad():
                for n, p in self._trainable():
                    p.copy_(best_state[n])
        return checks

    def _lower_states(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Each query's hidden states below the top `train_layers` layers (unpadded)."""
        n_lower = len(getattr(*layer_list(self.net.encoder))) - self.top
        out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
        self.net.eval()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            for start in range(0, len(order), self.cfg.predict_batch):
                pos = order[start : start + self.cfg.predict_batch]
                x, mask = self._batch([ids[k] for k in pos])
                found = self.net.encoder(
                    input_ids=x, attention_mask=mask, output_hidden_states=True
                )
                hidden = found.hidden_states[n_lower].float()
                for r, k in enumerate(pos):
                    out[k] = hidden[r, : len(ids[k])].clone()
        return out

    @staticmethod
    def _heads(named) -> dict[str, torch.Tensor]:
        return {k: v for k, v in named if not k.startswith("encoder.")}

    def _trainable(self):
        return ((n, p) for n, p in self.net.named_parameters() if p.requires_grad)

    def predict(self, texts: Sequence[str], batch: int = 256) -> TaggerOutput:
        """Probabilities and spans of each text (eval mode, no grad); an empty or blank text
        gets uniform probabilities and no spans."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        n, n_int, n_sent = len(texts), len(self.intents), max(1, len(self.sentiments))
        intent = np.full((n, n_int), 1 / n_int, dtype=np.float32)
        sentiment = np.full((n, n_sent), 1 / n_sent, dtype=np.float32)
        spans: list[list[Span]] = [[] for _ in range(n)]
        live = [i for i, t in enumerate(texts) if t.strip()]
        if not live:
            return TaggerOutput(intent, sentiment, spans)
        ids, offsets = self._tokenize([texts[i] for i in live])
        order = sorted(range(len(live)), key=lambda k: len(ids[k]))  # little padding
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch):
                pos = order[start : start + batch]
                rows = [live[k] for k in pos]
                a, b, c = self.net(*self._batch([ids[k] for k in pos]), self.bf16)
                intent[rows] = torch.softmax(a, 1).numpy()
                sentiment[rows] = torch.softmax(b, 1).numpy()
                tag_ids = c.argmax(-1).numpy()
                for r, k in enumerate(pos):
                    spans[live[k]] = decode_spans(offsets[k], tag_ids[r, : len(ids[k])], self.tags)
        return TaggerOutput(intent, sentiment, spans)

    def evaluate(self, data: Annotated) -> dict:
        """`models.spans.understanding_scores` of the predictions (the selection `score`
        among them)."""
        out = self.predict(data.texts, batch=self.cfg.predict_batch)
        return understanding_scores(
            (data.intent, out.intent_probs.argmax(1)),
            (data.sentiment, out.sentiment_probs.argmax(1)),
            (data.spans, out.spans), self.intents, self.sentiments, self.types,
        )  # fmt: skip

    def save(self, directory: Path) -> None:
        """The encoder and tokenizer as a normal HF directory (safetensors), the heads as
        `heads.safetensors` and the labels and settings as `tagger.json`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.net.encoder.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        heads = self._heads(self.net.state_dict().items())
        save_file(
            {k: v.detach().contiguous() for k, v in heads.items()}, str(directory / HEADS_FILE)
        )
        meta = {
            "intents": list(self.intents), "sentiments": list(self.sentiments),
            "tags": list(self.tags), "max_length": self.cfg.max_length,
            "hidden_size": self.hidden, "pooling": "mean",
        }  # fmt: skip
        (directory / TAGGER_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, bf16: bool = False) -> QueryTagger:
        """A saved tagger, for prediction."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / TAGGER_FILE).read_text(encoding="utf-8"))
        types = tuple(t[2:] for t in meta["tags"][1::2])
        if bio_tags(types) != tuple(meta["tags"]):
            raise ValueError(f"{directory / TAGGER_FILE}: tags are not a BIO set: {meta['tags']}")
        cfg = UnderstandConfig(max_length=int(meta["max_length"]))
        tagger = cls(cfg, directory, meta["intents"], meta["sentiments"], 0, bf16, types)
        if tagger.hidden != meta["hidden_size"]:
            raise ValueError(f"{directory}: hidden size {tagger.hidden} != {meta['hidden_size']}")
        missing, unexpected = tagger.net.load_state_dict(
            load_file(str(directory / HEADS_FILE)), strict=False
        )
        if unexpected or any(not k.startswith("encoder.") for k in missing):
            raise ValueError(
                f"{directory / HEADS_FILE}: heads do not match: {missing + unexpected}"
            )
        tagger.net.eval()
        return tagger


def _stack(cache: list[torch.Tensor], rows: list[int]) -> torch.Tensor:
    """The cached states of `rows`, zero-padded to the longest (the mask covers the rest)."""
    width = max(len(cache[r]) for r in rows)
    out = torch.zeros(len(rows), width, cache[rows[0]].shape[1])
    for i, r in enumerate(rows):
        out[i, : len(cache[r])] = cache[r]
    return out
