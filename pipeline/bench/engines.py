"""Bench: the embed stage on the local engine and on a local Ray with 1 and 2 workers, on
`default`, interleaved in one run.

`raw` is built once; then, for each of `ROUNDS` rounds, the embed stage runs on each engine
from a cold cache (the cache and the embeddings are removed before every run), each run in its
own process. Prints per engine the median wall seconds of the process (Ray's start and stop
included) and of the stage alone (its summary line), the ratio to local, and
whether its vectors equal the local engine's. A local Ray has the machine's CPUs and no more:
on a 2-core machine the local engine already runs the encoder on both cores (2 torch
threads), so Ray can only add its overhead there; a speed-up needs more cores or nodes.

`python -m pipeline.bench engines`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.bench import measured, stage_seconds
from pipeline.config import load_experiment
from pipeline.stage import Layout

EXPERIMENT = "default"
ROUNDS = 2
ENGINES = {
    "local": [],
    "ray, 1 worker": ["--set", "engine.kind=ray", "--set", "engine.workers=1"],
    "ray, 2 workers": ["--set", "engine.kind=ray", "--set", "engine.workers=2"],
}


def _vectors(layout: Layout) -> pl.DataFrame:
    return pl.read_parquet(layout.embeddings / "ads.parquet")


def main() -> None:
    print(f"embed on `{EXPERIMENT}`, cold cache, {os.cpu_count()} CPUs, {ROUNDS} rounds")
    with tempfile.TemporaryDirectory(prefix="adctr-bench-engines-") as tmp:
        root = Path(tmp)
        base = [sys.executable, "-m", "pipeline"]
        opts = ["--experiment", EXPERIMENT, "--set", f"data.root={root}"]
        measured([*base, "raw", *opts])
        layout = Layout.of(load_experiment(EXPERIMENT, [f"data.root={root}"]))
        runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
        reference = None
        equal = dict.fromkeys(ENGINES, True)
        for n in range(ROUNDS):
            for name, extra in ENGINES.items():
                shutil.rmtree(layout.embed_cache, ignore_errors=True)
                shutil.rmtree(layout.embeddings, ignore_errors=True)
                result = measured([*base, "embed", *opts, *extra])
                result["stage"] = stage_seconds(result["out"] + result["err"])
                runs[name].append(result)
                vectors = _vectors(layout)
                reference = vectors if reference is None else reference
                equal[name] &= vectors.equals(reference)
                print(
                    f"  round {n + 1} {name:<15} wall {result['wall']:6.1f} s  stage "
                    f"{result['stage']:6.1f} s  load avg {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    local = statistics.median(r["wall"] for r in runs["local"])
    print(f"  {'engine':<15} {'wall s':>7} {'stage s':>7} {'vs local':>8}  vectors")
    for name, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        stage = statistics.median(r["stage"] for r in results)
        same = "equal to local" if equal[name] else "DIFFER from local"
        print(f"  {name:<15} {wall:7.1f} {stage:7.1f} {wall / local:8.2f}  {same}")


if __name__ == "__main__":
    main()
