"""The train stage's models on the Ray engine, `engine.workers` Ray Train workers each. Each
worker reads its shard of the train rows (every world-th row) from the features' Parquet
through the local engine's own reader (`pipeline.train_inputs.model_input`), and the whole
valid split. Rank 0 saves the fitted model as a Ray Train checkpoint, which the job loads; the
rest of the stage (calibration, scoring, MLflow) is the local engine's. The workers' own log
lines (the epochs, the boosting rounds) stay on the cluster; the curves reach MLflow with the
model.

- The neural model: `TorchTrainer`, DDP over gloo on CPU, the same `models.neural.NeuralCTR`
  with `data_parallel=True`: each step is the one-process run's batch, every rank computing
  its rows of it, with the gradients summed over the ranks, so every rank holds the same
  weights and stops at the same epoch.
- LightGBM: `LightGBMTrainer` on as few workers as hold the rows it fits: at most
  `engine.workers`, and one while those rows fit `train.max_in_memory_rows` (`gbm_workers`).
  On one worker it is the local engine's fit on the same rows, so the same model. On more,
  LightGBM's own data-parallel learner runs over the network Ray Train sets up
  (`get_network_params`), the same `models.lgbm.LightGBMCTR` with a `DataParallel` part.
  Every worker finds the feature bins on the same rows (the negatives sampled as on the local
  engine, then at most `BIN_ROWS` of them, seeded; the CVR booster's on the clicked rows).
  The trees still differ from the local engine's: each worker draws its own bag of rows, a
  categorical split's per-category counts are estimated from the summed hessians, and the
  histograms are summed in another order, so a near-tie between two splits can go the other
  way (README, "Running on a cluster"). LightGBM's feature-parallel learner, which would keep
  the one-machine trees, is not in its C API ("Do not support feature parallel in c api").

The checkpoint goes to a scratch folder beside `models/` (removed at the end): on a cluster,
`data.root` must be storage that every node sees, as for the features the workers read.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from features.spec import FeatureSpec
from models.lgbm import DataParallel, LightGBMCTR
from models.neural import NeuralCTR
from models.sampling import CORRECTION
from pipeline.atomic import scratch_dir
from pipeline.config import Experiment
from pipeline.datasets import SplitTable
from pipeline.io import DataError, one_line
from pipeline.ray_engine import ray_session
from pipeline.train_inputs import (
    fit_negative_rate,
    fitted_rows,
    labels_of,
    model_input,
    neural_labels,
)

log = logging.getLogger(__name__)

DERIVED_FILE = "derived.json"  # the settings derived from the data's size, beside the model
EVALS_FILE = "evals.json"  # LightGBM's curves, beside the model
BIN_ROWS = 200_000  # rows the LightGBM bins are found on: LightGBM's bin_construct_sample_cnt


def shard(rows: int, rank: int, world: int) -> np.ndarray:
    """The train rows of `rank` of `world` (a boolean mask): every world-th row from `rank`
    (`models.neural_loop.Shard`)."""
    keep = np.zeros(rows, bool)
    keep[rank::world] = True
    return keep


def _rank() -> tuple[int, int]:
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def _report(model: Any, rank: int, metrics: dict[str, Any], extra: dict[str, Any]) -> None:
    """Rank 0 reports the fitted model (and `extra`, file name -> JSON) as the checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as out:
        if rank == 0:
            model.save(Path(out))
            for name, value in extra.items():
                Path(out, name).write_text(json.dumps(value, default=str))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(out))
        else:
            ray.train.report(metrics)


def _neural_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit this rank's shard; rank 0 reports the model as a checkpoint."""
    exp: Experiment = config["exp"]
    spec: FeatureSpec = config["spec"]
    train, valid = config["train"], config["valid"]
    rank, world = _rank()
    click, conv = neural_labels(train, spec)
    keep = shard(len(click), rank, world)
    xt = model_input(train, spec, "neural", config["tables"], keep, exp)
    xv = model_input(valid, spec, "neural", config["tables"], None, exp)
    model = NeuralCTR(exp.neural, exp.data.seed, config["threads"], data_parallel=True)
    model.fit(xt, click[keep], conv[keep], xv, *neural_labels(valid, spec))
    metrics = {"best_epoch": model.best_epoch_, "rows": int(keep.sum())}
    _report(model, rank, metrics, {DERIVED_FILE: model.derived_})


