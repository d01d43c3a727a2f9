"""Bench: the main job (`make features train evaluate`) at 1M, 4M and 10M impressions, side by side.

Each size is the `large` experiment (10M impressions, 60k ads, 400k users) with its population
scaled to the size, built from nothing in a scratch folder of its own: `raw`, the stages that
`make features` runs (`finetune` and `understand` only where the config needs them), `train`
and `evaluate`. Every stage runs in its own process under a wrapper whose only child it is, so
the peak RSS reported is that stage's alone. Prints, per stage and size, wall and CPU seconds
and peak RSS, then per stage the largest / smallest time ratio, and two verdicts: the 10M / 1M
ratio at most 12 for every stage (near-linear growth) and peak RSS at most 12 GB at every size.
A size's folder is deleted once measured (10M writes about 15 GB).

`python -m pipeline.bench scale`; `python -m pipeline.bench.scale 100000 400000` for other sizes
(the ratio verdict then applies to the sizes given). Run it alone on the machine: each size's
wall time stretches with other jobs, and the load average is printed beside it.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.bench import MAIN_JOB, measured, stage_seconds
from pipeline.config import load_experiment

SIZES = (1_000_000, 4_000_000, 10_000_000)
EXPERIMENT = "large"
MAX_RATIO = 12.0  # 10M / 1M time, per stage
MAX_RSS_GB = 12.0


def market_overrides(n: int) -> list[str]:
    """`--set` options scaling the `large` marketplace's users and ads to n impressions (its
    advertisers stay as they are)."""
    market = load_experiment(EXPERIMENT).market
    share = n / market.n_impressions
    sets = {
        "market.n_impressions": n,
        "market.n_users": max(round(market.n_users * share), 100),
        "market.n_ads": max(round(market.n_ads * share), 50),
    }
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def run_size(n: int, root: Path) -> dict[str, dict]:
    """Every stage at size n into `root`; per stage wall, cpu, rss (bytes) and stage seconds."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    base = ["--experiment", EXPERIMENT, "--set", f"data.root={root}", *market_overrides(n)]
    figures = {}
    for stage, flags in MAIN_JOB:
        load = os.getloadavg()[0]
        result = measured([sys.executable, "-m", "pipeline", stage, *base, *flags], env)
        result["stage"] = stage_seconds(result["out"] + result["err"])
        result["load"] = (load + os.getloadavg()[0]) / 2
        figures[stage] = result
        print(
            f"  {n:>10,} {stage:<10} wall {result['wall']:7.1f} s  CPU {result['cpu']:7.1f} s  "
            f"peak RSS {result['rss'] / 1e9:5.2f} GB  load avg {result['load']:.1f}",
            flush=True,
        )
    return figures


def report(sizes: tuple[int, ...], rows: dict[int, dict[str, dict]]) -> list[str]:
    """Per stage the largest / smallest wall ratio; the ratio and memory verdicts."""
    small, big = sizes[0], sizes[-1]
    lines = [f"  time ratio {big:,} / {small:,} (x{big / small:g} rows):"]
    worst = 0.0
    for stage, _ in MAIN_JOB:
        a, b = rows[small][stage], rows[big][stage]
        if math.isnan(a["stage"]) and math.isnan(b["stage"]):
            lines.append(f"    {stage:<10} skipped (the config does not need it)")
            continue
        ratio = b["wall"] / a["wall"]
        worst = max(worst, ratio)
        lines.append(f"    {stage:<10} wall {ratio:5.2f}  CPU {b['cpu'] / a['cpu']:5.2f}")
    peak = max(f["rss"] for size in rows.values() for f in size.values()) / 1e9
    ok = "ok" if worst <= MAX_RATIO else "OVER"
    lines.append(f"  target: every stage's ratio <= {MAX_RATIO:g} (worst {worst:.2f}) -> {ok}")
    ok = "ok" if peak <= MAX_RSS_GB else "OVER"
    lines.append(f"  target: peak RSS <= {MAX_RSS_GB:g} GB at every size ({peak:.2f}) -> {ok}")
    return lines


def main(sizes: tuple[int, ...] = SIZES) -> None:
    print(f"`make features train evaluate` on `{EXPERIMENT}` scaled, {os.cpu_count()} CPUs")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="adctr-bench-scale-") as tmp:
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            rows[n] = run_size(n, root)
            shutil.rmtree(root)
    for line in report(sizes, rows):
        print(line)


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or SIZES)
