"""The Ray engine (`engine.kind = "ray"`): the embed and features stages on a local Ray give
the local engine's outputs, the train stage's models close ones, a killed Ray worker leaves no
half-written output, and a missing Ray or an unreachable cluster stops a stage with one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from pipeline.config import EngineConfig, load_experiment
from pipeline.io import DataError, read_manifest
from pipeline.ray_engine import _head, actor_share, stage_engine
from pipeline.ray_train import _per_worker, bin_rows, gbm_workers
from tests.conftest import PipelineRun, run_stage

REPO = Path(__file__).resolve().parents[2]


def _sets(sets: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def _command(stage: str, root: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", stage, "-e", "small", "--set", f"data.root={root}"]
    return cmd + _sets(sets)


def _stage(stage: str, root: Path, *sets: str, env: dict[str, str] | None = None):
    return subprocess.run(
        _command(stage, root, *sets),
        cwd=REPO,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_the_engine_setting_is_checked_and_left_out_of_the_digest() -> None:
    with pytest.raises(Exception, match="kind must be one of local, ray"):
        load_experiment("small", ["engine.kind=spark"])
    local = load_experiment("small")
    on_ray = load_experiment("small", ["engine.kind=ray", "engine.workers=2"])
    assert local.digest() == on_ray.digest()  # where a job runs is not a setting of the data
    assert stage_engine(on_ray.engine, "embed") == "ray"
    assert stage_engine(on_ray.engine, "features") == "ray"
    assert stage_engine(on_ray.engine, "train", "neural") == "ray"
    assert stage_engine(on_ray.engine, "train", "lightgbm") == "ray"
    assert stage_engine(on_ray.engine, "train", "logreg") == "local"
    assert stage_engine(on_ray.engine, "evaluate") == "local"  # no Ray version yet
    assert stage_engine(local.engine, "embed") == "local"


def test_actors_leave_ray_data_a_share_of_the_cpus() -> None:
    assert actor_share(2, 1) == (1.5, 2)
    assert actor_share(2, 2) == (0.75, 1)
    assert actor_share(16, 4) == (3.875, 4)
    share, threads = actor_share(1, 8)
    assert share == 0.1 and threads == 1


def test_lightgbm_workers_bin_on_the_same_rows() -> None:
    """The rows every LightGBM worker finds the bins on: all kept rows up to the cap, else that
    many of them, the same draw for the same seed."""
    keep = np.random.default_rng(0).random(1000) < 0.3
    np.testing.assert_array_equal(bin_rows(keep, seed=1, most=1000), keep)
    few = bin_rows(keep, seed=1, most=50)
    assert few.sum() == 50 and not (few & ~keep).any()
    np.testing.assert_array_equal(few, bin_rows(keep, seed=1, most=50))
    assert not np.array_equal(few, bin_rows(keep, seed=2, most=50))


def test_too_few_or_too_many_rows_a_worker_is_one_line() -> None:
    train = SimpleNamespace(path=Path("features/train.parquet"))
    exp = load_experiment("small", ["engine.kind=ray", "engine.workers=4"])
    assert _per_worker(train, 10, exp, 4) == 2
    with pytest.raises(DataError, match=r"3 train rows to fit on, fewer than engine\.workers"):
        _per_worker(train, 3, exp, 4)
    with pytest.raises(DataError, match=r"raise engine\.workers"):
        _per_worker(train, 4 * exp.train.max_in_memory_rows + 4, exp, 4)


def test_lightgbm_takes_as_few_workers_as_hold_its_rows() -> None:
    exp = load_experiment("small", ["engine.kind=ray", "engine.workers=4"])
    most = exp.train.max_in_memory_rows
    assert gbm_workers(10, exp) == 1  # the local fit, on one worker
    assert gbm_workers(most, exp) == 1
    assert gbm_workers(most + 1, exp) == 2
    assert gbm_workers(3 * most, exp) == 3
    assert gbm_workers(10 * most, exp) == 4  # engine.workers at most


def test_cluster_addresses_are_parsed() -> None:
    assert _head("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert _head("ray://head.example:10001") == ("head.example", 10001)
    assert _head("auto") is None
    with pytest.raises(DataError, match="not host:port"):
        _head("head:port")


def test_without_ray_installed_a_ray_stage_says_how_to_install_it(tmp_path) -> None:
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = os.environ | {"PYTHONPATH": str(shadow.parent)}
    line = _one_error_line(_stage("embed", tmp_path / "data", "engine.kind=ray", env=env))
    assert "Ray is not installed" in line and "ENGINE=ray" in line


@pytest.mark.parametrize("how", ["setting", "RAY_ADDRESS"])
def test_an_unreachable_cluster_is_one_line(tmp_path, how) -> None:
    env = os.environ.copy()
    sets = ["engine.kind=ray"]
    if how == "setting":
        sets.append("engine.address=127.0.0.1:1")
    else:
        env["RAY_ADDRESS"] = "127.0.0.1:1"
    line = _one_error_line(_stage("embed", tmp_path / "data", *sets, env=env))
    assert "'127.0.0.1:1'" in line and "does not answer" in line


def test_a_local_engine_never_imports_ray() -> None:
    code = (
        "import sys; from pipeline import embed, featurize, train, tracking; "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    assert EngineConfig().kind == "local"


def _ray_workers(title: bytes) -> list[int]:
    """The pids of this machine's Ray worker processes whose title holds `title` (Ray names a
    worker after the actor it holds or the task it runs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and title in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_a_worker(
    job: subprocess.Popen, title: bytes, out: Path, settle: float, poll: float
) -> None:
    """kill -9 the first Ray worker titled `title` seen (polled every `poll` s) while `job`
    runs, `settle` s after it is seen; nothing is published at `out` before then."""
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        workers = _ray_workers(title)
        if workers:
            time.sleep(settle)
            os.kill(workers[0], signal.SIGKILL)
            assert not out.exists()  # nothing is published before the job's end
            return
        time.sleep(poll)
    raise AssertionError(f"no Ray worker {title.decode()} seen")


