"""Contrastive fine-tuning of a local Hugging Face text encoder (pure: texts and pairs in, a
tuned model out; no file I/O besides loading the base and `save`).

Every text is a row of one table (`texts`); a pair set holds, per pair, the text ids averaged
into the anchor (one for a query or a title, a user's recent ads for a history) and the text id
of the positive. A step draws one batch of one kind, encodes its distinct texts (mean pooling,
L2 norm, as `features.text.TextEncoder`), and minimises the symmetric InfoNCE loss of anchors
against positives at `temperature`, the batch's other positives being the negatives (a pair
sharing the anchor or the positive ad is masked out, not a negative). Early stopping keeps the
weights of the best valid MRR (`models.retrieval`); check 0 is the base model, so a tuning that
never helps returns the base.

`method = "top"`: the lower layers are run once per text, under no_grad, and their outputs
kept; each step runs only the top `top_layers` (the model's own forward, with its embedding
module replaced by a pass-through and its layer list cut to the top: any BERT-family layout).
`method = "lora"`: peft LoRA adapters on every linear layer; each step runs the whole model.
Deterministic for a seed and a thread count.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.finetune_config import FinetuneConfig
from models.retrieval import retrieval_metrics, retrieval_ranks

log = logging.getLogger(__name__)

LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
ENCODE_BATCH = 128
CACHE_DTYPE = torch.float16  # the cached lower-layer outputs (half the memory of float32)


@dataclass(frozen=True)
class PairSet:
    """One kind of pairs: per pair the anchor's text ids (averaged) and the positive's text id;
    `anchor_key` / `positive_key` say which pairs share an anchor or a positive ad (masked).
    `negatives` (optional): per pair the text id of a hard negative (an ad shown for the same
    query and never clicked from it), -1 for none, scored against the positive pairwise."""

    kind: str
    anchors: list[tuple[int, ...]]
    positives: np.ndarray
    anchor_key: np.ndarray
    positive_key: np.ndarray
    negatives: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positives)


@dataclass(frozen=True)
class RetrievalTask:
    """Rank `candidates` (text ids) for each instance: `query_of[i]` indexes `anchors` (the
    text ids averaged into a query: one search query, or a user's recent ads) and
    `target_of[i]` indexes `candidates`."""

    anchors: list[tuple[int, ...]]
    candidates: np.ndarray
    query_of: np.ndarray
    target_of: np.ndarray

    def __len__(self) -> int:
        return len(self.query_of)


class _PassThrough(nn.Module):
    """Stands in for the embedding module: the cached lower-layer states come in as
    `inputs_embeds` and go on unchanged."""

    def forward(self, *args, inputs_embeds=None, **kwargs):
        return inputs_embeds


def layer_list(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the transformer layers and its attribute name (`encoder`, `layer`)."""
    for path in LAYER_PATHS:
        parent: nn.Module | None = model
        *head, name = path.split(".")
        for part in head:
            parent = getattr(parent, part, None)
        if isinstance(getattr(parent, name, None), nn.ModuleList):
            return parent, name
    raise ValueError(
        f"{type(model).__name__}: no transformer layer list at {', '.join(LAYER_PATHS)}; "
        "use finetune.method = 'lora'"
    )


@contextlib.contextmanager
def top_layers_only(model: nn.Module, top: int) -> Iterator[None]:
    """Within the block, `model` runs only its top `top` layers on the states that come in as
    `inputs_embeds` (its embedding module a pass-through, its layer list cut); restored after."""
    parent, name = layer_list(model)
    layers, embeddings = getattr(parent, name), model.embeddings
    setattr(parent, name, nn.ModuleList(list(layers)[-top:]))
    model.embeddings = _PassThrough()
    try:
        yield
    finally:
        setattr(parent, name, layers)
        model.embeddings = embeddings


class EncoderTuner:
    """Holds the model being tuned, the tokenised texts and (method `top`) the lower-layer
    cache. `fit` runs the loop; `save` writes a normal local HF directory."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        model_dir: Path,
        texts: list[str],
        seed: int,
        bf16: bool = False,
    ) -> None:
        """`bf16`: run the forward passes under bfloat16 autocast (about twice as fast where the
        CPU has native bf16 matmuls; the weights and the optimiser stay float32)."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weights-loading bar per load is noise in a log
        self.cfg = cfg
        self.seed = seed
        self.bf16 = bf16
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
        tokens = self.tokenizer(texts, truncation=True, max_length=cfg.max_length, verbose=False)[
            "input_ids"
        ]
        self.tokens = [torch.tensor(t, dtype=torch.int64) for t in tokens]
        vocab = int(model.config.vocab_size)
        top = max((int(t.max()) for t in self.tokens if len(t)), default=0)
        if top >= vocab:
            raise ValueError(
                f"{model_dir}: the tokenizer yields token id {top} but the model has {vocab} "
                "embeddings (tokenizer and weights do not belong together)"
            )
        self.pad_id = self.tokenizer.pad_token_id or 0
        for p in model.parameters():
            p.requires_grad_(False)
        if cfg.method == "top":
            self.model = model
            parent, name = layer_list(model)
            layers = getattr(parent, name)
            if cfg.top_layers > len(layers):
                raise ValueError(
                    f"finetune.top_layers = {cfg.top_layers} but {model_dir} has {len(layers)}"
                )
            if not isinstance(getattr(model, "embeddings", None), nn.Module):
                raise ValueError(
                    f"{type(model).__name__} has no `embeddings` module to cut the cached "
                    "layers at; use finetune.method = 'lora'"
                )
            self._full = (parent, name, layers, model.embeddings)
            for layer in layers[-cfg.top_layers :]:
                for p in layer.parameters():
                    p.requires_grad_(True)
            self.cache = self._lower_outputs(len(layers) - cfg.top_layers)
            setattr(parent, name, nn.ModuleList(list(layers)[-cfg.top_layers :]))
            model.embeddings = _PassThrough()
        else:
            from peft import LoraConfig, get_peft_model

            spec = LoraConfig(
                r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                target_modules="all-linear", bias="none",
            )  # fmt: skip
            with warnings.catch_warnings():  # transformers' deprecation notice, via peft
                warnings.simplefilter("ignore", FutureWarning)
                self.model = get_peft_model(model, spec)
            self.cache = None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def _lower_outputs(self, n_lower: int) -> list[torch.Tensor]:
        """Every text's hidden states after the lower `n_lower` layers (unpadded, float16):
        views into one buffer, so the cache costs its size and no allocator fragments."""
        self.model.eval()
        lengths = [len(t) for t in self.tokens]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        buffer = torch.empty(int(starts[-1]), self.dim, dtype=CACHE_DTYPE)
        with torch.no_grad(), self._autocast():
            for pos, ids, mask in self._padded(range(len(self.tokens)), self.tokens):
                states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                hidden = states.hidden_states[n_lower]
                for row, i in enumerate(pos):
                    buffer[starts[i] : starts[i + 1]] = hidden[row, : lengths[i]]
                del states, hidden
        return [buffer[starts[i] : starts[i + 1]] for i in range(len(self.tokens))]

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def _padded(self, ids, rows) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Batches of `rows[i]` for `ids`, shortest first, padded to each batch's width."""
        order = sorted(ids, key=lambda i: len(rows[i]))
        for start in range(0, len(order), ENCODE_BATCH):
            pos = order[start : start + ENCODE_BATCH]
            yield pos, *self._stack([rows[i] for i in pos])

    def _stack(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        mask = torch.zeros(len(rows), width, dtype=torch.int64)
        if rows[0].dim() == 1:
            batch = torch.full((len(rows), width), self.pad_id, dtype=torch.int64)
        else:
            batch = torch.zeros(len(rows), width, rows[0].shape[1], dtype=torch.float32)
        for r, row in enumerate(rows):
            batch[r, : len(row)] = row
            mask[r, : len(row)] = 1
        return batch, mask

    def _encode(self, ids: list[int]) -> torch.Tensor:
        """Unit vectors of the texts `ids` (one padded batch), with gradients if enabled."""
        with self._autocast():
            if self.cache is not None:
                states, mask = self._stack([self.cache[i] for i in ids])
                hidden = self.model(inputs_embeds=states, attention_mask=mask)[0]
            else:
                input_ids, mask = self._stack([self.tokens[i] for i in ids])
                hidden = self.model(input_ids=input_ids, attention_mask=mask)[0]
        hidden = hidden.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Unit vectors of the texts `ids` with the current weights (eval mode, no grad)."""
        self.model.eval()
        ids = [int(i) for i in ids]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        rows = self.cache if self.cache is not None else self.tokens
        with torch.inference_mode():
            for pos, _, _ in self._padded(range(len(ids)), [rows[i] for i in ids]):
                out[pos] = self._encode([ids[p] for p in pos]).numpy()
        return out

    def evaluate(self, task: RetrievalTask) -> dict[str, float]:
        """recall@10 and MRR of the task with the current weights."""
        ids = sorted({i for a in task.anchors for i in a} | set(task.candidates.tolist()))
        vecs = self.vectors(np.array(ids, dtype=np.int64))
        at = {t: k for k, t in enumerate(ids)}
        q = _mean_unit([vecs[[at[i] for i in a]] for a in task.anchors], self.dim)
        c = vecs[[at[int(i)] for i in task.candidates]]
        return retrieval_metrics(retrieval_ranks(q, c, task.query_of, task.target_of))

    def train_step(self, pairs: PairSet, rows: np.ndarray) -> float:
        """One optimiser step on the pairs `rows` of `pairs`; the loss."""
        self.model.train()
        anchors = [pairs.anchors[r] for r in rows]
        positives = pairs.positives[rows]
        negatives = pairs.negatives[rows] if pairs.negatives is not None else np.zeros(0, int)
        negatives = negatives[negatives >= 0]
        ids = {i for a in anchors for i in a} | set(positives.tolist()) | set(negatives.tolist())
        distinct = sorted(ids)
        at = {t: k for k, t in enumerate(distinct)}
        vecs = self._encode(distinct)
        a = torch.stack([vecs[[at[i] for i in anc]].mean(0) for anc in anchors])
        a = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
        p = vecs[[at[int(i)] for i in positives]]
        loss = info_nce(
            a, p, pairs.anchor_key[rows], pairs.positive_key[rows], self.cfg.temperature
        )
        if pairs.negatives is not None:
            loss = loss + self._hard_negative_loss(a, p, vecs, at, pairs.negatives[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _hard_negative_loss(self, a, p, vecs, at: dict[int, int], negatives: np.ndarray):
        """Cross-entropy of each anchor's positive against its own hard negative (rows with
        one): the ads shown and not clicked are what the clicked one must beat."""
        has = np.flatnonzero(negatives >= 0)
        if not has.size:
            return torch.zeros(())
        n = vecs[[at[int(negatives[r])] for r in has]]
        own = (a[has] * p[has]).sum(1, keepdim=True)
        other = (a[has] * n).sum(1, keepdim=True)
        logits = torch.cat([own, other], dim=1) / self.cfg.temperature
        return nn.functional.cross_entropy(logits, torch.zeros(len(has), dtype=torch.int64))

    def _state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                if n in state:
                    p.copy_(state[n])

    def fit(
        self,
        pair_sets: list[PairSet],
        valid: Mapping[str, RetrievalTask],
        select_on: str,
        on_check: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Train until `max_steps` or `patience` checks without a better `select_on` metric
        (`valid_<task>_mrr`); with `select = "best"` keep the best check's weights (check 0
        being the base model), with `"last"` the last step's. Returns the checks (step, mean
        loss since the previous check, every valid task's metrics, seconds)."""
        cfg = self.cfg
        usable = {s.kind: s for s in pair_sets if len(s) >= 2}
        schedule = [k for k in cfg.schedule() if k in usable]
        if not schedule:
            raise ValueError("no pair kind has 2 pairs or more: nothing to fine-tune on")
        rng = np.random.default_rng(self.seed)
        draws = {k: _Cycle(len(s), cfg.batch_size, rng) for k, s in usable.items()}
        t0 = time.perf_counter()
        checks = [self._check(0, float("nan"), valid, t0)]
        best, best_state, waited, losses = checks[0][select_on], self._state(), 0, []
        if on_check:
            on_check(checks[0])
        for step in range(1, cfg.max_steps + 1):
            kind = schedule[(step - 1) % len(schedule)]
            losses.append(self.train_step(usable[kind], draws[kind].next()))
            if step % cfg.eval_every and step != cfg.max_steps:
                continue
            check = self._check(step, float(np.mean(losses)), valid, t0)
            losses = []
            checks.append(check)
            if on_check:
                on_check(check)
            if check[select_on] > best:
                best, best_state, waited = check[select_on], self._state(), 0
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if cfg.select == "best":
            self._load(best_state)
        return checks

    def _check(self, step: int, loss: float, valid: Mapping[str, RetrievalTask], t0: float) -> dict:
        check = {"step": step, "loss": loss}
        for name, task in valid.items():
            found = self.evaluate(task)
            check |= {f"valid_{name}_{k}": v for k, v in found.items() if k != "n"}
        return check | {"seconds": round(time.perf_counter() - t0, 2)}

    def save(self, directory: Path) -> None:
        """The tuned encoder as a normal HF directory (weights merged, safetensors, tokenizer)."""
        if self.cache is not None:  # the full model back for saving, then the top view again
            parent, name, layers, embeddings = self._full
            top, passthrough = getattr(parent, name), self.model.embeddings
            setattr(parent, name, layers)
            self.model.embeddings = embeddings
            try:
                self.model.save_pretrained(directory, safe_serialization=True)
            finally:
                setattr(parent, name, top)
                self.model.embeddings = passthrough
        else:
            merged = copy.deepcopy(self.model).merge_and_unload()
            merged.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)


