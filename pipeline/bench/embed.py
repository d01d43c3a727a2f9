"""Bench: the embed stage against `sentence_transformers`, same texts, same threads, one run.

Texts: 20,000 distinct ad texts of the simulated marketplace
(`pipeline.sources.simulated.marketplace.make_ads`, written from its `vocabulary`): the title,
description, keywords and fused text of 5,000 ads whose four texts are all distinct. Measured
side by side with 2 threads:
- the embed stage (`pipeline.embed.run`) on a cold cache: texts/s with everything included
  (encoder load and hashing, tokenisation, encoding, cache and output writes);
- `SentenceTransformer(<same model dir>).encode(texts, batch_size=64)`: texts/s, encode only;
- the cosine similarity of the stage's vectors to those reference (fp32) vectors;
- a warm rerun of the stage with unchanged ads, as % of the cold run;
- the precision variants (fp32, bf16, int8) of the encoder alone on 2,000 of the texts.
CPU seconds (this process) are printed beside wall seconds: on a shared machine the wall-clock
ratio moves with other people's load, the CPU-time ratio much less.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from features.schema import BEHAVIOUR, IMPRESSIONS
from features.text import EmbedConfig, TextEncoder, ad_texts, precision, resolve_model_dir
from pipeline.config import DataConfig, EngineConfig, Experiment
from pipeline.io import read_table, write_tables
from pipeline.sources.simulated.marketplace import MarketConfig, make_ads
from pipeline.stage import Layout

log = logging.getLogger(__name__)

N_ADS = 5_000  # x 4 fields = 20,000 texts
N_VARIANT_TEXTS = 2_000
THREADS = 2
SEED = 11
FIELDS = ("title", "description", "keywords", "fused")


def bench_ads(n: int = N_ADS, seed: int = SEED) -> pl.DataFrame:
    """`n` simulated ads whose 4 n texts are all distinct (raw ADS schema)."""
    ads, _ = make_ads(MarketConfig(n_ads=2 * n), np.random.default_rng(seed))
    texts = ad_texts(ads)
    seen: set[str] = set()
    keep = []
    for i, row in enumerate(texts.select(FIELDS).iter_rows()):
        if None not in row and len(set(row)) == 4 and seen.isdisjoint(row):
            seen.update(row)
            keep.append(i)
            if len(keep) == n:
                break
    if len(keep) < n:
        raise RuntimeError(f"only {len(keep)} ads with 4 distinct texts, need {n}")
    return ads[keep]


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _write_raw(root: Path, ads: pl.DataFrame, cfg: EmbedConfig) -> Experiment:
    exp = Experiment(
        name="bench",
        data=DataConfig(root=str(root)),
        engine=EngineConfig(num_threads=THREADS),
        embed=cfg,
    )
    tables = {
        "ads": ads,
        "behaviour": pl.DataFrame(schema=BEHAVIOUR),
        "impressions": pl.DataFrame(schema=IMPRESSIONS),
    }
    write_tables(Layout.of(exp).raw, tables, config_digest="bench")
    return exp


def _variants(texts: list[str], ref: np.ndarray, cfg: EmbedConfig) -> list[str]:
    lines = [f"{'precision':10}{'texts/s':>9}{'cpu s':>8}{'cos mean':>10}{'cos min':>9}"]
    for variant in (
        replace(cfg, quantize=False, dtype="float32"),
        replace(cfg, quantize=False, dtype="bfloat16"),
        replace(cfg, quantize=True),
    ):
        enc = TextEncoder(variant, num_threads=THREADS)
        out, wall, cpu = _timed(enc.encode, texts, progress=False)
        cos = np.sum(out.vectors * ref, axis=1)
        lines.append(
            f"{precision(variant):10}{len(texts) / wall:9.0f}{cpu:8.1f}"
            f"{cos.mean():10.4f}{cos.min():9.4f}"
        )
    return lines


def main() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    import pipeline.embed as stage

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = replace(EmbedConfig(), fields=FIELDS)
    ads = bench_ads()
    texts = [t for f in FIELDS for t in ad_texts(ads)[f].to_list()]
    n = len(texts)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        exp = _write_raw(Path(tmp), ads, cfg)
        cold, cold_s, cold_cpu = _timed(stage.run, exp)
        emb = read_table(Layout.of(exp).embeddings, "ads").collect()
        ours = np.concatenate([emb[f"emb_{f}"].to_numpy() for f in FIELDS])
        torch.set_num_threads(THREADS)
        st = SentenceTransformer(str(resolve_model_dir(cfg.encoder)), device="cpu")
        ref, ref_s, ref_cpu = _timed(
            st.encode, texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        warm, warm_s, _ = _timed(stage.run, exp)
    step = max(n // N_VARIANT_TEXTS, 1)  # every step-th text: all four fields
    variants = _variants(texts[::step], ref[::step], cfg)
    cos = np.sum(ours * ref, axis=1)
    print(
        f"{n:,} distinct simulated ad texts (title, description, keywords, fused of "
        f"{N_ADS:,} ads); threads={THREADS}; load average at start {load:.1f}"
    )
    print(f"stage settings: {stage.variant(cfg)} batch_size={cfg.batch_size} encoder={cfg.encoder}")
    print(f"{'':36}{'wall s':>8}{'texts/s':>9}{'cpu s':>8}")
    print(f"{'embed stage, cold cache, all in':36}{cold_s:8.1f}{n / cold_s:9.0f}{cold_cpu:8.1f}")
    print(f"{'sentence-transformers .encode':36}{ref_s:8.1f}{n / ref_s:9.0f}{ref_cpu:8.1f}")
    print(
        f"speed ratio stage / sentence-transformers: wall {ref_s / cold_s:.2f}, "
        f"cpu {ref_cpu / cold_cpu:.2f}  (target >= 1.5)"
    )
    print(
        f"cosine to the fp32 reference: mean {cos.mean():.5f}, min {cos.min():.5f}"
        "  (target mean >= 0.99)"
    )
    print(
        f"warm rerun, unchanged ads: {warm_s:.2f} s = {100 * warm_s / cold_s:.1f}% of cold"
        f"  (target < 5%); embedded {warm.notes['embedded']}, "
        f"cache hits {warm.notes['cache_hits']}"
    )
    print(f"cold stage notes: {cold.notes}")
    print(f"encoder alone on every {step}th text ({len(texts[::step]):,}), per precision:")
    print("\n".join("  " + line for line in variants))
