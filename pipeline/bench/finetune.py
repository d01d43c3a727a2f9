"""Bench: the finetune stage on `default`, and one training step of each way to tune.

1. `python -m pipeline finetune --experiment default` in a child process on a fresh copy of
   the simulated marketplace (2 threads, the shipped settings, a scratch MLflow store): wall
   seconds and the child's peak RSS, against the target of 3 minutes; the retrieval figures
   it logged (valid and test, base and tuned).
2. One optimiser step on the same 64 query pairs of `default` (the median of 5, after a warm-up
   step) for: the top layer on cached lower-layer states (`method = "top"`, the default), LoRA
   rank 8 on every linear layer (`method = "lora"`), and full fine-tuning (every transformer
   layer trained); each in float32 and, where the CPU has native bf16, under bf16 autocast.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from features.text import bf16_native
from pipeline.bench import measured
from pipeline.config import load_experiment

THREADS = 2
TARGET_S = 180.0
STEPS = 5


def _stage(root: Path) -> tuple[float, float, dict]:
    """The finetune stage in its own measured process: wall seconds, peak RSS in MB, manifest."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    sets = ["--set", f"data.root={root}", "--set", f"engine.num_threads={THREADS}"]
    base = [sys.executable, "-m", "pipeline"]
    measured([*base, "raw", "-e", "default", *sets], env)
    run = measured([*base, "finetune", "-e", "default", *sets], env)
    manifest = json.loads((root / "default" / "encoder" / "_manifest.json").read_text())
    return run["wall"], run["rss"] / 2**20, manifest


def _step_times(root: Path) -> list[tuple[str, str, float, int]]:
    import torch

    from models.neural_loop import torch_settings
    from models.text_tuner import EncoderTuner, PairSet
    from pipeline.finetune import base_dir
    from pipeline.finetune_data import build_tasks, read_inputs

    exp = load_experiment("default", [f"data.root={root}"])
    texts, sets, _, _ = build_tasks(read_inputs(exp), exp.finetune, 7)
    query = next(s for s in sets if s.kind == "query")
    rows = np.arange(exp.finetune.batch_size)
    used = sorted({i for r in rows for i in query.anchors[r]} | set(query.positives[rows]))
    at = {t: k for k, t in enumerate(used)}
    batch = PairSet(
        "query",
        [tuple(at[i] for i in query.anchors[r]) for r in rows],
        np.array([at[int(p)] for p in query.positives[rows]]),
        query.anchor_key[rows],
        query.positive_key[rows],
    )
    texts = [texts[i] for i in used]
    n_layers = 6
    ways = {
        "top (1 layer, cached lower states)": replace(exp.finetune, method="top", top_layers=1),
        "lora (rank 8, all linear layers)": replace(exp.finetune, method="lora"),
        "full (all 6 layers)": replace(exp.finetune, method="top", top_layers=n_layers),
    }
    out = []
    precisions = [False, True] if bf16_native() else [False]
    with torch_settings(THREADS):
        for name, cfg in ways.items():
            for bf16 in precisions:
                tuner = EncoderTuner(cfg, base_dir(cfg), texts, seed=7, bf16=bf16)
                tuner.train_step(batch, np.arange(len(batch)))
                times = []
                for _ in range(STEPS):
                    t0 = time.perf_counter()
                    tuner.train_step(batch, np.arange(len(batch)))
                    times.append(time.perf_counter() - t0)
                label = "bf16" if bf16 else "fp32"
                out.append((name, label, statistics.median(times), tuner.trainable))
                del tuner
                torch.set_num_threads(THREADS)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="adctr-bench-finetune-") as tmp:
        root = Path(tmp)
        seconds, rss_mb, man = _stage(root)
        m = man["metrics"]
        print(f"finetune stage on default, {THREADS} threads: {seconds:.0f} s wall "
              f"(target {TARGET_S:.0f} s: {'met' if seconds <= TARGET_S else 'missed'}), "
              f"peak RSS {rss_mb:,.0f} MB, {man['steps']} steps, kept step {man['best_step']}, "
              f"bf16 {man['bf16']}")  # fmt: skip
        print("| retrieval | base | tuned | change |\n|---|---|---|---|")
        for key in (
            "valid_query_mrr",
            "valid_query_recall_at_10",
            "test_query_mrr",
            "test_query_recall_at_10",
            "test_history_mrr",
            "test_history_recall_at_10",
        ):
            a, b = m.get(f"frozen_{key}"), m.get(f"tuned_{key}")
            if a is not None and b is not None:
                print(f"| {key} | {a:.4f} | {b:.4f} | {100 * (b / a - 1):+.1f}% |")
        print(f"\none step on 64 query pairs of default (median of {STEPS}, {THREADS} threads)")
        print("| way | precision | s / step | trainable params |\n|---|---|---|---|")
        rows = _step_times(root)
        top = {p: s for n, p, s, _ in rows if n.startswith("top")}
        for name, label, sec, n in rows:
            ratio = f" ({sec / top[label]:.1f}x top)" if not name.startswith("top") else ""
            print(f"| {name} | {label} | {sec:.3f}{ratio} | {n:,} |")
