"""The Ray engine (`engine.kind = "ray"`): the connection to a cluster, and the steps of the
stages that run on it. Each step runs the same pure function as the local engine, only spread
over Ray: the text encoder of `features.text` on an actor pool (embed), and each behaviour key's
`features.behaviour.key_features` as Ray tasks over hash partitions of the key (features), so
that every event of a key value is in one task and the point-in-time windows stay exact. The
outputs are the local engine's.

Ray is an extra (`pip install -e '.[ray]'`, which `make <verb> ENGINE=ray` runs); without it,
or without a reachable cluster, a stage stops with one line.

The cluster is `engine.address`, else `RAY_ADDRESS`, else a Ray started for the job on this
machine with `engine.num_threads` CPUs and no dashboard, stopped when the job ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features import behaviour as bf
from features.events import Timeline
from pipeline.config import EngineConfig
from pipeline.io import DataError, one_line

log = logging.getLogger(__name__)

INSTALL_HINT = "`make <verb> ENGINE=ray` installs it (or pip install -e '.[ray]')"
CONNECT_TIMEOUT_S = 5.0  # Ray itself retries an unreachable head for minutes
TEXTS_PER_TASK = 4096  # texts one actor call embeds (then split into the encoder's batches)
# the stages with a Ray implementation; the others run in the job's own process
RAY_STAGES = frozenset({"embed", "features", "train"})
# the train stage's models that train on Ray (Ray Train, `pipeline.ray_train`); the others
# train in the job's process
RAY_MODELS = frozenset({"neural", "lightgbm"})


def stage_engine(cfg: EngineConfig, stage: str, model: str | None = None) -> str:
    """Where `stage` (for the train stage: `model`, when given) runs under `cfg`: "ray" or
    "local" (the MLflow runs' `engine` tag)."""
    on_ray = cfg.kind == "ray" and stage in RAY_STAGES
    if stage == "train" and model is not None:
        on_ray = on_ray and model in RAY_MODELS
    return "ray" if on_ray else "local"


def preflight(cfg: EngineConfig, stage: str) -> None:
    """Before `stage` starts: with kind `ray`, Ray is installed and the cluster named answers
    (a DataError line else), or one warning where the stage has no Ray version."""
    if cfg.kind != "ray":
        return
    if stage_engine(cfg, stage) == "local":
        log.warning("engine.kind = 'ray': the %s stage has no Ray version yet, runs here", stage)
        return
    if stage == "train":
        log.warning(
            "engine.kind = 'ray': the %s model(s) train on Ray, the others here",
            ", ".join(sorted(RAY_MODELS)),
        )
    import_ray()
    _check_reachable(cluster_address(cfg))


def import_ray() -> Any:
    """The `ray` module, or a DataError line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DataError(f"engine.kind = 'ray' but Ray is not installed: {INSTALL_HINT}") from None
    return ray


def cluster_address(cfg: EngineConfig) -> str:
    """The cluster to join: `engine.address`, else `RAY_ADDRESS`; "" starts a local Ray."""
    return cfg.address or os.environ.get("RAY_ADDRESS", "")


def _head(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port` or `ray://host:port` address; None for `auto` / `local`,
    which Ray resolves itself."""
    rest = address.removeprefix("ray://")
    if rest in ("auto", "local") or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        raise DataError(f"engine.address {address!r}: not host:port or ray://host:port")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    head = _head(address)
    if head is None:
        return
    try:
        socket.create_connection(head, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise DataError(
            f"Ray cluster {address!r} (engine.address or RAY_ADDRESS) does not answer: "
            f"{one_line(exc)}; start one with `ray start --head` or unset the address"
        ) from None


@contextlib.contextmanager
def ray_session(cfg: EngineConfig) -> Iterator[Any]:
    """Connected to the engine's cluster for the block (`ray`); a Ray started here is stopped
    at the end, one already connected in this process is left as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = cluster_address(cfg)
    quiet = {"log_to_driver": False, "configure_logging": False}
    try:
        if address:
            _check_reachable(address)
            ray.init(address=address, **quiet)
        else:
            ray.init(
                num_cpus=cfg.num_threads,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DataError(f"Ray cluster {address or '(local)'}: {one_line(exc)}") from None
    log.info("ray: %s CPUs (%s)", ray.cluster_resources().get("CPU", 0), address or "local")
    try:
        yield ray
    finally:
        ray.shutdown()


def actor_share(total_cpus: float, workers: int) -> tuple[float, int]:
    """(CPUs reserved per actor, torch threads per actor) for `workers` actors on a cluster of
    `total_cpus`: half a CPU is left for Ray Data's own tasks (a pool that takes every CPU
    never gets its input), and each actor runs as many threads as its share rounds to."""
    share = max(0.1, (total_cpus - 0.5) / workers)
    return share, max(1, int(share + 0.5))


class _Encoder:
    """A Ray actor holding one loaded text encoder."""

    def __init__(self, cfg: Any, model_dir: str, revision: str, threads: int) -> None:
        from features.text import TextEncoder

        self.encoder = TextEncoder(cfg, Path(model_dir), revision=revision, num_threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.encoder.encode(list(batch["text"]), progress=False)
        return {"row": batch["row"], "vec": out.vectors, "truncated": out.truncated}


def encode_on_ray(
    texts: Sequence[str],
    cfg: Any,
    model_dir: Path,
    revision: str,
    dim: int,
    engine: EngineConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, truncated) of `texts`, in their order, embedded by `engine.workers` Ray actors
    with `features.text.TextEncoder`; a text's vector does not depend on what it is batched
    with, so they equal the local engine's."""
    import pyarrow as pa

    with ray_session(engine) as ray:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        share, threads = actor_share(ray.cluster_resources().get("CPU", 1.0), engine.workers)
        # texts of similar length in one call: the encoder pads fewer short batches
        order = np.argsort(np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
        table = pa.table({"row": order, "text": pa.array([texts[i] for i in order])})
        log.info(
            "embedding %s texts on %d Ray actor(s), %.2f CPUs and %d threads each",
            f"{len(texts):,}",
            engine.workers,
            share,
            threads,
        )
        # one block per actor call, so that every actor has work (one block is one task)
        blocks = [table.slice(i, TEXTS_PER_TASK) for i in range(0, len(texts), TEXTS_PER_TASK)]
        encoded = ray.data.from_arrow(blocks).map_batches(
            _Encoder,
            fn_constructor_kwargs={
                "cfg": cfg,
                "model_dir": str(model_dir),
                "revision": revision,
                "threads": threads,
            },
            batch_size=TEXTS_PER_TASK,
            batch_format="numpy",
            concurrency=engine.workers,
            num_cpus=share,
        )
        vectors = np.zeros((len(texts), dim), np.float32)
        truncated = np.zeros(len(texts), bool)
        try:  # Ray replaces a lost actor and retries its call; past its retries it raises
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                vectors[batch["row"]] = batch["vec"]
                truncated[batch["row"]] = batch["truncated"]
        except ray.exceptions.RayError as exc:
            raise DataError(f"Ray: the embedding job failed ({one_line(exc)}); rerun") from None
    return vectors, truncated


def _key_part(
    frame: pl.DataFrame,
    events: pl.DataFrame,
    before: dict[int, pl.Series],
    times: pl.Series,
    *args: Any,
) -> pl.DataFrame:
    """A Ray task: `key_features` of one hash partition (`args`: the key and its settings)."""
    return bf.key_features(frame, Timeline(events, times, before), *args)


@contextlib.contextmanager
def key_features_fn(cfg: EngineConfig) -> Iterator[bf.KeyFeatures]:
    """The function the features stage computes each behaviour key's columns with: under the
    Ray engine, `key_features` run as Ray tasks, one per hash partition of the key (as many
    partitions as the cluster has CPUs, at least 2), within one Ray session for the block; else
    `key_features` itself. Ray retries a task whose worker died; past its retries the stage
    stops with one line (and, its output being written at the end, writes nothing)."""
    if stage_engine(cfg, "features") == "local":
        yield bf.key_features
        return
    with ray_session(cfg) as ray:
        task = ray.remote(num_cpus=1)(_key_part)
        parts = max(2, int(ray.cluster_resources().get("CPU", 1)))
        log.info("behaviour keys on Ray: %d hash partitions a key", parts)
        put: dict[str, Any] = {}  # the timeline's times (every key's), in Ray's store once

        def run(frame: pl.DataFrame, tl: Timeline, name: str, *args: Any) -> pl.DataFrame:
            if put.get("times") is not tl.times:
                put.update(times=tl.times, ref=ray.put(tl.times))
            times = put["ref"]
            rows, refs = [], []
            for part_rows, part, sub in bf.key_partitions(frame, tl, name, parts):
                rows.append(part_rows)
                refs.append(task.remote(part, sub.events, sub.before, times, name, *args))
            try:
                blocks = ray.get(refs)
            except ray.exceptions.RayError as exc:
                raise DataError(
                    f"Ray: the behaviour features of key {name!r} failed ({one_line(exc)}); rerun"
                ) from None
            return bf.from_partitions(list(zip(rows, blocks, strict=True)))

        yield run
