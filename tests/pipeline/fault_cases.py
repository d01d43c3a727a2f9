"""The bad-input corpus of tests/pipeline/test_faults.py: one `Case` per malformed input.

Each case starts from a valid generic click log (`base_log`: users, ads, hourly timestamps over
10 days, ~10% clicks, conversions only after a click) and the generic adapter mapping in
`BASE_TOML`, and changes one thing: the file's bytes, the experiment TOML, a `--set` override,
the experiment name, or a stage output between two stages. It names the stages to run and the
outcomes that count as handled (any one of them):

- `Error(stages, match)`: the first stage that does not exit 0 is one of `stages`; it exits 2,
  stderr's last line starts with `error:` and matches the regex `match` (the file, column or
  key it names), and that stage published no output.
- `Quarantine(stages)`: every stage exits 0; the summary line of each of `stages` shows
  rows in = out + quarantined, and at least one quarantined > 0.
- `Ok(stage)`: every stage exits 0 and `stage` published its output (with a manifest).

No outcome allows a `Traceback` on stderr. A case the current code does not handle carries
`today`: what happens instead (the test is a strict xfail until a fix makes it pass).
"""

from __future__ import annotations

import io
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from harness import REPO

LOG = "log.csv"
BASE_TOML: dict[str, Any] = {
    "data": {"source": "generic", "path": LOG},
    "ingest": {
        "label_click": "click",
        "label_conversion": "conversion",
        "timestamp": "ts",
        "user_id": "user",
        "ad_id": "ad",
        "placement": "placement",
        "position": "position",
        "device": "device",
        "numeric_columns": ["price"],
    },
    "split": {"train_days": 6, "valid_days": 2, "test_days": 2},  # the log spans 10 days
    "features": {"text": False},
    "train": {"models": ["lightgbm"]},
    "lightgbm": {"num_boost_round": 20},
}
TRAIN = ("raw", "features", "train")
EVALUATE = (*TRAIN, "evaluate")
EXPORT = (*EVALUATE, "export")