def info_nce(
    a: torch.Tensor, p: torch.Tensor, anchor_key, positive_key, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE of anchors `a` against positives `p` (rows pair up); off-diagonal
    entries sharing an anchor or a positive key are masked out rather than negatives."""
    logits = a @ p.T / temperature
    ak, pk = torch.as_tensor(anchor_key), torch.as_tensor(positive_key)
    same = (ak[:, None] == ak[None, :]) | (pk[:, None] == pk[None, :])
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(a))
    loss = nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(
        logits.T, labels
    )
    return loss / 2


def _mean_unit(groups: list[np.ndarray], dim: int) -> np.ndarray:
    """The unit-norm mean of each group of vectors (rows)."""
    if not groups:
        return np.zeros((0, dim), dtype=np.float32)
    out = np.stack([g.mean(axis=0) for g in groups])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class _Cycle:
    """Batches of row indices: seeded permutations, epoch after epoch."""

    def __init__(self, n: int, size: int, rng: np.random.Generator) -> None:
        self.n, self.size, self.rng = n, min(size, n), rng
        self.order, self.at = rng.permutation(n), 0

    def next(self) -> np.ndarray:
        if self.at + self.size > self.n:
            self.order, self.at = self.rng.permutation(self.n), 0
        rows = self.order[self.at : self.at + self.size]
        self.at += self.size
        return rows
