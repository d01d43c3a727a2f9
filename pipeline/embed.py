"""Embed ad and query texts. Reads `raw/` ads (title, description, keywords) and the search
queries of `raw/` impressions and behaviour. Writes `embeddings/ads.parquet` (ad_id, one
`emb_<field>` Array(Float32, D) column per field: title, description, keywords, fused) and
`embeddings/queries.parquet` (query, emb), with a manifest naming the encoder.

A text is never embedded twice: texts are deduplicated within the run, and vectors are cached
under `<embed_cache>/<encoder id>/<pooling-length-precision>/` in Parquet shards keyed by a hash of
the text, so a rerun with unchanged ads loads the encoder not at all and a change of a few ads
embeds only their texts. Empty or missing texts get the zero vector (see `features.text`).
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.text import (
    EmbedConfig,
    TextEncoder,
    ad_texts,
    encoder_id,
    model_revision,
    precision,
    resolve_model_dir,
    text_key,
    variant,
)
from pipeline.atomic import atomic_file
from pipeline.config import EngineConfig, Experiment
from pipeline.finetune import FINETUNED, tuned_model_dir
from pipeline.io import DataError, one_line, read_table, write_tables
from pipeline.lock import file_lock
from pipeline.ray_engine import encode_on_ray
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)

MAX_SHARDS = 16  # compact the cache into one shard beyond this many
COMPACT_LOCK = ".compact.lock"  # flock: readers shared, a compaction exclusive


class EmbeddingCache:
    """Vectors of one encoder variant: Parquet shards of (key, emb, truncated).

    Each run appends one shard, written atomically under a unique name, so concurrent runs do
    not clash; duplicate keys across shards are harmless (the first is kept). A compaction holds
    a lock that readers share, so no one reads a shard while it is deleted.
    """

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = Path(directory)
        self.dim = dim

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.parquet"))

    def _scan(self, shards: list[Path]) -> pl.LazyFrame:
        schema = {"key": pl.String, "emb": pl.Array(pl.Float32, self.dim), "truncated": pl.Boolean}
        return pl.scan_parquet(shards, schema=schema)

    def get(self, keys: list[str]) -> pl.DataFrame:
        """The cached rows among `keys` (key, emb, truncated)."""
        if keys and self.directory.is_dir():
            with file_lock(self.directory / COMPACT_LOCK, shared=True):  # no compaction meanwhile
                shards = self.shards()
                if shards:
                    wanted = pl.LazyFrame({"key": keys}, schema={"key": pl.String})
                    found = self._scan(shards).join(wanted, on="key", how="semi")
                    return found.unique("key", keep="first", maintain_order=True).collect()
        return pl.DataFrame(
            schema={
                "key": pl.String,
                "emb": pl.Array(pl.Float32, self.dim),
                "truncated": pl.Boolean,
            }
        )

    def put(self, keys: list[str], vectors: np.ndarray, truncated: np.ndarray) -> None:
        if not keys:
            return
        frame = pl.DataFrame(
            {"key": keys, "emb": vectors.astype(np.float32), "truncated": truncated.astype(bool)}
        )
        self._write(frame)
        with file_lock(self.directory / COMPACT_LOCK):  # no reader or other compaction meanwhile
            shards = self.shards()
            if len(shards) > MAX_SHARDS:
                merged = self._scan(shards).unique("key", keep="first", maintain_order=True)
                merged = merged.collect()
                self._write(merged)
                for old in shards:
                    old.unlink(missing_ok=True)
                log.info(
                    "compacted %d cache shards into one (%d vectors)", len(shards), len(merged)
                )

    def _write(self, frame: pl.DataFrame) -> None:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        name = f"shard-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_file(self.directory / name, buf.getvalue())


def model_dim(model_dir: Path) -> int:
    """The encoder's output width, from its config.json (no model load)."""
    config = json.loads((model_dir / "config.json").read_text())
    if "hidden_size" in config:
        return int(config["hidden_size"])
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model_dir, local_files_only=True).hidden_size)


def read_texts(raw: Path) -> tuple[pl.DataFrame, list[str]]:
    """The ads' field texts and the distinct non-null search queries (sorted)."""
    expected = {
        "ad_id": pl.Int64,
        "title": pl.String,
        "description": pl.String,
        "keywords": pl.List(pl.String),
    }
    ads = read_table(raw, "ads", expected).select(list(expected))
    queries = [
        read_table(raw, name, {"query": pl.String}).select("query")
        for name in ("impressions", "behaviour")
    ]
    distinct = pl.concat(queries).drop_nulls().unique().sort("query").collect()
    return ad_texts(ads), distinct["query"].to_list()


def encoder_dir(exp: Experiment) -> Path:
    """The encoder `embed.encoder` names: the fine-tuned one of this experiment (`finetuned`),
    the packaged default or a local model directory; a DataError line naming the path else."""
    if exp.embed.encoder == FINETUNED:
        return tuned_model_dir(exp)
    try:
        return resolve_model_dir(exp.embed.encoder)
    except FileNotFoundError as exc:
        raise DataError(f"embed.encoder: {exc}") from None