def base_log(n: int = 2_000, seed: int = 13) -> pl.DataFrame:
    """A valid click log, every column a String as in a CSV, sorted by time."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 3, 1)
    minutes = np.sort(rng.integers(0, 10 * 24 * 60, n))
    placement = rng.choice(["top", "side", "feed"], n)
    position = rng.integers(1, 5, n)
    # clicks that the placement and position predict (a model can beat the base rate)
    p_click = 0.03 + 0.15 * (placement == "top") + 0.08 * (position == 1)
    click = rng.random(n) < p_click
    conversion = click & (rng.random(n) < 0.3)
    frame = pl.DataFrame(
        {
            "ts": [(start + timedelta(minutes=int(m))).isoformat() for m in minutes],
            "user": [f"u{u}" for u in rng.integers(1, 201, n)],
            "ad": [f"a{a}" for a in rng.integers(1, 51, n)],
            "placement": placement,
            "position": position,
            "device": rng.choice(["mobile", "desktop"], n),
            "price": np.round(rng.gamma(2.0, 10.0, n), 2),
            "click": click.astype(int),
            "conversion": conversion.astype(int),
        }
    )
    return frame.with_columns(pl.all().cast(pl.String))


# ---------------------------------------------------------------- building inputs

Files = Callable[[pl.DataFrame], dict[str, bytes]]


def csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv().encode()


def parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def typed(frame: pl.DataFrame) -> pl.DataFrame:
    """The log with numbers as numbers (what a Parquet export of it would hold)."""
    ints = [pl.col(c).cast(pl.Int64) for c in ("position", "click", "conversion")]
    return frame.with_columns(*ints, pl.col("price").cast(pl.Float64))


def edit(frame: pl.DataFrame, rows: list[int], **values: str | None) -> pl.DataFrame:
    """The log with `column = value` on the given row numbers (0-based)."""
    hit = pl.int_range(pl.len()).is_in(rows)
    return frame.with_columns(
        pl.when(hit).then(pl.lit(v, pl.String)).otherwise(pl.col(c)).alias(c)
        for c, v in values.items()
    )


def log_csv(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Files:
    return lambda base: {LOG: csv(change(base))}


def log_bytes(change: Callable[[bytes], bytes]) -> Files:
    return lambda base: {LOG: change(csv(base))}


def lines(data: bytes, change: Callable[[int, bytes], bytes]) -> bytes:
    """Rewrite each line (the header is line 0) with `change(number, line)`."""
    rows = data.rstrip(b"\n").split(b"\n")
    return b"\n".join(change(i, row) for i, row in enumerate(rows)) + b"\n"


def ragged(every: int) -> Files:
    """Every `every`-th data line gets an extra field or loses its last one."""

    def change(i: int, row: bytes) -> bytes:
        if i == 0 or i % every:
            return row
        return row + b",extra" if (i // every) % 2 else row.rsplit(b",", 1)[0]

    return log_bytes(lambda data: lines(data, change))


def latin1_rows(i: int, row: bytes) -> bytes:
    """Lines 100, 700 and 1300: a user id with a Latin-1 byte ("\\xe9u12"), not UTF-8."""
    return row.replace(b",u", b",\xe9u", 1) if i in (100, 700, 1300) else row


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 3 // 5]


def not_utf8_toml(text: bytes) -> bytes:
    return b"# r\xe9sum\xe9 of my click log (Latin-1)\n" + text


def folder(base: pl.DataFrame) -> dict[str, bytes]:
    """A folder of logs without a train file, given as data.path."""
    return {"logs/clicks.csv": csv(base)}


def duplicated(base: pl.DataFrame) -> pl.DataFrame:
    """20 rows logged twice (exact copies appended)."""
    return pl.concat([base, base[100:2000:95]])


def all_labels(click: str, conversion: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda base: base.with_columns(click=pl.lit(click), conversion=pl.lit(conversion))


def truncate_raw_impressions(exp_dir: Path) -> None:
    path = exp_dir / "raw" / "impressions.parquet"
    path.write_bytes(truncated(path.read_bytes()))


def small_market() -> dict[str, Any]:
    """The `small` experiment's own TOML (the simulated marketplace)."""
    return tomllib.loads((REPO / "experiments" / "small.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- TOML


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in per section; a None value deletes the key or section."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            for k, v in value.items():
                if v is None:
                    out[key].pop(k, None)
                else:
                    out[key][k] = v
        else:
            out[key] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def toml_text(doc: Mapping[str, Any]) -> str:
    """Top-level keys first (a scalar where a section belongs, e.g. `market = 5`), then tables."""
    out = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    for name, table in doc.items():
        if isinstance(table, Mapping):
            out += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(out).lstrip("\n") + "\n"


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Error:
    stages: tuple[str, ...]
    match: str


@dataclass(frozen=True)
class Quarantine:
    stages: tuple[str, ...]


@dataclass(frozen=True)
class Ok:
    stage: str


Outcome = Error | Quarantine | Ok


@dataclass(frozen=True)
class Case:
    name: str
    expect: tuple[Outcome, ...]
    stages: tuple[str, ...] = ("raw",)
    files: Files = field(default=lambda base: {LOG: csv(base)})
    config: Mapping[str, Any] = field(default_factory=dict)  # merged into BASE_TOML
    base_toml: Callable[[], Mapping[str, Any]] = lambda: BASE_TOML
    toml_bytes: Callable[[bytes], bytes] | None = None
    sets: tuple[str, ...] = ()
    experiment: str = ""  # default: the case name
    tamper: Callable[[Path], None] | None = None  # on data/<experiment>/ before the last stage
    must_not_exist: tuple[str, ...] = ()  # paths relative to the working directory
    today: str = ""  # what the current code does instead; non-empty = strict xfail

    def toml(self) -> bytes:
        text = toml_text(merged(self.base_toml(), self.config)).encode()
        return self.toml_bytes(text) if self.toml_bytes else text


def err(*stages: str, match: str) -> tuple[Outcome, ...]:
    return (Error(stages, match),)


SPLIT_EMPTY = r"(?i)valid|test|split"
ONE_USER_OR_AD = r"user|ad_id|\bads?\b"
SPLIT_HANDLED = (Error(("features",), SPLIT_EMPTY), Ok("train"))
CASES: list[Case] = [
    # --- the file itself
    Case("empty_file", err("raw", match="log.csv"), files=lambda base: {LOG: b""}),
    Case("header_only", err("raw", match="log.csv"), files=log_csv(lambda b: b.clear())),
    Case("ragged_rows_few", (Quarantine(("raw",)),), files=ragged(every=250)),
    Case("ragged_rows_many", err("raw", match="log.csv"), files=ragged(every=10)),
    Case("non_utf8_rows", (Quarantine(("raw",)),),
         files=log_bytes(lambda data: lines(data, latin1_rows))),
    Case("folder_without_train_file", err("raw", match="logs"), files=folder,
         config={"data": {"path": "logs"}}),
    Case("data_path_missing_file", err("raw", match="nope.csv"),
         config={"data": {"path": "nope.csv"}}),
    Case("data_path_unset", err("raw", match="data.path"), config={"data": {"path": None}}),
    Case("parquet_truncated", err("raw", match="log.parquet"),
         files=lambda base: {"log.parquet": truncated(parquet(typed(base)))},
         config={"data": {"path": "log.parquet"}, "ingest": {"format": "parquet"}}),
    Case("csv_read_as_parquet", err("raw", match="log.csv"),
         config={"ingest": {"format": "parquet"}}),
    Case("parquet_null_and_nan", (Quarantine(("raw",)),),
         files=lambda b: {"log.parquet": parquet(typed(edit(b, [5, 50], click=None, price="nan")))},
         config={"data": {"path": "log.parquet"}, "ingest": {"format": "parquet"}}),
    # --- values
    Case("label_yes_few", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(b, [3, 300, 1500], click="yes"))),
    Case("label_yes_all", err("raw", match="'click'"),
         files=log_csv(lambda b: b.with_columns(click=pl.when(pl.col("click") == "1")
                                                .then(pl.lit("yes")).otherwise(pl.lit("no"))))),
    Case("label_column_missing", err("raw", match="click"),
         files=log_csv(lambda b: b.drop("click"))),
    Case("labels_outside_0_1", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(edit(b, [10, 20, 30], click="2"), [40, 50], click="-1"))),
    Case("conversion_without_click", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(b, [11, 111, 1111], click="0", conversion="1"))),
    Case("nan_inf_numeric", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(edit(edit(b, [7, 8], price="nan"), [9, 10], price="inf"),
                                      [12], price="-inf"))),
    Case("position_wrong_type_few", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(b, [2, 200], position="top"))),
    Case("duplicated_rows", (Quarantine(("raw", "features")),), stages=("raw", "features"),
         files=log_csv(duplicated)),
    Case("timestamps_unparseable_few", (Quarantine(("raw",)),),
         files=log_csv(lambda b: edit(b, [1, 1001], ts="yesterday"))),
    Case("timestamps_unparseable_all", err("raw", match="'ts'"),
         files=log_csv(lambda b: b.with_columns(ts=pl.lit("last tuesday")))),
    # --- data that parses but cannot train a model
    Case("all_zero_labels", err("features", "train", match="click"), stages=TRAIN,
         files=log_csv(all_labels("0", "0"))),
    Case("all_one_labels", err("features", "train", match="click"), stages=TRAIN,
         files=log_csv(all_labels("1", "0"))),
    Case("single_user_single_ad", (Error(("features", "train"), ONE_USER_OR_AD), Ok("train")),
         stages=TRAIN, files=log_csv(lambda b: b.with_columns(user=pl.lit("u1"), ad=pl.lit("a1")))),
    Case("one_1970_timestamp", SPLIT_HANDLED, stages=TRAIN,
         files=log_csv(lambda b: edit(b, [0], ts="1970-01-01T00:00:00"))),
    Case("identical_timestamps", SPLIT_HANDLED, stages=TRAIN,
         files=log_csv(lambda b: b.with_columns(ts=pl.lit("2024-03-01T12:00:00")))),
    Case("valid_test_empty_time_split", SPLIT_HANDLED, stages=TRAIN, config={"split": None}),
    Case("truncated_raw_table", err("features", match="impressions.parquet"),
         stages=("raw", "features"), tamper=truncate_raw_impressions),
    # --- the experiment config
    Case("toml_not_utf8", err("raw", match=r"toml_not_utf8\.toml"), toml_bytes=not_utf8_toml),
    Case("toml_syntax_error", err("raw", match=r"toml_syntax_error\.toml"),
         toml_bytes=lambda text: text + b"\n[lightgbm\nnum_leaves = \n"),
    Case("market_is_a_number", err("raw", match="market"), config={"market": 5}),
    Case("market_is_a_number_with_set", err("raw", match="market"), config={"market": 5},
         sets=("market.n_ads=400",)),
    Case("unknown_section", err("raw", match="nosuch"), config={"nosuch": {"a": 1}}),
    Case("unknown_key", err("raw", match="ingest.label_clik"),
         config={"ingest": {"label_clik": "click"}}),
    Case("wrong_type_epochs", err("raw", match="neural.epochs"),
         config={"neural": {"epochs": "3"}}),
    Case("market_start_not_a_date", err("raw", match="market.start"), base_toml=small_market,
         sets=("market.start=notadate",)),
    Case("train_models_xgboost", err(*TRAIN, match="xgboost"), stages=TRAIN,
         sets=('train.models=["xgboost"]',)),
    Case("lightgbm_num_leaves_negative", err(*TRAIN, match="num_leaves"), stages=TRAIN,
         sets=("lightgbm.num_leaves=-1",)),
    Case("champion_mode_maybe", err(*EVALUATE, match="champion_mode"), stages=EVALUATE,
         sets=("evaluate.champion_mode=maybe",)),
    Case("champion_metric_nosuch", err(*EVALUATE, match="champion_metric|nosuch"),
         stages=EVALUATE, sets=("evaluate.champion_metric=nosuch",)),
    Case("experiment_name_escapes_data", err("raw", match=r"\.\./\.\./tmp/x"),
         experiment="../../tmp/x", must_not_exist=("../tmp/x",)),
    # --- valid logs: the base log itself (the control for every case above), and a log
    # without conversions, which is a valid log too: export must publish
    Case("valid_log_control", (Ok("export"),), stages=EXPORT),
    # clicks that nothing predicts: no model beats the base rate, so none is crowned and the
    # export refuses
    Case("clicks_are_noise", err("export", match="champion.*base rate"), stages=EXPORT,
         files=log_csv(lambda b: b.with_columns(click=pl.Series(
             (np.random.default_rng(5).random(b.height) < 0.1).astype(int)).cast(pl.String),
             conversion=pl.lit("0")))),
    # a conversion column that is never 1: click-only data, not a CVR model of NaN
    Case("conversions_all_zero", (Ok("export"),), stages=EXPORT,
         files=log_csv(lambda b: b.with_columns(conversion=pl.lit("0")))),
    Case("click_only_export", (Ok("export"),), stages=EXPORT,
         config={"ingest": {"label_conversion": None}}),
    Case("click_only_export_without_ad_id", (Ok("export"),), stages=EXPORT,
         config={"ingest": {"label_conversion": None, "ad_id": None}}),
]  # fmt: skip
