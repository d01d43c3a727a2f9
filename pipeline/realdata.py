"""`make realdata`: every shipped real-data experiment, several seeds, one table.

For each experiment and seed it runs `raw embed features train evaluate` as a user would
(`python -m pipeline <stage> --set data.seed=<seed>`), then reads `evaluation/metrics.json`:
test AUC, log loss and NE per model (mean +- std over the seeds), the champion `evaluate`
chose on valid, and whether the champion's test AUC reaches the reference model's
(`logreg`). A dataset with fewer than `MIN_TEST_POSITIVES` test clicks is too small to rank
models: the table says so instead of naming a winner.

    python -m pipeline.realdata [--seeds 7,8,9] [--experiments criteo_8k,avazu_9k] [--set k=v]

Writes `data/realdata/results.json` and `results.md` (the table, also printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from pipeline.config import ConfigError, load_experiment
from pipeline.datasets import load_split
from pipeline.stage import Layout

EXPERIMENTS = ("criteo_8k", "avazu_9k", "ali_ccp_sample", "mind_small")
SEEDS = (7, 8, 9)
STAGES = ("raw", "embed", "features", "train", "evaluate")
REFERENCE = "logreg"
MIN_TEST_POSITIVES = 50
HEADLINE = ("test_ctr_auc", "test_ctr_logloss", "test_ctr_ne")


def _run_seed(name: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """One experiment at one seed, every stage through the command line; what evaluate wrote."""
    sets = [a for s in [f"data.seed={seed}", *overrides] for a in ("--set", s)]
    started = time.perf_counter()
    for stage in STAGES:
        cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", name, *sets]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{name} seed {seed}: `{stage}` exited {proc.returncode}: {tail}")
    layout = Layout.of(load_experiment(name, [f"data.seed={seed}", *overrides]))
    done = json.loads(layout.evaluation_metrics.read_text())
    test = load_split(layout, "test").select("click")
    return {
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "champion": done["champion"],
        "selection": done.get("selection", {}),
        "test_rows": test.height,
        "test_positives": int(test["click"].sum()),
        "metrics": {
            kind: {k: m.get(k) for k in HEADLINE}
            for kind, m in done["metrics"].items()
            if kind != "oracle"
        },
    }


def _stat(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return "-"
    return f"{np.mean(xs):.4f} ± {np.std(xs):.4f}"


def _verdict(runs: list[dict[str, Any]]) -> str:
    """Does the valid-chosen champion reach the reference on test, with a test NE below 1?"""
    if min(r["test_positives"] for r in runs) < MIN_TEST_POSITIVES:
        least = min(r["test_positives"] for r in runs)
        return f"too small to rank models ({least} test clicks < {MIN_TEST_POSITIVES})"
    checks = []
    for r in runs:
        champ = r["champion"]
        if champ is None:
            checks.append("no champion")
            continue
        m, ref = r["metrics"][champ], r["metrics"].get(REFERENCE, {})
        ok_auc = ref.get("test_ctr_auc") is None or m["test_ctr_auc"] >= ref["test_ctr_auc"]
        ok_ne = m["test_ctr_ne"] is not None and m["test_ctr_ne"] < 1
        checks.append("ok" if ok_auc and ok_ne else ("AUC < reference" if ok_ne else "NE >= 1"))
    return ", ".join(f"seed {r['seed']}: {c}" for r, c in zip(runs, checks, strict=True))


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table of `results` (experiment -> one entry per seed)."""
    lines = [
        "| experiment | model | test AUC | test log loss | test NE | champion (chosen on valid) |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for name, runs in results.items():
        kinds = list(runs[0]["metrics"])
        for kind in kinds:
            values = {k: [r["metrics"][kind][k] for r in runs] for k in HEADLINE}
            wins = sum(r["champion"] == kind for r in runs)
            label = f"{kind} (reference)" if kind == REFERENCE else kind
            lines.append(
                f"| {name} | {label} | {_stat(values['test_ctr_auc'])} | "
                f"{_stat(values['test_ctr_logloss'])} | {_stat(values['test_ctr_ne'])} | "
                f"{wins}/{len(runs)} |"
            )
        clicks = sorted({r["test_positives"] for r in runs})
        notes.append(
            f"- {name}: {runs[0]['test_rows']:,} test rows, {clicks} test clicks; {_verdict(runs)}"
        )
    seeds = ", ".join(str(r["seed"]) for r in next(iter(results.values())))
    head = f"Real-data experiments, seeds {seeds} (mean ± std over seeds):\n\n"
    return head + "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.realdata", description=__doc__)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [n for n in args.experiments.split(",") if n]
    try:  # a bad name or setting fails now, in one line, not after an hour
        out = Layout.of(load_experiment(names[0], args.overrides)).realdata
        for name in names[1:]:
            load_experiment(name, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in seeds:
            print(f"[realdata] {name} seed {seed} ...", file=sys.stderr, flush=True)
            try:
                run = _run_seed(name, seed, args.overrides)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(
                f"[realdata] {name} seed {seed}: {run['seconds']} s, champion {run['champion']}",
                file=sys.stderr,
                flush=True,
            )
            results.setdefault(name, []).append(run)
    out.mkdir(parents=True, exist_ok=True)
    text = table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(text)
    print(text)
    print(f"written to {out}/results.md and results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
