"""Bench: the stages that have a Ray version, on the local engine and on a local Ray with 1 and
2 workers, on `default`, interleaved in one run.

`raw` is built once (and not `understand`: the features carry no query-understanding columns
here). Then, stage by stage, for each of `ROUNDS` rounds, the stage runs on each
engine, each run in its own process:
- `embed` from a cold cache (the cache and the embeddings are removed before every run); its
  vectors are compared with the local engine's;
- `features` (the behaviour keys as Ray tasks over hash partitions of the key); its files are
  compared byte for byte with the local engine's;
- `train` with one model at a time: `neural` (Ray Train, DDP over the workers) and `lightgbm`
  (Ray Train on as few workers as hold its rows: on `default` one, the local fit, whatever
  `engine.workers`; `pipeline.ray_train.gbm_workers`); its test CTR AUC is compared with the
  local engine's.
Prints per stage and engine the median wall seconds of the process (Ray's start and stop
included) and of the stage alone (its summary line), the ratio to local, and how its output
compares. A local Ray has the machine's CPUs and no more: on a 2-core machine the local engine
already uses both cores, so Ray can only add its overhead there; a speed-up needs more cores or
nodes.

`python -m pipeline.bench engines`; `python -m pipeline.bench.engines features lightgbm` for some
only (`embed`, `features`, `neural`, `lightgbm`).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.bench import measured, stage_seconds
from pipeline.config import load_experiment
from pipeline.io import read_manifest
from pipeline.stage import Layout

EXPERIMENT = "default"
ROUNDS = 2
ENGINES = {
    "local": [],
    "ray, 1 worker": ["--set", "engine.kind=ray", "--set", "engine.workers=1"],
    "ray, 2 workers": ["--set", "engine.kind=ray", "--set", "engine.workers=2"],
}
# what is benched: the stage it runs and its extra options (the train stage: one model)
STAGES = {
    "embed": ("embed", []),
    "features": ("features", []),
    "neural": ("train", ["--set", 'train.models=["neural"]']),
    "lightgbm": ("train", ["--set", 'train.models=["lightgbm"]']),
}


def _output(what: str, layout: Layout, result: dict) -> object:
    """What a run of `what` is compared on: the ad vectors, the feature files' bytes, or the
    model's test CTR AUC (from the stage's summary line)."""
    if what == "embed":
        return pl.read_parquet(layout.embeddings / "ads.parquet")
    if what == "features":
        names = sorted(read_manifest(layout.features)["tables"])
        return [(n, (layout.features / f"{n}.parquet").read_bytes()) for n in names]
    found = re.search(rf"{what}_test_ctr_auc=([0-9.]+)", result["out"] + result["err"])
    return float(found.group(1)) if found else float("nan")


def _compare(what: str, output: object, local: object) -> str:
    if STAGES[what][0] == "train":
        return f"test CTR AUC {output:.4f} (local {local:.4f})"
    same = output.equals(local) if what == "embed" else output == local
    return "equal to local" if same else "DIFFER from local"


def _clear(stage: str, layout: Layout) -> None:
    """Where a run of `stage` starts from: embed from an empty cache, the others as they are."""
    if stage == "embed":
        shutil.rmtree(layout.embed_cache, ignore_errors=True)
        shutil.rmtree(layout.embeddings, ignore_errors=True)


def _command(stage: str, root: Path) -> list[str]:
    """`stage` of the experiment with its data under `root` (on the local engine)."""
    return [sys.executable, "-m", "pipeline", stage, "--experiment", EXPERIMENT,
            "--set", f"data.root={root}"]  # fmt: skip


def bench_stage(what: str, root: Path, layout: Layout) -> None:
    """`what` on every engine, `ROUNDS` rounds interleaved; its table (an engine's output
    column lists what each round gave, once each)."""
    stage, extra_options = STAGES[what]
    base = [*_command(stage, root), *extra_options]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    runs: dict[str, list[dict]] = {name: [] for name in ENGINES}
    compared: dict[str, list[str]] = {name: [] for name in ENGINES}
    local = None
    for n in range(ROUNDS):
        for name, extra in ENGINES.items():
            _clear(stage, layout)
            result = measured([*base, *extra], env)
            result["stage"] = stage_seconds(result["out"] + result["err"])
            runs[name].append(result)
            output = _output(what, layout, result)
            local = output if local is None else local
            compared[name].append(_compare(what, output, local))
            print(
                f"  {what} round {n + 1} {name:<15} wall {result['wall']:6.1f} s  stage "
                f"{result['stage']:6.1f} s  load avg {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    wall_local = statistics.median(r["wall"] for r in runs["local"])
    print(f"  {what:<9} {'engine':<15} {'wall s':>7} {'stage s':>7} {'vs local':>8}  output")
    for name, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        seconds = statistics.median(r["stage"] for r in results)
        ratio = wall / wall_local
        output = "; ".join(dict.fromkeys(compared[name]))
        print(f"  {what:<9} {name:<15} {wall:7.1f} {seconds:7.1f} {ratio:8.2f}  {output}")


def main(chosen: tuple[str, ...] = tuple(STAGES)) -> None:
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        known = ", ".join(STAGES)
        print(f"error: no Ray version of {unknown} to bench (known: {known})", file=sys.stderr)
        sys.exit(2)
    print(f"{', '.join(chosen)} on `{EXPERIMENT}`, {os.cpu_count()} CPUs, {ROUNDS} rounds")
    with tempfile.TemporaryDirectory(prefix="adctr-bench-engines-") as tmp:
        root = Path(tmp)
        measured(_command("raw", root))
        layout = Layout.of(load_experiment(EXPERIMENT, [f"data.root={root}"]))
        for what, (stage, _) in STAGES.items():  # in the job's order: each reads the one before
            if what in chosen:
                bench_stage(what, root, layout)
            elif stage != "train":
                measured(_command(stage, root))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or tuple(STAGES))
