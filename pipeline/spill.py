"""Row-aligned column spills: how the features stage builds an output larger than memory.

Each family of feature columns (one behaviour key, the text columns, the query columns) is
computed over the whole log at once, since its point-in-time state needs every earlier event,
and is written straight to a scratch Parquet file in row groups of `chunk_rows` rows. Only the
family being computed is held in memory. The joined impressions themselves (ids, labels, the
tabular columns) are spilled the same way before the text columns are built. The output is then
put together one row chunk at a time: row group i of every spill file, side by side
(`ColumnSpill.chunks`). The rows are in time order, so a chunk is a stretch of time.

The scratch folder is the caller's (`pipeline.atomic.scratch_dir`): removed when the stage ends,
and by the next run when a killed one left it behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq


class ColumnSpill:
    """Blocks of columns row-aligned with one frame of `height` rows, kept on disk.

    `train` (Boolean, `height` rows) marks the train rows: `trained(column)` says whether the
    column has a value on any of them (a feature without one is left out).
    """

    def __init__(self, directory: Path, height: int, chunk_rows: int, train: pl.Series) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if train.len() != height:
            raise ValueError(f"train mask has {train.len()} rows, the frame {height}")
        self.directory = Path(directory)
        self.height = height
        self.chunk_rows = chunk_rows
        self._train = train
        self._files: list[Path] = []
        self._trained: dict[str, bool] = {}

    @property
    def columns(self) -> list[str]:
        """Every spilled column, in the order added."""
        return list(self._trained)

    def trained(self, column: str) -> bool:
        return self._trained[column]

    def add(self, name: str, block: pl.DataFrame) -> None:
        """Write `block` (row-aligned with the frame) to `<name>.parquet` in the scratch
        folder; it can be dropped from memory after."""
        if block.width == 0:
            return
        if block.height != self.height:
            raise ValueError(f"spill {name!r}: {block.height} rows, the frame has {self.height}")
        clash = sorted(set(block.columns) & set(self._trained))
        if clash:
            raise ValueError(f"spill {name!r}: columns already spilled: {clash}")
        # a mask, not a filter: a filtered copy of a wide block would double it in memory
        train = pl.lit(self._train)
        has = block.select((pl.all().is_not_null() & train).any()).row(0, named=True)
        path = self.directory / f"{len(self._files):03d}-{name}.parquet"
        pq.write_table(block.to_arrow(), path, row_group_size=self.chunk_rows, compression="lz4")
        self._files.append(path)
        self._trained |= {c: bool(v) for c, v in has.items()}

    def chunks(self) -> Iterator[tuple[int, pl.DataFrame]]:
        """(first row, every spilled column of the rows [first row, + chunk_rows)) in row
        order; one row group of each file is read at a time."""
        readers = [pq.ParquetFile(p) for p in self._files]
        for i, start in enumerate(range(0, self.height, self.chunk_rows)):
            parts = [pl.from_arrow(r.read_row_group(i)) for r in readers]
            yield start, pl.concat(parts, how="horizontal") if parts else pl.DataFrame()


def assemble(
    spill: ColumnSpill, exprs: list[pl.Expr], columns: list[str], directory: Path
) -> list[Path]:
    """Write the output one row chunk at a time: the spilled columns of the chunk, with `exprs`
    added and `columns` kept, to `part-<n>.parquet` files in `directory` (returned in row
    order). Their concatenation is the whole output, whatever the chunk size."""
    parts = []
    for n, (_, chunk) in enumerate(spill.chunks()):
        path = Path(directory) / f"part-{n:06d}.parquet"
        chunk.with_columns(exprs).select(columns).write_parquet(path)
        parts.append(path)
    return parts
