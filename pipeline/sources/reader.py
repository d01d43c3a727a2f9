"""Delimited text files -> all-String frames, with row-level rejection into a quarantine.

Policy for malformed input (the same for every adapter):
- file missing, empty (0 bytes or no data rows), or a header that is not the expected one:
  a one-line `DataError` naming the file; nothing is written.
- a row with the wrong number of fields, a non-numeric value in a numeric column, a label that
  is not 0/1, an id of the wrong shape, or invalid UTF-8 bytes: the row is moved to the
  quarantine with a reason and its line number, and counted (rows_in = rows_out + quarantined).
- too many rejected rows in one file (more than `ingest.max_bad_fraction`, or any row with
  `ingest.on_bad_rows = "error"`) means the format is wrong, not a few bad rows: a `DataError`
  naming the file, each reason (column) and its row count; nothing is written.

Line numbers count the header and every non-blank line (blank lines are not records).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.io import DataError
from pipeline.sources.ingest_config import IngestConfig

LINE = "_line"
QUARANTINE: dict[str, pl.DataType] = {
    "file": pl.String,
    "line": pl.Int64,
    "reason": pl.String,
    "text": pl.String,
}
Check = tuple[pl.Expr, str]  # (row is bad, reason)


@dataclass(frozen=True)
class Table:
    """The accepted rows of one input file (String columns + `_line`) and its rejected rows."""

    path: Path
    frame: pl.DataFrame
    bad: pl.DataFrame
    separator: str = ","

    @property
    def rows_in(self) -> int:
        return self.frame.height + self.bad.height

    @property
    def columns(self) -> list[str]:
        return [c for c in self.frame.columns if c != LINE]

    def reject(self, checks: Sequence[Check]) -> Table:
        """Move rows failing any check to `bad` (first failing reason wins)."""
        if not checks or self.frame.is_empty():
            return self
        reason = pl.coalesce(
            [pl.when(bad.fill_null(True)).then(pl.lit(why)) for bad, why in checks]
        )
        marked = self.frame.with_columns(reason.alias("_reason"))
        moved = marked.filter(pl.col("_reason").is_not_null()).select(
            file=pl.lit(str(self.path)),
            line=pl.col(LINE),
            reason=pl.col("_reason"),
            text=pl.concat_str(self.columns, separator=self.separator, ignore_nulls=True),
        )
        kept = marked.filter(pl.col("_reason").is_null()).drop("_reason")
        return replace(self, frame=kept, bad=pl.concat([self.bad, moved.cast(QUARANTINE)]))


def to_int(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().str.to_integer(strict=False)


def to_float(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().cast(pl.Float64, strict=False)


def _filled(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().str.len_bytes() > 0


def integer_check(col: str) -> Check:
    """Empty is missing (null); anything else must be an integer."""
    return _filled(col) & to_int(col).is_null(), f"non-numeric value in column '{col}'"


def float_check(col: str) -> Check:
    """Empty is missing (null); anything else must be a finite number."""
    value = to_float(col)
    return (
        _filled(col) & (value.is_null() | ~value.is_finite()),
        f"non-numeric value in column '{col}'",
    )


def binary_check(col: str) -> Check:
    return ~pl.col(col).str.strip_chars().is_in(["0", "1"]), f"column '{col}' is not 0/1"


def pattern_check(col: str, regex: str, what: str) -> Check:
    return ~pl.col(col).str.contains(regex), f"column '{col}' is not {what}"


def checked(table: Table, checks: Sequence[Check], cfg: IngestConfig) -> Table:
    """Apply the checks, then stop with a one-line DataError if the file is mostly bad."""
    table = table.reject(checks)
    n_bad = table.bad.height
    if n_bad == 0:
        return table
    too_many = n_bad > cfg.max_bad_fraction * table.rows_in
    if cfg.on_bad_rows == "error" or too_many:
        groups = (
            table.bad.group_by("reason")
            .agg(n=pl.len(), first=pl.col("line").min())
            .sort(["n", "first"], descending=[True, False])
        )
        detail = "; ".join(
            f"{n:,} x {why} (first at line {first})" for why, n, first in groups.head(5).iter_rows()
        )
        rule = (
            "ingest.on_bad_rows = 'error'"
            if cfg.on_bad_rows == "error"
            else f"more than ingest.max_bad_fraction = {cfg.max_bad_fraction:g}"
        )
        raise DataError(
            f"{table.path}: {n_bad:,} of {table.rows_in:,} rows malformed ({rule}): {detail}"
        )
    return table


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        try:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        line = fh.readline()
    return line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")


def header_fields(path: Path, separator: str, quote_char: str | None = None) -> list[str]:
    fields = _first_line(path).split(separator)
    return [f.strip().strip(quote_char) if quote_char else f.strip() for f in fields]


def read_delimited(
    path: Path,
    *,
    separator: str,
    columns: Sequence[str] | None = None,
    header: bool | None = False,
    quote_char: str | None = None,
    max_rows: int = 0,
) -> Table:
    """Read every field as String. `header`: True (names from the first line, or checked against
    `columns`), False (no header: `columns` required) or None (header iff the first line equals
    `columns`). `max_rows` > 0 keeps the first that many accepted rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes, 0 rows)")
    first = header_fields(path, separator, quote_char)
    if header is None:
        header = columns is not None and [f.lower() for f in first] == [c.lower() for c in columns]
    if header and columns is not None and first != list(columns):
        raise DataError(
            f"{path}: header has {len(first)} columns {first[:4]}..., "
            f"expected {len(columns)} columns {list(columns)[:4]}..."
        )
    if not header and columns is None:
        raise ValueError("read_delimited: a file without a header needs `columns`")
    names = list(columns) if columns is not None else first
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate column names in the header: {names}")

    valid = _is_utf8(path)
    source = (
        str(path)
        if valid
        else io.BytesIO(path.read_bytes().decode("utf-8", errors="replace").encode())
    )
    rejected: list[tuple[int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        rejected.append((row.number, row.text))
        return "skip"

    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(
                use_threads=False, column_names=names, skip_rows=int(header), block_size=1 << 22
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=separator,
                quote_char=quote_char or False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        batches, n_read = [], 0
        for batch in reader:
            batches.append(batch)
            n_read += batch.num_rows
            if max_rows and n_read >= max_rows:
                break
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise DataError(f"{path}: empty file (0 data rows)") from None
        raise DataError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None

    good = pl.from_arrow(pa.Table.from_batches(batches, schema=reader.schema))
    assert isinstance(good, pl.DataFrame)
    table = _number_lines(path, good, rejected, int(header), len(names), separator, max_rows)
    if table.rows_in == 0:
        raise DataError(f"{path}: empty file (0 data rows)")
    if not valid:
        table = table.reject(
            [
                (
                    pl.col(c).str.contains("\ufffd", literal=True),
                    f"invalid UTF-8 bytes in column '{c}'",
                )
                for c in names
            ]
        )
    return table


def _number_lines(
    path: Path,
    good: pl.DataFrame,
    rejected: list[tuple[int, str]],
    offset: int,
    n_columns: int,
    separator: str,
    max_rows: int,
) -> Table:
    """Give accepted rows their line numbers (the ones the parser did not reject)."""
    bad_lines = pl.Series(LINE, [n for n, _ in rejected], dtype=pl.Int64)
    total = good.height + len(rejected)
    all_lines = pl.int_range(offset + 1, offset + total + 1, dtype=pl.Int64, eager=True)
    lines = all_lines.filter(~all_lines.is_in(bad_lines.implode())).alias(LINE)
    frame = good.with_columns(lines)
    bad = pl.DataFrame(
        {
            "file": [str(path)] * len(rejected),
            "line": bad_lines,
            "reason": [f"wrong column count (expected {n_columns})"] * len(rejected),
            "text": [t for _, t in rejected],
        },
        schema=QUARANTINE,
    )
    if max_rows and frame.height > max_rows:
        frame = frame.head(max_rows)
        bad = bad.filter(pl.col("line") < frame[LINE][-1])
    return Table(path=path, frame=frame, bad=bad, separator=separator)


def from_frame(path: Path, frame: pl.DataFrame, max_rows: int = 0) -> Table:
    """A Parquet (already typed) table as all-String columns, so the same checks apply."""
    if frame.height == 0:
        raise DataError(f"{path}: empty file (0 data rows)")
    if max_rows:
        frame = frame.head(max_rows)
    frame = frame.with_columns(pl.all().cast(pl.String)).with_row_index(LINE, offset=1)
    frame = frame.with_columns(pl.col(LINE).cast(pl.Int64)).select(pl.exclude(LINE), LINE)
    return Table(path=path, frame=frame, bad=pl.DataFrame(schema=QUARANTINE))
