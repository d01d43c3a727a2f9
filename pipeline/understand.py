"""Query understanding. Reads `raw/` (the queries of the log) and the labelled queries (the
dataset's `raw/query_annotations.parquet`, or `understand.annotations`). Fine-tunes the encoder
with an intent and a sentiment head (sequence classification) and a BIO head for BRAND /
PRODUCT / PRICE spans (token classification) on the train-period annotations, selects on a
held-out part of them, reports on another, and labels every distinct query of the log.

Writes `queries/`: `queries.parquet` (per query, keyed by its text hash: intent probabilities,
sentiment, the extracted brand, product and price cap), `model/` (the tagger) and a manifest
with the metrics and the settings key; one MLflow run (tag stage=understand) with per-class
precision / recall / F1, entity span F1 per type, sentiment accuracy, the two baselines
(TF-IDF + logistic regression for intent and sentiment, a gazetteer of the ads' brands and
keywords for entities) and the confusion-matrix plots. Annotation rows it cannot use go to
`quarantine/understand/`. Without annotations the stage is skipped with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import polars as pl

from features import schema
from features.text import DEFAULT_ENCODER, bf16_native, model_revision, resolve_model_dir, text_key
from models.mentions import replace_mentions
from models.spans import ENTITY_TYPES, Annotated, price_value, understanding_scores
from models.understand_config import UnderstandConfig
from pipeline.atomic import atomic_dir
from pipeline.config import Experiment
from pipeline.io import (
    DataError,
    file_digest,
    input_digest,
    one_line,
    read_manifest,
    read_table,
    write_tables,
    write_tables_into,
)
from pipeline.stage import Layout, StageSummary
from pipeline.understand_data import annotations_path, log_queries, read_annotations

log = logging.getLogger(__name__)

TAGGER_KIND = "query_tagger"  # the `model` tag of the MLflow run
TABLE = "queries"


def _bf16(cfg: UnderstandConfig) -> bool:
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and bf16_native())


def base_dir(cfg: UnderstandConfig) -> Any:
    try:
        return resolve_model_dir(cfg.base or DEFAULT_ENCODER)
    except FileNotFoundError as exc:
        raise DataError(f"understand.base: {exc}") from None


def settings_key(exp: Experiment) -> str | None:
    """What the labels depend on: [understand], [split], the seed, the base model, the raw
    data and the annotation file. None when there are no annotations."""
    path = annotations_path(exp)
    if path is None:
        return None
    blob = {k: v for k, v in exp.flat().items()
            if k.startswith(("understand.", "split.")) or k == "data.seed"}  # fmt: skip
    blob |= {
        "base_revision": model_revision(base_dir(exp.understand)),
        "raw": input_digest(Layout.of(exp).raw),
        "annotations": file_digest(path) if path.is_file() else "missing",
        "bf16": _bf16(exp.understand),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def skip_reason(exp: Experiment) -> str | None:
    """Why the stage does nothing (no annotations, or `queries/` is up to date), or None."""
    if annotations_path(exp) is None:
        return (f"no query annotations ({Layout.of(exp).raw} has none and "
                "understand.annotations is not set): no query-understanding features")  # fmt: skip
    queries = Layout.of(exp).queries
    manifest = queries / "_manifest.json"
    if manifest.is_file() and read_manifest(queries).get("settings_key") == settings_key(exp):
        return "up to date"
    return None


def run_if_needed(exp: Experiment) -> StageSummary:
    """`make features`: label the queries unless there are no annotations or `queries/` is up
    to date; one line saying why not."""
    reason = skip_reason(exp)
    if reason is None:
        return run(exp)
    summary = StageSummary("understand", output=str(Layout.of(exp).queries))
    summary.notes = {"skipped": reason}
    return summary


def _annotated(frame: pl.DataFrame, intents: list[str], sentiments: list[str]) -> Annotated:
    """Class indices of the labels (-1: a sentiment not labelled or not in the train set)."""
    return Annotated(
        texts=frame["query"].to_list(),
        intent=_index(frame["intent"], intents),
        sentiment=_index(frame["sentiment"], sentiments),
        spans=[[(s["start"], s["end"], s["label"]) for s in row] for row in frame["spans"]],
    )


def _index(values: pl.Series | list, labels: list[str]) -> np.ndarray:
    at = {v: k for k, v in enumerate(labels)}
    return np.array([at.get(v, -1) for v in values], dtype=np.int64)


def _scores(
    prefix: str, truth: Annotated, found: tuple, labels: tuple[list[str], list[str]]
) -> tuple[dict[str, float], dict]:
    """Flat metrics of predicted (intent indices, sentiment indices or None, spans or None)
    against `truth`: `<prefix>intent_macro_f1`, `<prefix>intent_<label>_{precision,recall,f1}`,
    `<prefix>sentiment_accuracy`, `<prefix>entity_<TYPE>_f1`, `<prefix>entity_micro_f1`; and
    the detailed scores (`models.spans.understanding_scores`)."""
    intents, sentiments = labels
    intent, sentiment, spans = found
    none = np.full(len(truth), -1)
    got = understanding_scores(
        (truth.intent, intent),
        (none, none) if sentiment is None else (truth.sentiment, sentiment),
        (truth.spans, spans if spans is not None else [[] for _ in truth.texts]),
        intents, sentiments, ENTITY_TYPES,
    )  # fmt: skip
    out = {f"{prefix}intent_macro_f1": got["intent_macro_f1"],
           f"{prefix}intent_accuracy": got["intent_accuracy"]}  # fmt: skip
    for label, values in got["intent"]["per_class"].items():
        out |= {f"{prefix}intent_{label}_{k}": values[k] for k in ("precision", "recall", "f1")}
    if sentiment is not None and got["sentiment"]["n"]:
        out[f"{prefix}sentiment_accuracy"] = got["sentiment_accuracy"]
    if spans is not None:
        for kind, values in got["entities"].items():
            if values["support"] or kind == "micro":
                out[f"{prefix}entity_{kind}_f1"] = values["f1"]
    return out, got


def _baselines(
    train: pl.DataFrame, test: Annotated, catalog: tuple[list[str], list[str]], labels
) -> dict:
    """The baselines' test metrics: TF-IDF + logistic regression for intent (and sentiment),
    a gazetteer of the ads' brands and keyword phrases for the spans."""
    from models.query_baselines import Gazetteer, TfidfClassifier

    intents, sentiments = labels
    intent = TfidfClassifier().fit(train["query"].to_list(), train["intent"].to_list())
    sentiment = None
    labelled = train.filter(pl.col("sentiment").is_in(sentiments))
    if sentiments and labelled["sentiment"].n_unique() >= 2:
        model = TfidfClassifier().fit(labelled["query"].to_list(), labelled["sentiment"].to_list())
        sentiment = _index(list(model.predict(test.texts)), sentiments)
    spans = Gazetteer(*catalog).predict(test.texts)
    pred = _index(list(intent.predict(test.texts)), intents)
    tfidf = _scores("tfidf_test_", test, (pred, sentiment, None), labels)[0]
    gazetteer = _scores("gazetteer_test_", test, (pred, None, spans), labels)[0]
    return tfidf | {k: v for k, v in gazetteer.items() if "_entity_" in k}


