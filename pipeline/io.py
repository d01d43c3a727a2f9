"""Files between stages: Parquet tables plus `_manifest.json`, written atomically.

A stage output is a directory of tables (or files) whose manifest is written last; the folder is
published through `pipeline.atomic` (built beside the target, fsynced, swapped in one step).
Readers refuse a directory without a manifest and a Parquet file whose footer does not read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.atomic import MANIFEST, atomic_dir

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message is one line naming the file, column and row count."""


def code_version() -> str:
    """`git describe` of the working tree when available, else the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return version("adctr")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


ROW_GROUP_ROWS = 131_072  # rows per row group of a table written from `Frames`


@dataclass(frozen=True)
class Frames:
    """A table given as frames in row order (`frames()` yields them, each with the table's
    schema), written with pyarrow's Parquet writer in row groups of `ROW_GROUP_ROWS` rows,
    whatever the frames' sizes (the same bytes for any chunking), with dictionary pages: a
    column of few distinct values, such as an ad's coordinates on every impression of the ad,
    is stored once per value plus small codes (polars' writer has no dictionary pages for
    numbers). Lossless: the table reads back equal. Holds at most a row group and a frame."""

    frames: Callable[[], Iterator[pl.DataFrame]]

    def write(self, out: Path) -> int:
        """Write the table to `out`; returns its rows."""
        import pyarrow.parquet as pq

        rows, writer, pending = 0, None, []

        def flush(frame: pl.DataFrame) -> None:
            writer.write_table(frame.to_arrow(), row_group_size=ROW_GROUP_ROWS)

        try:
            for frame in self.frames():
                if writer is None:
                    writer = pq.ParquetWriter(out, frame.to_arrow().schema, compression="zstd")
                rows += frame.height
                pending.append(frame)
                held = sum(f.height for f in pending)
                if held >= ROW_GROUP_ROWS:
                    whole = pl.concat(pending)
                    full = held - held % ROW_GROUP_ROWS
                    flush(whole.head(full))
                    pending = [whole.slice(full)]
            if writer is not None and sum(f.height for f in pending):
                flush(pl.concat(pending))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{out.name}: no frame to take the schema from")
        return rows


Table = pl.DataFrame | pl.LazyFrame | Frames


def schema_of(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, str]:
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return {name: str(dtype) for name, dtype in schema.items()}


def write_tables(
    target: Path,
    tables: Mapping[str, Table],
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write `<name>.parquet` for each table (+ raw `files`) and the manifest, atomically."""
    with atomic_dir(target) as tmp:
        return write_tables_into(
            tmp, tables, config_digest=config_digest, inputs=inputs, extra=extra, files=files
        )


def write_tables_into(
    directory: Path,
    tables: Mapping[str, Table],
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """`write_tables` into a directory the caller publishes (an `atomic_dir` of its own, for
    outputs renamed into place together)."""
    rows: dict[str, int] = {}
    schemas: dict[str, dict[str, str]] = {}
    for name, frame in tables.items():
        out = Path(directory) / f"{name}.parquet"
        if isinstance(frame, Frames):
            rows[name] = frame.write(out)
        elif isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(out, engine="streaming")
            rows[name] = pl.scan_parquet(out).select(pl.len()).collect().item()
        else:
            frame.write_parquet(out)
            rows[name] = frame.height
        schemas[name] = schema_of(pl.scan_parquet(out))
    for name, data in (files or {}).items():
        (Path(directory) / name).write_bytes(data)
    manifest = {
        "tables": {n: {"rows": rows[n], "schema": schemas[n]} for n in tables},
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in (files or {}).items()},
        "inputs": {k: input_digest(Path(p)) for k, p in (inputs or {}).items()},
        "config_hash": config_digest,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def write_file_manifest(
    directory: Path,
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a directory of non-table files (models, reports): every file's sha256."""
    files = {
        str(p.relative_to(directory)): file_digest(p)
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "tables": {},
        "files": files,
        "inputs": {k: input_digest(Path(p)) for k, p in (inputs or {}).items()},
        "config_hash": config_digest,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def input_digest(path: Path) -> str:
    """The digest of an input: its manifest's digest for a stage directory, else the file's."""
    if path.is_dir():
        man = path / MANIFEST
        return file_digest(man) if man.exists() else "missing"
    return file_digest(path) if path.exists() else "missing"


def read_manifest(directory: Path) -> dict[str, Any]:
    man = Path(directory) / MANIFEST
    if not man.is_file():
        raise DataError(
            f"{directory}: no {MANIFEST} (stage output missing or incomplete); "
            "run the stage that writes it first"
        )
    try:
        manifest = json.loads(man.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise DataError(
            f"{man}: unreadable ({one_line(exc)}); rerun the stage that writes it"
        ) from None
    if not isinstance(manifest, dict):
        raise DataError(f"{man}: not a manifest (a JSON object); rerun the stage that writes it")
    return manifest


def one_line(exc: BaseException) -> str:
    """An exception's message as one line (for `error:` lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check_parquet(
    path: Path, rows: int | None = None, hint: str = "rerun the stage that writes it"
) -> None:
    """Raise a DataError naming `path` (and ending in `hint`) unless its Parquet footer reads
    (a truncated or foreign file's does not) and, given `rows`, records that many rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        found = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable Parquet ({one_line(exc)}); {hint}") from None
    if rows is not None and found != rows:
        raise DataError(f"{path}: {found:,} rows where its manifest says {rows:,}; {hint}")


def check_schema(
    frame: pl.DataFrame | pl.LazyFrame, expected: Mapping[str, pl.DataType], where: str
) -> None:
    """Raise a DataError listing every missing column and every column of the wrong type."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    problems = []
    for col, dtype in expected.items():
        if col not in schema:
            problems.append(f"missing column '{col}' ({dtype})")
        elif schema[col] != dtype and not (dtype == pl.List and isinstance(schema[col], pl.List)):
            problems.append(f"column '{col}' is {schema[col]}, expected {dtype}")
    if problems:
        raise DataError(f"{where}: schema mismatch: " + "; ".join(problems))


def read_table(
    directory: Path, name: str, expected: Mapping[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """Scan `<directory>/<name>.parquet` after checking the manifest and (optionally) schema."""
    manifest = read_manifest(directory)
    path = Path(directory) / f"{name}.parquet"
    if name not in manifest.get("tables", {}) or not path.is_file():
        raise DataError(f"{path}: table '{name}' not in {directory / MANIFEST}")
    check_parquet(path, manifest["tables"][name].get("rows"))
    lf = pl.scan_parquet(path)
    if expected:
        check_schema(lf, expected, str(path))
    return lf
