"""Data-parallel fitting of the neural model (`NeuralCTR(data_parallel=True)`): two processes in
a gloo group, each on its shard of the rows, end with the same weights, the numeric statistics
of all the rows, and the one-process fit's predictions up to float rounding (the same batches,
the same dropout masks)."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.neural import NeuralCTR
from models.neural_loop import auc
from tests.models.test_neural import TINY, make_data

ROWS, WORLD = 3001, 2  # rank 0 holds one row more
CONFIG = replace(TINY, dropout=0.3)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str, wrong: bool) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        X, click, conv = make_data(ROWS, seed=1)
        Xv, cv, vv = make_data(600, seed=2)
        rows = np.arange(rank, ROWS, WORLD)
        rows = rows[:-1] if wrong and rank == 1 else rows
        model = NeuralCTR(CONFIG, random_state=3, num_threads=1, data_parallel=True)
        try:
            model.fit(X.take(rows), click[rows], conv[rows], Xv, cv, vv)
        except ValueError as exc:
            Path(out, f"error-{rank}").write_text(str(exc))
            return
        state = {k: v.clone() for k, v in model.module_.state_dict().items()}
        torch.save(
            {"state": state, "pctr": model.predict_proba(Xv)[:, 0], "epoch": model.best_epoch_},
            Path(out, f"rank-{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, wrong: bool = False) -> None:
    mp.start_processes(
        _rank, args=(_port(), str(tmp_path), wrong), nprocs=WORLD, start_method="spawn"
    )


def test_ranks_end_with_the_same_weights_and_a_comparable_fit(tmp_path) -> None:
    _spawn(tmp_path)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in range(WORLD)]
    assert ranks[0]["epoch"] == ranks[1]["epoch"]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    # the numeric statistics are those of every row, not of a shard
    X, click, conv = make_data(ROWS, seed=1)
    whole = NeuralCTR(CONFIG, random_state=3, num_threads=1)
    Xv, cv, vv = make_data(600, seed=2)
    whole.fit(X, click, conv, Xv, cv, vv)
    for buffer in ("numeric.mean", "numeric.std", "numeric.with_indicator"):
        got, want = ranks[0]["state"][buffer], whole.module_.state_dict()[buffer]
        assert torch.allclose(got.float(), want.float(), atol=1e-5), buffer
    # the same batches and steps as one process: its predictions, up to float rounding
    one = whole.predict_proba(Xv)[:, 0]
    assert ranks[0]["epoch"] == whole.best_epoch_
    assert np.abs(ranks[0]["pctr"] - one).max() < 1e-3
    assert abs(auc(cv, ranks[0]["pctr"]) - auc(cv, one)) < 0.005


def test_a_shard_that_is_not_every_worldth_row_is_refused_on_every_rank(tmp_path) -> None:
    _spawn(tmp_path, wrong=True)  # rank 1 misses its last row
    for r in range(WORLD):
        assert "the ranks hold [1501, 1499] rows" in (tmp_path / f"error-{r}").read_text()


def test_data_parallel_needs_a_process_group() -> None:
    X, click, conv = make_data(200)
    with pytest.raises(ValueError, match=r"initialised torch\.distributed"):
        NeuralCTR(TINY, num_threads=1, data_parallel=True).fit(X, click, conv)