def _catalog(ads: pl.DataFrame) -> tuple[list[str], list[str]]:
    """The ads' brand names and keyword phrases (sorted, distinct): the gazetteer's lists and
    the names the tagger's mention replacement draws from."""
    brands = ads["brand"].drop_nulls().unique().sort().to_list() if "brand" in ads.columns else []
    return brands, ads["keywords"].explode().drop_nulls().unique().sort().to_list()


def _entity(text: str, spans: list, label: str) -> str | None:
    found = [text[s:e] for s, e, lab in spans if lab == label]
    return found[0] if found else None


def label_table(
    texts: list[str], out: Any, intents: list[str], sentiments: list[str]
) -> pl.DataFrame:
    """One row per query: its key, intent (argmax) and probabilities, sentiment, entities."""
    cols: dict[str, Any] = {"query_key": [text_key(t) for t in texts], "query": texts}
    cols["intent"] = [intents[k] for k in np.argmax(out.intent_probs, axis=1)]
    for k, name in enumerate(intents):
        cols[f"p_intent_{name}"] = out.intent_probs[:, k]
    if sentiments:
        cols["sentiment"] = [sentiments[k] for k in np.argmax(out.sentiment_probs, axis=1)]
        for k, name in enumerate(sentiments):
            cols[f"p_sentiment_{name}"] = out.sentiment_probs[:, k]
    cols["brand"] = [_entity(t, s, "BRAND") for t, s in zip(texts, out.spans, strict=True)]
    cols["product"] = [_entity(t, s, "PRODUCT") for t, s in zip(texts, out.spans, strict=True)]
    prices = [_entity(t, s, "PRICE") for t, s in zip(texts, out.spans, strict=True)]
    cols["price_cap"] = pl.Series([price_value(p) if p else None for p in prices], dtype=pl.Float64)
    return pl.DataFrame(cols)


def run(exp: Experiment) -> StageSummary:
    from models.neural_loop import torch_settings
    from models.query_tagger import QueryTagger

    layout = Layout.of(exp)
    cfg = exp.understand
    summary = StageSummary("understand", output=str(layout.queries))
    path = annotations_path(exp)
    if path is None:
        summary.notes = {"skipped": skip_reason(exp)}
        return summary
    seed = cfg.seed if cfg.seed is not None else exp.data.seed
    queries = log_queries(exp)
    data = read_annotations(exp, path, queries, seed)
    train = data.parts["train"]
    intents = sorted(train["intent"].unique().to_list())
    sentiments = sorted(train["sentiment"].drop_nulls().unique().to_list())
    held = {p: data.parts[p].filter(pl.col("intent").is_in(intents)) for p in ("valid", "test")}
    unknown = sum(data.parts[p].height - held[p].height for p in held)
    counts = {"annotations": data.rows_in, "train": train.height, "valid": held["valid"].height,
              "test": held["test"].height, "later_period": data.later,
              "quarantined": data.bad.height, "unknown_intent_held_out": unknown,
              "log_queries": queries.height}  # fmt: skip
    log.info("understand on %s: %s", path, json.dumps(counts))
    base = base_dir(cfg)
    ads = read_table(layout.raw, "ads", schema.ADS).select("brand", "keywords").collect()
    with torch_settings(exp.engine.num_threads):
        try:
            tagger = QueryTagger(cfg, base, intents, sentiments, seed, bf16=_bf16(cfg))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"understand.base {base}: not a usable encoder ({one_line(exc)})"
            ) from None
        manifest = _fit_and_publish(
            exp, tagger, data, held, queries, ads, counts, (intents, sentiments)
        )
    m = manifest["metrics"]
    summary.rows_in = data.rows_in
    summary.rows_out = train.height + held["valid"].height + held["test"].height
    summary.rows_quarantined = data.bad.height
    summary.notes = {
        "queries": manifest["tables"][TABLE]["rows"],
        "intent_macro_f1": _change(m, "tfidf", "intent_macro_f1"),
        "entity_micro_f1": _change(m, "gazetteer", "entity_micro_f1"),
    }
    return summary


