"""Settings of the query-understanding tagger (`[understand]`), apart from the model so that
reading an experiment config does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class UnderstandConfig:
    """Fine-tuning of a local Hugging Face encoder with three heads on labelled search queries
    (`models.query_tagger.QueryTagger`): intent and sentiment (sequence classification on the
    mean-pooled last hidden state) and BIO entity tags per token (BRAND / PRODUCT / PRICE).

    Loss = CE(intent) + `sentiment_weight` · CE(sentiment) + `entity_weight` · CE(tags).
    Early stopping reads the mean of valid intent macro-F1, sentiment accuracy and entity
    micro-F1 every `eval_every` steps.
    """

    # the user's annotations (a path, the stage reads it); "": the dataset's own, when it has any
    annotations: str = ""
    # the encoder fine-tuned: None for the packaged default encoder (embed's), or a model dir
    base: str | None = None
    holdout: float = 0.2  # share of the annotated queries held out for selection and report
    max_length: int = 32  # tokens per query (special tokens included); longer ones are cut
    batch_size: int = 32
    # the encoder's (3e-4 suits the default top-4-layer tuning; full tuning wants ~5e-5)
    learning_rate: float = 3e-4
    head_learning_rate: float = 3e-3  # the three heads'
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of max_steps of linear warmup, then linear decay to 0
    max_grad_norm: float = 1.0  # gradient clipping (global norm); 0 = none
    dropout: float = 0.1  # on the pooled and the token states, before the heads
    label_smoothing: float = 0.1  # of the intent loss (annotations carry label noise)
    max_steps: int = 600
    eval_every: int = 50  # steps between valid checks (early stopping)
    patience: int = 3  # checks without a better valid score before stopping
    # 0 (or k >= the model's layers): every layer trains; k: only the top k layers and the
    # heads, on the lower layers' states computed once per query (MiniLM, 2 cores, batch
    # 32: ~0.14 s a step for k = 3 under bf16 against ~0.75 s for full tuning)
    train_layers: int = 4
    # variants of each train query with a BRAND / PRODUCT span, the names replaced by the
    # catalog's (the ads' brands and keywords; `models.mentions`); 0 = the annotations only
    mention_copies: int = 2
    # float32 | bfloat16 | auto (= bfloat16 autocast where the CPU has native bf16 matmuls;
    # the weights and the optimiser stay float32)
    dtype: str = "auto"
    entity_weight: float = 2.0  # loss weights; the intent loss weighs 1
    sentiment_weight: float = 0.5
    predict_batch: int = 256  # queries per forward pass when labelling the log
    seed: int | None = None  # None: data.seed

    def __post_init__(self) -> None:
        if not isinstance(self.annotations, str):
            raise ValueError(f"annotations must be a path or '', got {self.annotations!r}")
        if self.base == "":
            raise ValueError("base must be a model directory, or unset for the default encoder")
        if not 0 < self.holdout <= 0.5:
            raise ValueError(f"holdout must be in (0, 0.5], got {self.holdout}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")
        for name in ("batch_size", "max_steps", "eval_every", "patience", "predict_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "weight_decay", "max_grad_norm", "train_layers", "mention_copies", "entity_weight",
            "sentiment_weight",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