def _encode_here(
    texts: list[str], cfg: EmbedConfig, model_dir: Path, revision: str, num_threads: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(vectors, truncated, seconds encoding) of `texts` from an encoder loaded here."""
    try:
        encoder = TextEncoder(cfg, model_dir, revision=revision, num_threads=num_threads)
        out = encoder.encode(texts)
    except (OSError, ValueError) as exc:
        raise DataError(f"encoder {model_dir}: not a usable encoder ({one_line(exc)})") from None
    return out.vectors, out.truncated, out.seconds


def embed_texts(
    texts: list[str | None],
    cfg: EmbedConfig,
    cache_root: Path,
    num_threads: int | None = None,
    model_dir: Path | None = None,
    engine: EngineConfig | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors for `texts` (zero rows for empty ones) through the cache; facts for the manifest.
    `num_threads`: torch's threads while encoding (the cached vectors do not depend on it);
    `model_dir`: the encoder's directory (default: `cfg.encoder` resolved); `engine`: with
    kind `ray`, the texts not cached are embedded by Ray actors (the same vectors)."""
    model_dir = model_dir or resolve_model_dir(cfg.encoder)
    revision = model_revision(model_dir)
    enc_id = encoder_id(cfg.encoder, revision)
    dim = model_dim(model_dir)
    cache = EmbeddingCache(cache_root / enc_id / variant(cfg), dim)

    keys = [None if t is None or not t.strip() else text_key(t) for t in texts]
    first: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k is not None and k not in first:
            first[k] = t
    hits = cache.get(list(first))
    missing = sorted(set(first) - set(hits["key"].to_list()))
    log.info("%d distinct texts: %d cached, %d to embed", len(first), hits.height, len(missing))
    new = pl.DataFrame(schema=hits.schema)
    rate = None
    if missing:
        todo = [first[k] for k in missing]
        if engine is not None and engine.kind == "ray":
            started = time.perf_counter()  # with the actors' start: Ray has no other clock
            vectors, truncated = encode_on_ray(todo, cfg, model_dir, revision, dim, engine)
            seconds = time.perf_counter() - started
        else:
            vectors, truncated, seconds = _encode_here(todo, cfg, model_dir, revision, num_threads)
        cache.put(missing, vectors, truncated)
        new = pl.DataFrame({"key": missing, "emb": vectors, "truncated": truncated})
        rate = round(len(missing) / max(seconds, 1e-9), 1)
    table = pl.concat([hits, new])
    row = {k: i for i, k in enumerate(table["key"].to_list())}
    vecs = np.vstack([table["emb"].to_numpy().reshape(-1, dim), np.zeros((1, dim), np.float32)])
    index = np.array([len(row) if k is None else row[k] for k in keys], dtype=np.int64)
    n_empty = sum(k is None for k in keys)
    n_trunc = int(table["truncated"].sum())
    facts = {
        "encoder": str(model_dir),
        "encoder_id": enc_id,
        "revision": revision,
        "variant": variant(cfg),
        "pooling": cfg.pooling,
        "dim": dim,
        "max_length": cfg.max_length,
        "quantize": cfg.quantize,
        "precision": precision(cfg),
        "empty_text_vector": "zeros",
        "counts": {
            "texts": len(texts),
            "distinct": len(first),
            "cache_hits": hits.height,
            "embedded": len(missing),
            "empty": n_empty,
            "truncated": n_trunc,
        },
        "texts_per_s": rate,
    }
    return vecs[index], facts


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("embed", output=str(layout.embeddings))
    ads, queries = read_texts(layout.raw)
    fields = list(exp.embed.fields)
    texts: list[str | None] = [t for f in fields for t in ads[f].to_list()] + queries
    model_dir = encoder_dir(exp)
    vectors, facts = embed_texts(
        texts, exp.embed, layout.embed_cache, exp.engine.num_threads, model_dir, exp.engine
    )
    n = ads.height
    ad_table = pl.DataFrame(
        {"ad_id": ads["ad_id"]}
        | {f"emb_{f}": vectors[i * n : (i + 1) * n] for i, f in enumerate(fields)}
    )
    query_table = pl.DataFrame(
        {"query": pl.Series(queries, dtype=pl.String), "emb": vectors[len(fields) * n :]}
    )
    write_tables(
        layout.embeddings,
        {"ads": ad_table, "queries": query_table},
        config_digest=exp.digest(),
        inputs={"raw": layout.raw}
        | ({"encoder": layout.encoder} if exp.embed.encoder == FINETUNED else {}),
        extra={**facts, "fields": fields},
    )
    summary.rows_in = n + len(queries)
    summary.rows_out = ad_table.height + query_table.height
    counts = facts["counts"]
    summary.notes = {
        "encoder_id": facts["encoder_id"],
        "precision": facts["precision"],
        "dim": facts["dim"],
        "texts": counts["texts"],
        "distinct": counts["distinct"],
        "cache_hits": counts["cache_hits"],
        "embedded": counts["embedded"],
        "texts_per_s": facts["texts_per_s"] or "-",
        "empty_texts": counts["empty"],
        "truncated": counts["truncated"],
    }
    return summary