def _change(metrics: dict[str, float], baseline: str, key: str) -> str:
    """`<baseline's>-><tagger's>` test figure (for the summary line)."""
    return (
        f"{metrics.get(f'{baseline}_test_{key}', float('nan')):.3f}->{metrics[f'test_{key}']:.3f}"
    )


def _fit_and_publish(exp, tagger, data, held, queries, ads, counts, labels) -> dict[str, Any]:
    import mlflow

    from pipeline import plots
    from pipeline.tracking import log_metrics, stage_run

    layout = Layout.of(exp)
    intents, sentiments = labels
    valid = _annotated(held["valid"], intents, sentiments)

    def on_check(check: dict) -> None:
        log.info("step %d: loss %.4f valid score %.4f (%.0fs)", check["step"], check["loss"],
                 check["valid_score"], check["seconds"])  # fmt: skip
        log_metrics({k: v for k, v in check.items() if k != "step"}, step=check["step"])

    with stage_run(exp, "understand", model=TAGGER_KIND) as active:
        mlflow.log_params(counts)
        catalog = _catalog(ads)
        train = replace_mentions(
            _annotated(data.parts["train"], intents, sentiments),
            {"BRAND": catalog[0], "PRODUCT": catalog[1]}, exp.understand.mention_copies,
            tagger.seed,
        )  # fmt: skip
        mlflow.log_param("train_with_variants", len(train))
        started = time.perf_counter()
        checks = tagger.fit(train, valid, on_check)
        fit_s = time.perf_counter() - started
        test = _annotated(held["test"], intents, sentiments)
        found = tagger.predict(test.texts)
        pred = (found.intent_probs.argmax(1), found.sentiment_probs.argmax(1) if sentiments
                else None, found.spans)  # fmt: skip
        metrics, report = _scores("test_", test, pred, labels)
        metrics |= _baselines(data.parts["train"], test, catalog, labels)
        truth = _truth(layout, held["test"])
        if truth is not None:  # the simulator's noise-free labels of the same test queries
            truth_set = _annotated(truth, intents, sentiments)
            metrics |= _scores("truth_test_", truth_set, pred, labels)[0]
        started = time.perf_counter()
        texts = queries["query"].to_list()
        table = label_table(texts, tagger.predict(texts), intents, sentiments)
        label_s = time.perf_counter() - started
        metrics |= {"fit_seconds": fit_s, "label_seconds": label_s}
        log_metrics(metrics)
        confusion = report["intent"]["confusion"]
        figure = plots.confusion(confusion, intents, "Intent on the test annotations")
        mlflow.log_figure(figure, "confusion_intent.png")
        mlflow.log_dict({**report, "checks": checks}, "understand_report.json")
        write_tables(
            layout.understand_quarantine, {"annotations": data.bad}, config_digest=exp.digest()
        )
        with atomic_dir(layout.queries) as tmp:
            tagger.save(tmp / layout.queries_model.name)
            manifest = write_tables_into(
                tmp, {TABLE: table}, config_digest=exp.digest(), inputs={"raw": layout.raw},
                extra={"annotations": str(data.path), "settings_key": settings_key(exp),
                       "intents": intents, "sentiments": sentiments, "counts": counts,
                       "metrics": metrics, "confusion": confusion, "checks": checks,
                       "best_step": _best_step(checks),
                       "run_id": active.info.run_id},
            )  # fmt: skip
            mlflow.log_dict(manifest, "queries_manifest.json")
    return manifest


def _best_step(checks: list[dict]) -> int:
    return max(checks, key=lambda c: (c["valid_score"], -c["step"]))["step"] if checks else 0


def _truth(layout: Layout, test: pl.DataFrame) -> pl.DataFrame | None:
    """The oracle's labels of the test queries (simulated data only), in the same order."""
    path = layout.oracle / "queries.parquet"
    if not path.is_file():
        return None
    truth = pl.read_parquet(path).select("query", "intent", "sentiment", "spans")
    truth = test.select("query").join(truth, on="query", how="left", maintain_order="left")
    return truth if truth["intent"].null_count() == 0 else None
