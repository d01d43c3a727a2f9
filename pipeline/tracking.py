"""MLflow tracking: the project's store, one experiment per experiment config, tagged runs."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.config import EXPERIMENTS_DIR, Experiment
from pipeline.io import input_digest
from pipeline.lock import pid_alive
from pipeline.ray_engine import stage_engine

log = logging.getLogger(__name__)

STORE_DIR = Path("mlruns")
HOST_TAG, PID_TAG = "host", "pid"  # the process that runs a stage, to find abandoned runs


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<cwd>/mlruns/mlflow.db`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    STORE_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def artifact_root() -> str:
    """Artifacts beside the store: `<store dir>/artifacts` for sqlite stores, else `mlruns/`."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return (STORE_DIR / "artifacts").resolve().as_uri()


# the experiment's declared kind: model training, not GenAI work (the UI does not ask the reader
# which it is; MLflow 3.17's page layout itself follows the browser's sidebar switch, README)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def use_experiment(exp: Experiment) -> str:
    """Point MLflow at the project store and the experiment named like the config; its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.get_experiment_by_name(exp.name)
    if found is None:
        exp_id = mlflow.create_experiment(
            exp.name, artifact_location=f"{artifact_root()}/{exp.name}"
        )
    else:
        exp_id = found.experiment_id
    if found is None or found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextlib.contextmanager
def stage_run(
    exp: Experiment,
    stage: str,
    run_name: str | None = None,
    model: str | None = None,
    tags: dict[str, str] | None = None,
    log_config: bool = True,
) -> Iterator[mlflow.ActiveRun]:
    """One top-level MLflow run for a stage (or one model of the train stage), tagged.

    The run records the process (`host`, `pid`); runs that dead processes of this host left
    RUNNING are marked KILLED first, and a run interrupted by Ctrl-C (or a SIGTERM / SIGHUP
    that the CLI turns into KeyboardInterrupt) ends KILLED rather than FAILED.
    """
    exp_id = use_experiment(exp)
    end_abandoned_runs(exp_id)
    all_tags = run_tags(exp, stage, model, tags)
    with mlflow.start_run(run_name=run_name or (model or stage), tags=all_tags) as run:
        try:
            if log_config:
                log_experiment_config(exp)
            yield run
        except KeyboardInterrupt as exc:
            end_killed(run.info.run_id, exc)
            raise


@contextlib.contextmanager
def child_run(
    exp: Experiment,
    stage: str,
    run_name: str,
    model: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A run nested in the active `stage_run` (one tuning trial, say), tagged like it; it ends
    KILLED on Ctrl-C, and a dead process's child left RUNNING is ended like its parent."""
    all_tags = run_tags(exp, stage, model, tags)
    with mlflow.start_run(run_name=run_name, nested=True, tags=all_tags) as run:
        try:
            yield run
        except KeyboardInterrupt as exc:
            end_killed(run.info.run_id, exc)
            raise


def _collect() -> None:
    """`gc.collect()`, with what the finalizers of the collected objects raise logged at debug
    level instead of printed as "Exception ignored in ... Traceback": an ORM object torn by
    the interrupt can fail its own clean-up (seen: SQLAlchemy's `InstanceState._cleanup`)."""
    previous = sys.unraisablehook

    def quiet(unraisable: Any) -> None:
        exc = unraisable.exc_value
        log.debug("while collecting after an interrupt: %s: %s", type(exc).__name__, exc)

    sys.unraisablehook = quiet
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous


def end_killed(run_id: str, interrupt: BaseException) -> None:
    """End the active run KILLED after `interrupt`, never raising in its place.

    An interrupt that lands inside an MLflow write can leave that write's SQLite connection
    open in its transaction, kept alive by the interrupted frames; the store stays locked, and
    ending the run waits out the busy timeout and fails. So the frames' locals are dropped and
    collected first, and a failure is retried once after another collection. A run that still
    cannot be ended stays RUNNING with a warning: the next stage marks the runs of dead
    processes KILLED (`end_abandoned_runs`)."""
    traceback.clear_frames(interrupt.__traceback__)
    _collect()
    try:
        mlflow.end_run("KILLED")  # pops the run first, then writes
        return
    except MlflowException:
        _collect()
    try:
        mlflow.MlflowClient().set_terminated(run_id, "KILLED")
    except MlflowException as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("MLflow run %s not marked KILLED (%s): the next stage marks it", run_id, first)


def run_tags(
    exp: Experiment, stage: str, model: str | None, tags: dict[str, str] | None
) -> dict[str, str]:
    """The tags of every run: stage, experiment, config hash, engine, model, the process; then
    `tags`."""
    all_tags = {"stage": stage, "experiment": exp.name, "config_hash": exp.digest()}
    all_tags["engine"] = stage_engine(exp.engine, stage, model)  # where it ran: local | ray
    if model:
        all_tags["model"] = model
    all_tags |= {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    return all_tags | (tags or {})


def end_abandoned_runs(exp_id: str) -> list[str]:
    """Mark KILLED the runs of the experiment left RUNNING by dead processes of this host."""
    host = socket.gethostname().replace("'", "")
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [exp_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'",
        max_results=1000,
    )
    ended = []
    for found in runs:
        pid = found.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            client.set_terminated(found.info.run_id, "KILLED")
            ended.append(found.info.run_id)
    if ended:
        log.warning("marked %d run(s) of dead processes KILLED: %s", len(ended), ", ".join(ended))
    return ended


def model_requirements() -> list[str]:
    """The pip requirements logged with every model: the exact pins of adctr's own runtime
    dependencies. Given explicitly, so MLflow does not infer them (a subprocess that imports
    the model again: about 12 s per logged model)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        found = requires("adctr") or []
    except PackageNotFoundError:  # run from a source tree that was never installed
        return ["mlflow"]
    return [r for r in found if "extra ==" not in r]


def log_experiment_config(exp: Experiment) -> None:
    """The flattened config as params and the experiment TOML as an artifact."""
    params = {k: _param(v) for k, v in exp.flat().items()}
    mlflow.log_params(params)
    toml_path = EXPERIMENTS_DIR / f"{exp.name}.toml"
    if toml_path.is_file():
        mlflow.log_artifact(str(toml_path), artifact_path="config")


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log finite metrics; NaN (undefined, e.g. AUC of one class) is skipped, not logged."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_new_metrics(run_id: str, metrics: dict[str, float]) -> dict[str, float]:
    """Log onto the finished run `run_id` the metrics it does not hold yet with the same value
    (so a key another stage logged already is not logged twice); returns what was logged."""
    logged = mlflow.MlflowClient().get_run(run_id).data.metrics
    new = {k: v for k, v in metrics.items() if logged.get(k) != v}
    with mlflow.start_run(run_id=run_id):
        log_metrics(new)
    return new


def log_features_input(features: Path, name: str, rows: dict[str, int]) -> None:
    """The feature tables a model run was fitted on, as an MLflow dataset input (the runs
    table's Dataset column): named `<experiment>-features`, its source the folder, its digest
    that of the folder's manifest (so two runs on the same tables show the same digest)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(Path(features).resolve()))
    digest = input_digest(Path(features))[:12]
    dataset = MetaDataset(source, name=name, digest=digest)
    tags = {f"rows_{split}": str(n) for split, n in rows.items()}
    mlflow.log_input(dataset, context="training", tags=tags)
