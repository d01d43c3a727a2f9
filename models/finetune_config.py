"""Settings of the text-encoder fine-tuning (`[finetune]`), apart from the trainer so that
reading an experiment config does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("top", "lora")
# the learning rate of each method when `lr` is unset (measured on `default`'s valid retrieval)
DEFAULT_LR = {"top": 2e-4, "lora": 1e-3}


@dataclass(frozen=True)
class FinetuneConfig:
    """Contrastive fine-tuning (InfoNCE, in-batch negatives) of a local Hugging Face encoder.

    `method = "top"` trains the top `top_layers` transformer layers in full and runs the lower
    ones once per text (their outputs are cached); `"lora"` trains rank-`lora_rank` adapters on
    every linear layer and runs the whole model each step (any architecture). `make bench`
    times one step of each.
    """

    # the encoder adapted: None for the packaged default encoder (embed's), or a model directory
    base: str | None = None
    method: str = "top"
    top_layers: int = 1
    lora_rank: int = 8
    lora_alpha: int = 16
    lr: float | None = None  # None: DEFAULT_LR[method]
    weight_decay: float = 0.01
    batch_size: int = 64  # pairs per step; the other pairs of the batch are the negatives
    temperature: float = 0.05
    max_steps: int = 150
    eval_every: int = 50  # steps between valid retrieval checks (early stopping)
    patience: int = 3  # checks without a better valid MRR before stopping
    # best: the weights of the check with the best valid MRR (the base model if none beats it);
    # last: the last step's (a fixed schedule; valid only reported)
    select: str = "best"
    max_length: int = 64  # tokens per text while tuning (special tokens included)
    # a query pair also scores its positive against an ad shown for the query and never
    # clicked from it (the impressions' own negatives)
    hard_negatives: bool = True
    history_length: int = 5  # a user's recent ads averaged into the `history` anchor
    max_pairs: int = 50_000  # per pair kind, a seeded sample beyond this
    # how often each pair kind is drawn: batches cycle through the kinds in these proportions
    query_weight: int = 2
    history_weight: int = 1
    self_weight: int = 1
    seed: int | None = None  # None: data.seed
    # float32 | bfloat16 | auto (= bfloat16 autocast where the CPU has native bf16 matmuls,
    # about twice as fast; the weights stay float32)
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r}")
        if self.base == "":
            raise ValueError("base must be a model directory, or unset for the default encoder")
        positive = ("top_layers", "lora_rank", "lora_alpha", "max_steps", "eval_every")
        for name in (*positive, "patience", "history_length", "max_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.temperature <= 0 or self.weight_decay < 0:
            raise ValueError("temperature must be > 0 and weight_decay >= 0")
        weights = (self.query_weight, self.history_weight, self.self_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError(f"pair weights must be >= 0 and not all 0, got {weights}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def schedule(self) -> list[str]:
        """The pair kinds in the order batches draw them (query, query, history, self, ...)."""
        weights = {"query": self.query_weight, "history": self.history_weight}
        return [k for k, w in (weights | {"self": self.self_weight}).items() for _ in range(w)]