def _ended_or_failed_cleanly(job: subprocess.Popen, out: Path) -> bool:
    """Whether `job` succeeded; if Ray gave up instead, it said so in one line (exit 2) and
    left nothing at `out`."""
    _, err = job.communicate(timeout=600)
    if job.returncode != 0:
        assert job.returncode == 2 and "Traceback" not in err, err[-2000:]
        assert not out.exists(), "a failed job left an output"
    return job.returncode == 0


def test_embed_on_ray_equals_local_with_an_actor_killed(small_pipeline, tmp_path) -> None:
    """`small`'s raw data embedded on a local Ray with 2 encoder actors from an empty cache, so
    every text goes through Ray, and one actor killed with kill -9 while it loads or embeds:
    Ray replaces it and the job ends with the local engine's tables, or it fails with one line
    and nothing written, and the rerun gives them."""
    shutil.copytree(small_pipeline.root / "raw", tmp_path / "small" / "raw")
    out = tmp_path / "small" / "embeddings"
    cmd = _command("embed", tmp_path, "engine.kind=ray", "engine.workers=2")
    env = small_pipeline.env | {"RAY_ADDRESS": ""}
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    # 2 s into the model's load or the first call
    _kill_a_worker(job, b"MapBatches(_Encoder)", out, settle=2.0, poll=0.2)
    if not _ended_or_failed_cleanly(job, out):
        rerun = _stage("embed", tmp_path, "engine.kind=ray", "engine.workers=2", env=env)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    for table in ("ads", "queries"):
        local = pl.read_parquet(small_pipeline.root / "embeddings" / f"{table}.parquet")
        assert pl.read_parquet(out / f"{table}.parquet").equals(local), table


def _features_on_ray(small_pipeline, root: Path) -> list[str]:
    """`small`'s raw data and embeddings copied under `root`: the features command on a local
    Ray (the ad text's embeddings need not be made again)."""
    for folder in ("raw", "embeddings"):
        shutil.copytree(small_pipeline.root / folder, root / "small" / folder)
    return _command("features", root, "engine.kind=ray")


def _assert_local_features(out: Path, small_pipeline) -> None:
    local = small_pipeline.root / "features"
    tables = sorted(read_manifest(local)["tables"])
    assert {"train", "interest_events", "ad_text_vectors"} <= set(tables)
    assert sorted(read_manifest(out)["tables"]) == tables
    for name in tables:
        assert (out / f"{name}.parquet").read_bytes() == (local / f"{name}.parquet").read_bytes()
    assert (out / "feature_spec.json").read_text() == (local / "feature_spec.json").read_text()


