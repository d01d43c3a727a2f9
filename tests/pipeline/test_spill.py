"""The features stage's output put together in row chunks (`pipeline.spill`): spilled columns
come back as they went in, the written feature files do not depend on the chunk size, and the
scratch folder never outlives the stage."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import featurize
from pipeline.atomic import scratch_dir
from pipeline.config import load_experiment
from pipeline.spill import ColumnSpill, assemble
from pipeline.stage import Layout

N = 1000


def _block(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((N, 3)).astype(np.float32)
    ints = pl.Series(rng.integers(0, 9, N), dtype=pl.Int32)
    return pl.DataFrame(
        {
            f"vec{seed}": vec,
            f"int{seed}": ints.set(pl.Series(rng.random(N) < 0.2), None),
            f"text{seed}": [f"q{i % 7}" if i % 3 else None for i in range(N)],
            f"ts{seed}": [datetime(2026, 1, 1) + timedelta(minutes=i) for i in range(N)],
        }
    )


def _train(rows: int = N) -> pl.Series:
    return pl.Series([i < rows // 2 for i in range(rows)])


@pytest.mark.parametrize("chunk", [1, 7, 256, N, 5 * N])
def test_chunks_give_back_the_spilled_columns(tmp_path, chunk) -> None:
    spill = ColumnSpill(tmp_path, N, chunk, _train())
    blocks = [_block(1), _block(2)]
    for i, block in enumerate(blocks):
        spill.add(f"b{i}", block)
    got = list(spill.chunks())
    assert [start for start, _ in got] == list(range(0, N, chunk))
    assert all(part.height == min(chunk, N - start) for start, part in got)
    whole = pl.concat([part for _, part in got])
    assert whole.equals(pl.concat(blocks, how="horizontal"))
    assert spill.columns == blocks[0].columns + blocks[1].columns


def test_trained_says_whether_train_rows_have_a_value(tmp_path) -> None:
    spill = ColumnSpill(tmp_path, 4, 2, pl.Series([True, True, False, False]))
    spill.add("b", pl.DataFrame({"x": [None, 1.0, 2.0, 3.0], "y": [None, None, 1.0, 2.0]}))
    assert spill.trained("x") and not spill.trained("y")


def test_a_block_of_the_wrong_height_or_a_repeated_column_is_refused(tmp_path) -> None:
    spill = ColumnSpill(tmp_path, N, 100, _train())
    spill.add("b", _block(1))
    with pytest.raises(ValueError, match="999 rows, the frame has 1000"):
        spill.add("short", _block(2).head(N - 1))
    with pytest.raises(ValueError, match="already spilled"):
        spill.add("again", _block(1).select("int1"))
    spill.add("empty", pl.DataFrame())  # nothing to spill: no file
    assert len(list(tmp_path.iterdir())) == 1


def test_assemble_adds_expressions_and_keeps_the_columns(tmp_path) -> None:
    frame = pl.DataFrame({"row": range(N), "split": ["a", "b"] * (N // 2)})
    spill = ColumnSpill(tmp_path, N, 300, _train())
    spill.add("frame", frame)
    spill.add("b", _block(1))
    exprs = [(pl.col("int1") + pl.col("row")).alias("sum")]
    parts = assemble(spill, exprs, ["row", "sum", "vec1"], tmp_path)
    assert [p.name for p in parts] == [f"part-{i:06d}.parquet" for i in range(4)]
    got = pl.read_parquet(parts)
    want = frame.hstack(_block(1)).with_columns(exprs).select("row", "sum", "vec1")
    assert got.equals(want)


# ------------------------------------------------------------- the features stage, any chunk size


def _digests(folder: Path) -> dict[str, str]:
    files = [*sorted(folder.glob("*.parquet")), folder / "feature_spec.json"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_feature_files_do_not_depend_on_the_chunk_size(
    small_pipeline, tmp_path, monkeypatch
) -> None:
    """`small`'s features (behaviour and text columns) built from a copy of its inputs
    in one chunk and in chunks of 1,000 rows: every file byte-identical, and equal frames to
    the pipeline's own."""
    for folder in ("raw", "embeddings", "queries"):  # queries: where `understand` ran
        if (small_pipeline.root / folder).is_dir():
            shutil.copytree(small_pipeline.root / folder, tmp_path / "small" / folder)
    exp = load_experiment("small", [f"data.root={tmp_path}"])
    out = Layout.of(exp).features
    monkeypatch.setattr(featurize, "ASSEMBLY_ROWS", 1 << 30)
    featurize.run(exp)
    whole = _digests(out)
    monkeypatch.setattr(featurize, "ASSEMBLY_ROWS", 1000)
    featurize.run(exp)
    assert _digests(out) == whole
    assert len(whole) == 9  # 3 splits, vocab, 4 vector tables (2: the interest store), the spec
    for name in ("train", "test"):
        theirs = pl.read_parquet(small_pipeline.root / "features" / f"{name}.parquet")
        assert pl.read_parquet(out / f"{name}.parquet").equals(theirs)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".work-")]


# ----------------------------------------------------------------------------- the scratch folder


def test_the_scratch_folder_is_removed_when_the_block_fails(tmp_path) -> None:
    with pytest.raises(RuntimeError), scratch_dir(tmp_path / "features") as work:
        (work / "part.parquet").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_runs_scratch_folder_is_removed_by_the_next(tmp_path) -> None:
    target = tmp_path / "features"
    code = (
        "import os, signal; from pathlib import Path; from pipeline.atomic import scratch_dir\n"
        f"with scratch_dir(Path({str(target)!r})) as w:\n"
        "    (w / 'part.parquet').write_bytes(b'x'); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, env=os.environ | {"PYTHONPATH": "."})
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".work-features-")
    with scratch_dir(target) as work:
        assert {p.name for p in tmp_path.iterdir()} == {work.name}
    assert list(tmp_path.iterdir()) == []
