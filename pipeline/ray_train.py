"""The train stage's neural model on the Ray engine: Ray Train's `TorchTrainer`, DDP over gloo
on CPU, `engine.workers` workers. Each worker reads its shard of the train rows (every
world-th row) from the features' Parquet through the local engine's own reader
(`pipeline.train_inputs.model_input`), and the whole valid split, and fits the same
`models.neural.NeuralCTR` with `data_parallel=True`: each step is the one-process run's batch,
every rank computing its rows of it, with the gradients summed over the ranks, so every rank
holds the same weights and stops at the same epoch. Rank 0 saves the fitted model as a Ray
Train checkpoint, which the job loads; the rest of the stage (calibration, scoring, MLflow) is
the local engine's. The workers' own log lines (the epochs) stay on the cluster; the curves
reach MLflow with the model.

The checkpoint goes to a scratch folder beside `models/` (removed at the end): on a cluster,
`data.root` must be storage that every node sees, as for the features the workers read.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from features.spec import FeatureSpec
from models.neural import NeuralCTR
from pipeline.atomic import scratch_dir
from pipeline.config import Experiment
from pipeline.datasets import SplitTable
from pipeline.io import DataError, one_line
from pipeline.ray_engine import ray_session
from pipeline.train_inputs import model_input, neural_labels

log = logging.getLogger(__name__)

DERIVED_FILE = "derived.json"  # the settings derived from the data's size, beside the model


def shard(rows: int, rank: int, world: int) -> np.ndarray:
    """The train rows of `rank` of `world` (a boolean mask): every world-th row from `rank`
    (`models.neural_loop.Shard`)."""
    keep = np.zeros(rows, bool)
    keep[rank::world] = True
    return keep


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit this rank's shard; rank 0 reports the model as a checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    exp: Experiment = config["exp"]
    spec: FeatureSpec = config["spec"]
    train, valid = config["train"], config["valid"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    click, conv = neural_labels(train, spec)
    keep = shard(len(click), rank, world)
    xt = model_input(train, spec, "neural", config["tables"], keep, exp)
    xv = model_input(valid, spec, "neural", config["tables"], None, exp)
    model = NeuralCTR(exp.neural, exp.data.seed, config["threads"], data_parallel=True)
    model.fit(xt, click[keep], conv[keep], xv, *neural_labels(valid, spec))
    with tempfile.TemporaryDirectory() as out:
        metrics = {"best_epoch": model.best_epoch_, "rows": int(keep.sum())}
        if rank == 0:
            model.save(out)
            Path(out, DERIVED_FILE).write_text(json.dumps(model.derived_, default=str))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(out))
        else:
            ray.train.report(metrics)


def fit_neural_on_ray(
    exp: Experiment,
    models_dir: Path,
    sources: Mapping[str, Any],
    spec: FeatureSpec,
    tables: Mapping[str, np.ndarray] | None,
) -> NeuralCTR:
    """The neural model fitted by `engine.workers` Ray Train workers (DDP, gloo) on the splits
    `sources` (on disk: every worker reads its own shard), loaded back from rank 0."""
    if not all(isinstance(sources[s], SplitTable) for s in ("train", "valid")):
        raise ValueError("the Ray engine trains from the split tables on disk")
    workers = exp.engine.workers
    per_worker = sources["train"].rows // workers
    if per_worker > exp.train.max_in_memory_rows:
        raise DataError(
            f"{sources['train'].path}: {per_worker:,} train rows a Ray worker is more than "
            f"train.max_in_memory_rows ({exp.train.max_in_memory_rows:,}); raise engine.workers"
        )
    with ray_session(exp.engine) as ray, scratch_dir(models_dir / "ray-train") as work:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        cpus = ray.cluster_resources().get("CPU", 1.0) / workers
        threads = max(1, int(cpus + 0.5))
        log.info(
            "neural: DDP on %d Ray Train worker(s), %.2f CPUs and %d threads each, %s rows each",
            workers, cpus, threads, f"{per_worker:,}",
        )  # fmt: skip
        trainer = TorchTrainer(
            _worker,
            train_loop_config={
                "exp": exp,
                "spec": spec,
                "train": sources["train"],
                "valid": sources["valid"],
                "tables": dict(tables or {}),
                "threads": threads,
            },
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(
                name="neural",
                storage_path=str(work),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray Train wraps a worker's error or death in its own
            why = one_line(exc)
            raise DataError(f"Ray Train: the neural model failed ({why}); rerun") from None
        if result.checkpoint is None:
            raise DataError("Ray Train: the neural model's workers reported no model; rerun")
        with result.checkpoint.as_directory() as folder:
            model = NeuralCTR.load(folder, num_threads=exp.engine.num_threads)
            model.derived_ = json.loads(Path(folder, DERIVED_FILE).read_text())
    return model
