"""Build point-in-time features. Reads `raw/` (and `embeddings/` when text features are on).
Writes `features/{train,valid,test}.parquet` (rows in time order), `feature_spec.json`,
`vocab.parquet`, the item table of the history features (`item_vectors.parquet`, when there are
history columns), and the quarantined impressions (with a `reason`) to
`quarantine/features/impressions.parquet`.

The job reads each input table once (raw ads, users, impressions, behaviour; the ads' and
queries' embeddings) and hands frames and arrays to the pure feature code: quarantine
(`features.quality`), behaviour (`features.behaviour`), text (`features.text_features`).

Every impression is accounted for: rows in = train + valid + test + quarantined.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from features import behaviour as bf
from features import schema, tabular
from features.encoders import encode, fit_vocab
from features.lookup import attach
from features.quality import reason_counts, split_quarantine, unusable
from features.query_features import query_features
from features.spec import FeatureSpec
from features.split import SPLITS, SplitConfig, assign_split, cold_start_flag, new_user_flag
from features.text_columns import ad_vectors, query_vectors
from features.text_features import ROW_COLS, text_features
from pipeline.atomic import scratch_dir
from pipeline.config import Experiment
from pipeline.io import DataError, Frames, read_manifest, read_table, write_tables
from pipeline.lineage import check_lineage
from pipeline.ray_engine import key_features_fn
from pipeline.spill import ColumnSpill, assemble
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)

# rows per chunk of the output put together at once (~170 MB at ~1.3 KB a row); the files
# written are the same for any chunk size
ASSEMBLY_ROWS = 131_072

# what the features manifest (and so the export's) records of the encoder behind the text
ENCODER_FACTS = ("encoder_id", "revision", "encoder", "precision", "variant")


def _has(frame: pl.DataFrame, col: str) -> bool:
    """The impressions carry `col` with at least one non-null value."""
    return col in frame.columns and frame[col].is_not_null().any()


def _contiguous(frame: pl.DataFrame) -> pl.DataFrame:
    """One chunk per column when columns are chunked differently: polars would otherwise copy
    the whole (wide) frame on the next select or filter, once per such call."""
    return frame.rechunk() if len(set(frame.n_chunks("all"))) > 1 else frame


def _time_sorted(frame: pl.DataFrame) -> bool:
    """Rows are in (ts, impression_id) order (the simulator and most logs already are)."""
    ts, ids = pl.col("ts"), pl.col("impression_id")
    later = (ts > ts.shift(1)) | ((ts == ts.shift(1)) & (ids > ids.shift(1)))
    return bool(frame.select(later.slice(1).all()).item())


def _read_raw(layout: Layout) -> dict[str, pl.DataFrame]:
    """The raw tables, each read once (the ads' columns that become features only)."""
    raw = layout.raw
    return {
        "impressions": read_table(raw, "impressions", schema.IMPRESSIONS).collect(),
        "ads": read_table(raw, "ads", schema.ADS).select(tabular.AD_COLUMNS).collect(),
        "users": read_table(raw, "users", schema.USERS).collect(),
        "behaviour": read_table(raw, "behaviour", schema.BEHAVIOUR).collect(),
    }


def _joined(
    imps: pl.DataFrame, ads: pl.DataFrame, users: pl.DataFrame, split: SplitConfig
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Good impressions joined with ad attributes and user profile, with the split column,
    sorted by (ts, impression_id); the quarantined rows (+ reason); split bounds."""
    required = ["ts", *[c for c in ("user_id", "ad_id") if _has(imps, c)]]
    good, bad = split_quarantine(imps.lazy(), ads.lazy(), users.lazy(), required)
    frame = attach(good, ads, "ad_id")
    frame = attach(frame, users.rename({"device": "profile_device"}), "user_id")
    del good
    frame, bounds = assign_split(frame, split)
    inside = frame["split"].is_in(SPLITS).fill_null(False)
    if not inside.all():
        outside = frame.filter(~inside).select(imps.columns)
        reason = "outside_split_period" if bounds["split_mode"] == "time" else "unknown_split"
        outside = outside.with_columns(pl.lit(reason).alias("reason"))
        bad = pl.concat([bad, outside], how="vertical_relaxed")
        frame = frame.filter(inside)
    if not _time_sorted(frame):
        frame = frame.sort(["ts", "impression_id"])
    return _contiguous(frame), bad, bounds


def _with_context(frame: pl.DataFrame) -> pl.DataFrame:
    """Hour, weekday, the cold-start and new-user flags, log price and ad age (eager: keeps
    one chunk per column)."""
    return frame.with_columns(
        *bf.context(),
        cold_start_flag(frame).alias("cold_start"),
        new_user_flag(frame).alias("new_user"),
        pl.col("price").log1p().cast(pl.Float32).alias("log_price"),
        ((pl.col("ts") - pl.col("created_at")).dt.total_hours() / 24.0)
        .cast(pl.Float32)
        .alias("ad_age_days"),
    )


def _text_skip_reason(layout: Layout, raw_manifest: dict[str, Any], text: bool) -> str | None:
    """Why the job builds no text features (the switch, the raw data, the inputs), or None."""
    if not text:
        return "features.text is false"
    if not raw_manifest.get("has_text", True):
        return f"{layout.raw} has no text (has_text false)"
    if not (layout.embeddings / "_manifest.json").is_file():
        return f"no embeddings at {layout.embeddings} (run the embed stage)"
    return None


def _text(
    frame: pl.DataFrame,
    behaviour: pl.DataFrame,
    layout: Layout,
    raw_manifest: dict[str, Any],
    exp: Experiment,
    spill: ColumnSpill,
) -> tuple[list[dict[str, Any]], dict[str, pl.DataFrame]]:
    """Reads the embeddings (once each) and spills the text feature columns (row-aligned with
    `frame`, one family at a time); returns their spec entries and their lookup tables by name
    (`text_features`); ([], {}) when there are none (logged)."""
    reason = _text_skip_reason(layout, raw_manifest, exp.features.text)
    if reason:
        log.info("no text features: %s", reason)
        return [], {}
    # embed runs first; a tuned encoder's embeddings also name the encoder they came from
    upstream = {"raw": layout.raw}
    if "encoder" in (read_manifest(layout.embeddings).get("inputs") or {}):
        upstream["encoder"] = layout.encoder
    check_lineage(layout.embeddings, upstream, "make features")
    try:
        ads = ad_vectors(read_table(layout.embeddings, "ads").collect())
    except ValueError as exc:
        raise DataError(f"{layout.embeddings}/ads.parquet: {exc}") from exc
    queries = query_vectors(read_table(layout.embeddings, "queries").collect())
    count = itertools.count()

    def emit(block: pl.DataFrame) -> None:
        spill.add(f"text-{next(count)}", block)

    _, spec, tables = text_features(
        frame, ads, queries, behaviour, exp.features, exp.data.seed, emit=emit
    )
    return spec, tables


def _query_skip_reason(layout: Layout, exp: Experiment) -> str | None:
    """Why the job builds no query-understanding features, or None."""
    if not exp.features.query_understanding:
        return "features.query_understanding is false"
    if not (layout.queries / "_manifest.json").is_file():
        return f"no understood queries at {layout.queries} (the understand stage did not run)"
    return None


def _query(
    frame: pl.DataFrame, behaviour: pl.DataFrame, layout: Layout, exp: Experiment
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The query-understanding columns (row-aligned with `frame`) and their spec entries; (an
    empty frame, []) when there are none (logged)."""
    reason = _query_skip_reason(layout, exp)
    if reason is None and not _has(frame, "query"):
        reason = "the impressions carry no query"
    if reason:
        log.info("no query-understanding features: %s", reason)
        return pl.DataFrame(), []
    check_lineage(layout.queries, {"raw": layout.raw}, "make features")
    queries = read_table(layout.queries, "queries").collect()
    keywords = read_table(layout.raw, "ads", schema.ADS).select("ad_id", "keywords").collect()
    searches = behaviour.filter(pl.col("event") == "search").select("user_id", "ts", "query")
    out, spec = query_features(frame, queries, searches, keywords)
    train = frame["split"].eq("train")
    kept = [f for f in spec if out.filter(train)[f["name"]].is_not_null().any()]
    if len(kept) < len(spec):  # e.g. no price cap in any train query: nothing to learn from
        log.info("query features without a train value dropped: %s",
                 sorted({f["name"] for f in spec} - {f["name"] for f in kept}))  # fmt: skip
        out, spec = out.select(f["name"] for f in kept), kept
    log.info("query-understanding features: %d columns", len(spec))
    return out, spec


def _encoding(
    frame: pl.DataFrame, beh_names: list[str], spill: ColumnSpill
) -> tuple[list[pl.Expr], list[str], list[str], pl.DataFrame]:
    """Fit vocabularies on train; the expressions adding the `c_*` codes and `n_*` numerics
    (of `frame` or the spilled columns), the categorical and numeric sources kept (what train
    has values of), and the vocabulary."""
    names = frame.columns + spill.columns
    train = frame.lazy().filter(pl.col("split") == "train")  # lazy: only the needed columns
    candidates = tabular.categorical_sources(names)
    vocabs = [v for v in (fit_vocab(train, c) for c in candidates) if v.height > 0]
    categorical = [v["column"][0] for v in vocabs]
    vocab = pl.concat(vocabs) if vocabs else pl.DataFrame()
    numeric = tabular.numeric_sources(names, beh_names)
    base = [c for c in numeric if c in frame.columns]
    has_values = {}
    if base:
        has_values = train.select(pl.col(base).is_not_null().any()).collect().row(0, named=True)
    numeric = [c for c in numeric if (has_values[c] if c in has_values else spill.trained(c))]
    exprs = [encode(c, vocab, f"c_{c}", frame.schema[c]) for c in categorical]
    exprs += [pl.col(c).cast(pl.Float32).alias(f"n_{c}") for c in numeric]
    return exprs, categorical, numeric, vocab


def _split_frames(parts: list[Path], split: str) -> Frames:
    """One split's rows of the assembled parts, a part at a time (dictionary pages: `Frames`)."""

    def frames() -> Iterator[pl.DataFrame]:
        for part in parts:
            yield pl.scan_parquet(part).filter(pl.col("split") == split).collect()

    return Frames(frames)


def _inputs(layout: Layout, text: bool, query: bool) -> dict[str, Path]:
    """The upstream folders the features manifest names: the text features name the embeddings
    (and so the encoder) they came from, the query features the understood queries."""
    inputs = {"raw": layout.raw}
    if text:
        inputs["embeddings"] = layout.embeddings
    if query:
        inputs["queries"] = layout.queries
    return inputs


def _encoder_facts(layout: Layout) -> dict[str, Any]:
    emb = read_manifest(layout.embeddings)
    return {k: emb.get(k) for k in ENCODER_FACTS}


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("features", output=str(layout.features))
    raw_manifest = read_manifest(layout.raw)
    has_conv = bool(raw_manifest.get("has_conversion", True))
    raw = _read_raw(layout)
    rows_in = raw["impressions"].height
    frame, bad, bounds = _joined(raw.pop("impressions"), raw["ads"], raw["users"], exp.split)
    problem = unusable(frame, bad, rows_in, exp.features.max_quarantine_fraction)
    if problem:
        raise DataError(f"{layout.raw / 'impressions.parquet'}: {problem}")
    train = frame.lazy().filter(pl.col("split") == "train").select("click", "conversion")
    if has_conv and not train.select(pl.col("conversion").fill_null(0).any()).collect().item():
        log.warning("no conversion in train: the data is treated as click-only (no CVR model)")
        has_conv = False
    priors = bf.fit_priors(train)
    log.info("%s impressions to featurise, %s quarantined", f"{frame.height:,}", f"{bad.height:,}")
    behaviour = raw["behaviour"]
    with scratch_dir(layout.features) as work:
        spill = ColumnSpill(work, frame.height, ASSEMBLY_ROWS, frame["split"].eq("train"))
        with key_features_fn(exp.engine) as key_fn:  # here, or on Ray's hash partitions
            blocks = bf.behaviour_blocks(
                frame, behaviour.lazy(), exp.features, priors, has_conv, key_fn
            )
            for name, block in blocks:  # one key's columns in memory at a time
                spill.add(f"behaviour-{name}", block)
        beh_names = spill.columns
        del blocks, train
        frame = _with_context(frame)
        query, query_spec = _query(frame, behaviour, layout, exp)
        spill.add("query", query)
        del query
        exprs, categorical, numeric, vocab = _encoding(frame, beh_names, spill)
        meta = [c for c in tabular.META if c in frame.columns]
        rows = {s: int(frame["split"].eq(s).sum()) for s in SPLITS}
        # the joined impressions go to the spill too: the text phase, the stage's largest,
        # holds only the columns it reads
        text_rows = frame.select(c for c in ROW_COLS if c in frame.columns)
        needed = [*meta, *categorical, *(c for c in numeric if c in frame.columns)]
        spill.add("impressions", frame.select(list(dict.fromkeys(needed))))
        del frame, raw
        text_spec, lookups = _text(text_rows, behaviour, layout, raw_manifest, exp, spill)
        del text_rows, behaviour
        spec_features = tabular.spec_entries(categorical, numeric, vocab, set(beh_names))
        spec_features += text_spec + query_spec
        columns = meta + [f["name"] for f in spec_features]
        log.info("assembling %s rows x %s columns", f"{spill.height:,}", len(columns))
        parts = assemble(spill, exprs, columns, work)
        spec = {
            "features": spec_features,
            "labels": ["click", "conversion"] if has_conv else ["click"],
            "meta": meta,
            "has_conversion": has_conv,
            "has_text": bool(text_spec),
            "priors": {"ctr": priors.ctr, "cvr": priors.cvr},
            "split": bounds,
            "rows": rows,
        }
        reasons = reason_counts(bad)
        write_tables(layout.features_quarantine, {"impressions": bad}, config_digest=exp.digest())
        inputs = _inputs(layout, bool(text_spec), bool(query_spec))
        shape = f"{sum(rows.values()):,} rows x {len(columns)} columns"
        log.info("writing %s to %s", shape, layout.features)
        write_tables(
            layout.features,
            {s: _split_frames(parts, s) for s in SPLITS} | lookups | {"vocab": vocab},
            config_digest=exp.digest(),
            inputs=inputs,
            files={layout.feature_spec.name: FeatureSpec.from_dict(spec).to_json().encode()},
            extra={
                "quarantined": bad.height,
                "quarantine_reasons": reasons,
                "rows_in": rows_in,
                "encoder": _encoder_facts(layout) if text_spec else None,
            },
        )
    summary.rows_in = rows_in
    summary.rows_out = sum(rows.values())
    summary.rows_quarantined = bad.height
    if summary.rows_in != summary.rows_out + summary.rows_quarantined:
        raise RuntimeError(f"row accounting broken: {summary.line()}")
    summary.notes = dict(rows)
    summary.notes["features"] = len(spec_features)
    if reasons:
        summary.notes["quarantine"] = ",".join(f"{k}:{v}" for k, v in reasons.items())
    return summary
