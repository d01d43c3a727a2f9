"""How `ingest` reads an external dataset: the `[ingest]` section (see the README, "Your own
data"). Here, beside the adapters, and free of imports from the rest of the pipeline, so that
`pipeline.config` can build it without importing a source."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sources import SPLIT_MODES


@dataclass(frozen=True)
class IngestConfig:
    """How `ingest` reads an external dataset (see pipeline/sources and the README).

    The first block applies to every adapter; the rest is the column mapping of the generic
    CSV/Parquet adapter ("" = the dataset has no such column).
    """

    split_mode: str = "auto"  # auto | time | files | random (auto: own files > time > random)
    max_rows: int = 0  # read at most this many rows of each input file (0 = all)
    on_bad_rows: str = "quarantine"  # quarantine | error
    max_bad_fraction: float = 0.01  # more malformed rows than this in one file -> error
    only_with_text: bool = False  # mind: keep only shown items whose text is in news.tsv
    format: str = "csv"  # csv | tsv | parquet
    separator: str = ""  # "" = "," for csv, tab for tsv
    has_header: bool = True
    column_names: tuple[str, ...] = ()  # names of the columns of a file without a header
    quote_char: str = '"'  # "" = no quoting
    label_click: str = "click"
    label_conversion: str = ""
    timestamp: str = ""
    timestamp_format: str = ""  # "" = ISO 8601 | unix | unix_ms | a strptime format
    split_column: str = ""  # a column holding train | valid | test
    user_id: str = ""
    ad_id: str = ""
    advertiser_id: str = ""
    category: str = ""
    title: str = ""
    description: str = ""
    placement: str = ""
    position: str = ""
    device: str = ""
    query: str = ""
    cost: str = ""
    categorical_columns: tuple[str, ...] = ()
    numeric_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:

        choices = {
            "split_mode": SPLIT_MODES,
            "on_bad_rows": ("quarantine", "error"),
            "format": ("csv", "tsv", "parquet"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        fmt = self.timestamp_format
        if fmt not in ("", "unix", "unix_ms") and "%" not in fmt:
            raise ValueError(
                "timestamp_format must be '' (ISO 8601), unix, unix_ms or a strptime format "
                f"such as %Y-%m-%d %H:%M, got {fmt!r}"
            )
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must lie in [0, 1], got {self.max_bad_fraction}")
        if self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 (0 = all), got {self.max_rows}")
        for name in ("separator", "quote_char"):  # polars reads a one-byte separator / quote
            if len(getattr(self, name).encode()) > 1:
                raise ValueError(
                    f"{name} must be one ASCII character or '', got {getattr(self, name)!r}"
                )
