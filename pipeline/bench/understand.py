"""Bench: the understand stage on `default`, and the whole main job beside it.

1. `python -m pipeline understand --experiment default` on a fresh copy of the simulated
   marketplace (2 threads, the shipped settings, a scratch MLflow store), in its own process:
   wall and CPU seconds and its peak RSS; then the held-out test figures it logged for the
   tagger and its two baselines (TF-IDF + logistic regression, the gazetteer).
2. `make features train evaluate` on `default`, stage by stage as the Makefile runs it, each
   stage in its own process on a fresh data root (cold embedding cache, nothing reused):
   seconds and peak RSS per stage, and the total against the 6-minute target.

`python -m pipeline.bench understand`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from pipeline.bench import MAIN_JOB, measured

THREADS = 2
TARGET_S = 360.0
ROWS = (
    ("intent macro-F1", "intent_macro_f1", "tfidf"),
    ("intent accuracy", "intent_accuracy", "tfidf"),
    ("sentiment accuracy", "sentiment_accuracy", "tfidf"),
    ("entity micro-F1", "entity_micro_f1", "gazetteer"),
    ("BRAND span F1", "entity_BRAND_f1", "gazetteer"),
    ("PRODUCT span F1", "entity_PRODUCT_f1", "gazetteer"),
    ("PRICE span F1", "entity_PRICE_f1", "gazetteer"),
)


def _stage(root: Path, stage: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", "default", *extra]
    cmd += ["--set", f"data.root={root}", "--set", f"engine.num_threads={THREADS}"]
    return measured(cmd, {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})


def _line(name: str, run: dict) -> str:
    return (f"| {name} | {run['wall']:.1f} | {run['cpu']:.1f} | "
            f"{run['rss'] / 2**20:,.0f} |")  # fmt: skip


def main() -> None:
    head = "| stage | wall s | CPU s | peak RSS MB |\n|---|---|---|---|"
    with tempfile.TemporaryDirectory(prefix="adctr-bench-understand-") as tmp:
        root = Path(tmp) / "stage"
        _stage(root, "raw")
        run = _stage(root, "understand")
        man = json.loads((root / "default" / "queries" / "_manifest.json").read_text())
        m, counts = man["metrics"], man["counts"]
        print(f"understand stage on default, {THREADS} threads, load avg "
              f"{os.getloadavg()[0]:.1f}: {counts['train']:,} train / {counts['valid']:,} "
              f"valid / {counts['test']:,} test annotations, {counts['log_queries']:,} log "
              f"queries labelled, kept step {man['best_step']}")  # fmt: skip
        print(f"{head}\n{_line('understand', run)}")
        print(f"fit {m['fit_seconds']:.1f} s, labelling the log {m['label_seconds']:.1f} s")
        print("\n| held-out test | tagger | baseline | change |\n|---|---|---|---|")
        for name, key, baseline in ROWS:
            a, b = m.get(f"{baseline}_test_{key}"), m.get(f"test_{key}")
            if b is not None:
                base = "-" if a is None else f"{a:.4f} ({baseline})"
                change = "" if a is None else f"{b - a:+.4f}"
                print(f"| {name} | {b:.4f} | {base} | {change} |")

        root = Path(tmp) / "main"
        print(f"\nmake features train evaluate on default, stage by stage, {THREADS} threads")
        print(head)
        total = 0.0
        for stage, extra in MAIN_JOB:
            run = _stage(root, stage, *extra)
            total += run["wall"]
            print(_line(stage, run), flush=True)
        verdict = "met" if total <= TARGET_S else "missed"
        print(f"| total | {total:.1f} | | |\ntarget {TARGET_S:.0f} s: {verdict}")