def bin_rows(keep: np.ndarray, seed: int, most: int = BIN_ROWS) -> np.ndarray:
    """The rows of `keep` (a boolean mask) the LightGBM bins are found on: all of them, or
    `most` of them drawn with `seed` (a mask, the same on every worker)."""
    rows = np.flatnonzero(keep)
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(seed).choice(rows, most, replace=False))
    out = np.zeros(len(keep), bool)
    out[rows] = True
    return out


def gbm_workers(rows: int, exp: Experiment) -> int:
    """LightGBM's Ray Train workers for `rows` fitted rows: as few as hold them (at most
    `train.max_in_memory_rows` each), at most `engine.workers`. More would only change the
    trees (data-parallel boosting is not the one-machine fit) and pay for the network."""
    return max(1, min(exp.engine.workers, -(-rows // exp.train.max_in_memory_rows)))


def _lightgbm_worker(config: dict[str, Any]) -> None:
    """One LightGBM machine: alone, the local engine's fit of the sampled train rows; else
    this rank's shard of them, data-parallel."""
    from ray.train.lightgbm import get_network_params

    exp: Experiment = config["exp"]
    spec: FeatureSpec = config["spec"]
    train, valid, tables = config["train"], config["valid"], config["tables"]
    rate, seed = config["rate"], exp.data.seed
    rank, world = _rank()
    (ct, vt), (cv, vv) = labels_of(train, spec), labels_of(valid, spec)
    kept_t, kept_v = fitted_rows(ct, rate, seed, "train"), fitted_rows(cv, rate, seed, "valid")
    parallel, mine = None, kept_t  # alone: the local engine's fit, on the same rows
    if world > 1:
        mine = kept_t & shard(len(ct), rank, world)
        clicked = kept_t & (ct == 1)
        cvr_bins = None
        if vt is not None:
            cvr_bins = model_input(train, spec, "lightgbm", tables, bin_rows(clicked, seed), exp)
        parallel = DataParallel(
            network=get_network_params(),
            rows=int(kept_t.sum()),
            clicks=int(clicked.sum()),
            conversions=0 if vt is None else int(vt[clicked].sum()),
            ctr_bins=model_input(train, spec, "lightgbm", tables, bin_rows(kept_t, seed), exp),
            cvr_bins=cvr_bins,
        )
    model = LightGBMCTR(exp.lightgbm, seed, config["threads"]).fit(
        model_input(train, spec, "lightgbm", tables, mine, exp),
        ct[mine],
        None if vt is None else vt[mine],
        model_input(valid, spec, "lightgbm", tables, kept_v, exp),
        cv[kept_v],
        None if vv is None else vv[kept_v],
        rate,
        parallel,
    )
    metrics = {"best_iteration": model.ctr_booster_.best_iteration, "rows": int(mine.sum())}
    extra = {DERIVED_FILE: model.derived_, EVALS_FILE: model.evals_result_}
    _report(model, rank, metrics, extra)


def _per_worker(train: SplitTable, rows: int, exp: Experiment, workers: int) -> int:
    """The train rows (of `rows` fitted on) per worker of `workers`; a DataError where a
    worker could not hold them."""
    per_worker = rows // workers
    if per_worker < 1:
        raise DataError(
            f"{train.path}: {rows:,} train rows to fit on, fewer than engine.workers "
            f"({workers}); lower engine.workers"
        )
    if per_worker > exp.train.max_in_memory_rows:
        raise DataError(
            f"{train.path}: {per_worker:,} train rows a Ray worker is more than "
            f"train.max_in_memory_rows ({exp.train.max_in_memory_rows:,}); raise engine.workers"
        )
    return per_worker


def _fit_on_ray(
    kind: str,
    exp: Experiment,
    models_dir: Path,
    config: dict[str, Any],
    workers: int,
    per_worker: int,
    load: Any,
    how: str,
) -> Any:
    """The model `kind` fitted by `workers` Ray Train workers running its worker loop with
    `config`, loaded back from rank 0's checkpoint folder by `load` (`how`: for the log)."""
    with ray_session(exp.engine) as ray, scratch_dir(models_dir / "ray-train") as work:
        from ray.train import FailureConfig, RunConfig, ScalingConfig

        cpus = ray.cluster_resources().get("CPU", 1.0) / workers
        threads = max(1, int(cpus + 0.5))
        log.info(
            "%s: %s on %d Ray Train worker(s), %.2f CPUs and %d threads each, %s rows each",
            kind, how, workers, cpus, threads, f"{per_worker:,}",
        )  # fmt: skip
        trainer = _trainer(kind)(
            WORKERS[kind],
            train_loop_config=config | {"exp": exp, "threads": threads},
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(
                name=kind, storage_path=str(work), failure_config=FailureConfig(max_failures=0)
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray Train wraps a worker's error or death in its own
            why = one_line(exc)
            raise DataError(f"Ray Train: the {kind} model failed ({why}); rerun") from None
        if result.checkpoint is None:
            raise DataError(f"Ray Train: the {kind} model's workers reported no model; rerun")
        with result.checkpoint.as_directory() as folder:
            model = load(Path(folder))
            model.derived_ = json.loads(Path(folder, DERIVED_FILE).read_text())
    return model


def _trainer(kind: str) -> Any:
    """The Ray Train trainer class of `kind` (gloo for the neural model: CPU)."""
    if kind == "neural":
        from ray.train.torch import TorchConfig, TorchTrainer

        return partial(TorchTrainer, torch_config=TorchConfig(backend="gloo"))
    from ray.train.lightgbm import LightGBMTrainer

    return LightGBMTrainer


WORKERS = {"neural": _neural_worker, "lightgbm": _lightgbm_worker}


def fit_on_ray(
    kind: str,
    exp: Experiment,
    models_dir: Path,
    sources: Mapping[str, Any],
    spec: FeatureSpec,
    tables: Mapping[str, np.ndarray] | None,
) -> Any:
    """Model `kind` (`neural` or `lightgbm`) fitted on the Ray engine from the splits `sources`
    (on disk: every worker reads its own shard), as the local engine's `fit_model` returns it."""
    train, valid = sources["train"], sources["valid"]
    if not (isinstance(train, SplitTable) and isinstance(valid, SplitTable)):
        raise ValueError("the Ray engine trains from the split tables on disk")
    if kind not in WORKERS:
        raise ValueError(f"the {kind} model has no Ray version")
    config = {"spec": spec, "train": train, "valid": valid, "tables": dict(tables or {})}
    threads = exp.engine.num_threads
    if kind == "neural":
        workers = exp.engine.workers
        per_worker = _per_worker(train, train.rows, exp, workers)
        load_neural = partial(NeuralCTR.load, num_threads=threads)
        return _fit_on_ray(kind, exp, models_dir, config, workers, per_worker, load_neural, "DDP")
    click, _ = labels_of(train, spec)
    config["rate"] = rate = fit_negative_rate(kind, exp, click)
    rows = int(fitted_rows(click, rate, exp.data.seed, "train").sum())
    if rate < 1.0:
        log.info(
            "%s: fitted on every click and %.4f of the non-clicks (%s train rows; predictions "
            "corrected by %s)", kind, rate, f"{rows:,}", CORRECTION
        )  # fmt: skip

    def load(folder: Path) -> LightGBMCTR:
        model = LightGBMCTR.load(folder, num_threads=threads)
        model.evals_result_ = json.loads(Path(folder, EVALS_FILE).read_text())
        return model

    workers = gbm_workers(rows, exp)
    per_worker = _per_worker(train, rows, exp, workers)
    how = "data-parallel boosting" if workers > 1 else "one booster, the local fit,"
    return _fit_on_ray(kind, exp, models_dir, config, workers, per_worker, load, how)
