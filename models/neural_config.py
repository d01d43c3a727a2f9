"""Settings of the neural CTR/CVR model, apart from the model so that reading an experiment
config does not import torch (the command line starts in a fraction of the time). Settings left
None are derived from the training data's size when the model is fitted (`models.sizing`)."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class NeuralConfig:
    """Hyperparameters of the DCN-v2 x ESMM model and its training loop."""

    # None: derived from the train rows / positives at fit time (models.sizing.neural_defaults)
    embedding_dim: int | None = None  # widest id embedding; small vocabularies: 6 * card ** .25
    text_tower: tuple[int, ...] = (128, 32)  # MLP over the concatenated dense vectors
    cross_layers: int = 3
    cross_rank: int = 64  # > 0: low-rank W = U V^T (3x cheaper at x0 ~ 340); 0: full rank
    mlp_sizes: tuple[int, ...] = (256, 128)
    head_sizes: tuple[int, ...] = (64,)
    dropout: float | None = None
    log_numeric: bool = True  # sign(x) * log1p(|x|) before standardising (counts are skewed)
    numeric_clip: float = 8.0  # clip standardised numerics to +-this
    lr: float | None = None
    weight_decay: float | None = None  # AdamW decay of the dense weights (not the id tables)
    embedding_l2: float = 0.0  # L2 on the id embeddings looked up in each batch
    ctcvr_weight: float = 1.0
    batch_size: int | None = None
    epochs: int | None = None  # at most; early stopping on the valid loss decides
    patience: int = 1  # stop after this many epochs without a lower valid loss
    # id tables with >= this many rows get sparse gradients + SparseAdam (0 = all, a huge
    # number = none); smaller tables update faster with dense Adam (measured in `make bench`)
    sparse_min_rows: int = 50_000
    predict_batch_size: int = 4096
    # a train split streamed in slabs (time-ordered rows): each step's rows are shuffled over
    # this many slabs drawn at random, so no batch comes from one stretch of time only
    shuffle_slabs: int = 4
    # DIN target attention over the user's recent items (where the features have them)
    attention: bool = True
    attention_dim: int = 16  # the item vectors' projected width
    attention_hidden: tuple[int, ...] = (32,)  # DIN's activation unit
    # the training step's arithmetic: "fp32", or "bf16" (the forward and backward under bf16
    # autocast: matmuls in bfloat16 with float32 accumulation; weights, optimiser state,
    # validation and scoring stay float32). None: "bf16" on CPUs with native bf16 (AVX512-BF16,
    # AMX), where it is faster, else "fp32" (`models.cpu.native_precision`, at fit)
    precision: str | None = None

    def __post_init__(self) -> None:
        positive = ("embedding_dim", "batch_size", "epochs", "patience", "predict_batch_size")
        positive += ("attention_dim", "shuffle_slabs")
        for name in positive:
            if _set(self, name) and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if _set(self, "precision") and self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if _set(self, "dropout") and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("lr", "numeric_clip"):
            if _set(self, name) and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        counts = ("cross_layers", "cross_rank", "sparse_min_rows")
        for name in (*counts, "weight_decay", "embedding_l2", "ctcvr_weight"):
            if _set(self, name) and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("text_tower", "mlp_sizes", "head_sizes", "attention_hidden"):
            if any(size < 1 for size in getattr(self, name)):
                raise ValueError(f"{name} must hold layer sizes >= 1, got {getattr(self, name)}")


def _set(config: NeuralConfig, name: str) -> bool:
    return getattr(config, name) is not None