def test_features_on_ray_equal_the_local_engine(small_pipeline, tmp_path) -> None:
    """Every behaviour key computed as Ray tasks over hash partitions of the key: the feature
    files are byte for byte the local engine's."""
    cmd = _features_on_ray(small_pipeline, tmp_path)
    env = small_pipeline.env | {"RAY_ADDRESS": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hash partitions a key" in proc.stderr
    _assert_local_features(tmp_path / "small" / "features", small_pipeline)


def test_a_killed_features_worker_leaves_no_half_written_output(small_pipeline, tmp_path) -> None:
    """kill -9 of a Ray worker while it computes a key's partition: Ray runs the task again and
    the job ends with the local engine's files, or it fails with nothing written; either way
    the rerun gives the local engine's files."""
    cmd = _features_on_ray(small_pipeline, tmp_path)
    out = tmp_path / "small" / "features"
    env = small_pipeline.env | {"RAY_ADDRESS": ""}
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    _kill_a_worker(job, b"ray::_key_part", out, settle=0.0, poll=0.01)
    if _ended_or_failed_cleanly(job, out):
        _assert_local_features(out, small_pipeline)
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_local_features(out, small_pipeline)


def _train_runs(uri: str) -> dict[str, Run]:
    """The newest train run of each model in the MLflow store at `uri`."""
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, "tags.stage = 'train'", order_by=["attributes.start_time ASC"])
    return {r.data.tags["model"]: r for r in runs}


def _train_on_ray(small_pipeline, tmp_path: Path, *sets: str) -> tuple[str, str]:
    """The train stage on a local Ray over a copy of `small`'s features: (stderr, its store)."""
    for folder in ("raw", "embeddings", "features"):
        shutil.copytree(small_pipeline.root / folder, tmp_path / "data" / "small" / folder)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = small_pipeline.env | {"MLFLOW_TRACKING_URI": uri, "RAY_ADDRESS": ""}
    sets = ("engine.kind=ray", "engine.workers=2", *sets)
    return run_stage("train", PipelineRun(tmp_path / "data", uri, env), *_sets(sets)).stderr, uri


def test_lightgbm_on_ray_is_the_local_fit_while_its_rows_fit_one_worker(
    small_pipeline, tmp_path
) -> None:
    """small's train rows fit one worker: LightGBM trains there as on the local engine, so
    every metric is the local engine's, exactly."""
    err, uri = _train_on_ray(small_pipeline, tmp_path, 'train.models=["lightgbm"]')
    assert "lightgbm: one booster, the local fit, on 1 Ray Train worker(s)" in err
    on_ray = _train_runs(uri)["lightgbm"]
    local = _train_runs(small_pipeline.tracking_uri)["lightgbm"]
    assert on_ray.data.tags["engine"] == "ray"
    got = {k: v for k, v in on_ray.data.metrics.items() if k.startswith(("test_", "valid_"))}
    assert len(got) > 20
    assert got == {k: local.data.metrics[k] for k in got}


def test_train_on_ray_fits_both_models_on_two_workers(small_pipeline, tmp_path) -> None:
    """The neural model on 2 Ray Train workers (DDP, gloo): each step is the local run's batch,
    dropout masks included, so its metrics are the local engine's up to float rounding.
    LightGBM on 2 workers (all 12,946 train rows kept, more than one worker is let hold),
    data-parallel, binned on the same rows as the local engine: its trees differ from the
    local engine's (each worker bags its own rows; the histograms are summed in another
    order), its metrics are close
    (`tests/models/test_lgbm.py` shows the data-parallel path on one machine is the local
    fit)."""
    models = 'train.models=["lightgbm", "neural"]'
    more = ("lightgbm.negative_rate=1.0", "train.max_in_memory_rows=7000")  # > 1 worker holds
    stderr, uri = _train_on_ray(small_pipeline, tmp_path, models, *more)
    assert "neural: DDP on 2 Ray Train worker(s)" in stderr
    assert "lightgbm: data-parallel boosting on 2 Ray Train worker(s)" in stderr
    on_ray, local = _train_runs(uri), _train_runs(small_pipeline.tracking_uri)
    # LightGBM's CVR booster fits small's ~20 train conversions: another bag of rows moves its
    # AUC by points, so its pCTCVR is not compared (the neural's is)
    close = {"neural": ("test_ctcvr_auc",), "lightgbm": ()}
    for kind in ("neural", "lightgbm"):
        assert on_ray[kind].data.tags["engine"] == "ray"
        ray_run, one = on_ray[kind].data.metrics, local[kind].data.metrics
        for metric in ("test_ctr_auc", "valid_ctr_auc", *close[kind]):
            assert abs(ray_run[metric] - one[metric]) <= 0.005, (kind, metric)
        assert abs(ray_run["test_ctr_logloss"] - one["test_ctr_logloss"]) <= 0.002, kind
    # LightGBM's curves (train on rank 0's shard, valid whole) reach MLflow as locally
    client = MlflowClient(tracking_uri=uri)
    assert client.get_metric_history(on_ray["lightgbm"].info.run_id, "curve_ctr_valid_auc")
