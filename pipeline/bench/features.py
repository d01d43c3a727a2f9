"""Bench: the features stage on 1M and 4M simulated impressions, measured side by side in one run.

For each size the marketplace grows with the data (users = n / 20, ads = n / 200, advertisers =
n / 3,333), `generate` writes the raw tables, and `features` (text features off) builds the
feature tables. Each build runs in its own process under a small wrapper whose only child it
is, so the peak RSS reported (`getrusage(RUSAGE_CHILDREN).ru_maxrss`) is that build's alone.
Prints rows/s (of the whole process, and of the stage alone as its summary line reports it,
without interpreter start-up and imports), CPU seconds and peak RSS per size, the 4M / 1M time
ratio (near-linear: at most 4.5) and whether peak RSS at 4M stays under 8 GB. The load average
is printed with each build: on a shared machine wall time stretches with other jobs, CPU time
much less.

`python -m pipeline.bench features`; `python -m pipeline.bench.features 200000 800000` for other
sizes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from pipeline.bench import measured, stage_seconds

log = logging.getLogger(__name__)

SIZES = (1_000_000, 4_000_000)
MAX_RATIO = 4.5
MAX_RSS_GB = 8.0


def market_overrides(n: int) -> list[str]:
    """`--set` options for a marketplace of n impressions, its population scaled with it."""
    sets = {
        "market.n_impressions": n,
        "market.n_users": max(n // 20, 100),
        "market.n_ads": max(n // 200, 50),
        "market.n_advertisers": max(n // 3_333, 20),
    }
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def measure(stage: str, root: Path, n: int, *extra: str) -> dict:
    """Run one stage of the `small` experiment at size n in a fresh process; its figures."""
    cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", "small"]
    cmd += ["--set", f"data.root={root}", *market_overrides(n), *extra]
    result = measured(cmd)
    result["stage"] = stage_seconds(result["out"])  # the summary line
    return result


def run_sizes(sizes: tuple[int, ...], base: Path) -> list[dict]:
    rows = []
    for n in sizes:
        root = base / f"n{n}"
        gen = measure("raw", root, n)
        load = os.getloadavg()[0]
        build = measure("features", root, n, "--set", "features.text=false")
        rows.append(
            {
                "n": n,
                "generate_s": gen["wall"],
                "wall_s": build["wall"],
                "stage_s": build["stage"],
                "cpu_s": build["cpu"],
                "rss_gb": build["rss"] / 1e9,
                "load": (load + os.getloadavg()[0]) / 2,
            }
        )
        print(
            f"  {n:>10,} impressions: features {build['wall']:6.1f} s "
            f"({n / build['wall']:>7,.0f} rows/s; stage alone {build['stage']:6.1f} s, "
            f"{n / build['stage']:>7,.0f} rows/s), CPU {build['cpu']:6.1f} s, "
            f"peak RSS {build['rss'] / 1e9:5.2f} GB, load avg {rows[-1]['load']:.1f} "
            f"(generate {gen['wall']:.1f} s)",
            flush=True,
        )
    return rows


def report(rows: list[dict]) -> list[str]:
    """The closing lines: time ratios of the largest to the smallest size and the verdicts."""
    small, big = rows[0], rows[-1]
    scale = big["n"] / small["n"]
    ratios = {k: big[f"{k}_s"] / small[f"{k}_s"] for k in ("wall", "stage", "cpu")}
    lines = [
        f"  time ratio {big['n']:,} / {small['n']:,} (x{scale:g} rows): process wall "
        f"{ratios['wall']:.2f}, stage alone {ratios['stage']:.2f}, CPU {ratios['cpu']:.2f}",
    ]
    if scale == 4:
        ok = "ok" if max(ratios["wall"], ratios["stage"]) <= MAX_RATIO else "OVER"
        lines.append(f"  target: ratio <= {MAX_RATIO} (process and stage wall) -> {ok}")
    ok = "ok" if big["rss_gb"] < MAX_RSS_GB else "OVER"
    lines.append(f"  target: peak RSS at {big['n']:,} < {MAX_RSS_GB:g} GB -> {ok}")
    return lines


def main(sizes: tuple[int, ...] = SIZES) -> None:
    print(f"features stage, text features off, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="adctr-bench-features-") as tmp:
        rows = run_sizes(sizes, Path(tmp))
    for line in report(rows):
        print(line)


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or SIZES)
