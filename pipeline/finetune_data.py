"""The fine-tuning stage's inputs: the raw log cut by the split into the train pairs and the
valid / test retrieval tasks, every text in one table (`pipeline.finetune`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from features import schema
from features.split import assign_split
from features.text import ad_texts
from features.text_pairs import (
    active_ads,
    history_pairs,
    history_targets,
    query_pairs,
    self_pairs,
    unclicked_pairs,
)
from models.finetune_config import FinetuneConfig
from models.text_tuner import PairSet, RetrievalTask
from pipeline.config import Experiment
from pipeline.io import read_table
from pipeline.stage import Layout

log = logging.getLogger(__name__)

MAX_EVAL = 20_000  # retrieval instances per split (a seeded sample beyond this)


def _cap(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= n else frame.sample(n, seed=seed).sort(frame.columns[:2])


def read_inputs(exp: Experiment) -> dict[str, Any]:
    """The raw frames cut by the split: impressions per part, the behaviour before the end of
    test with the users' click histories, the ads' texts and the period bounds."""
    raw = Layout.of(exp).raw
    imp = read_table(raw, "impressions", schema.IMPRESSIONS)
    given = ["split"] if "split" in imp.collect_schema().names() else []
    imp = imp.select("ts", "user_id", "ad_id", "query", "click", *given)
    frame, bounds = assign_split(imp.collect(), exp.split)
    cuts = {k: datetime.fromisoformat(bounds[k]) for k in ("valid_start", "test_start", "test_end")
            if k in bounds}  # fmt: skip
    ads = read_table(raw, "ads", schema.ADS).collect()
    texts = ad_texts(ads).join(ads.select("ad_id", "created_at"), on="ad_id", how="left")
    parts = {s: frame.filter(pl.col("split") == s) for s in ("train", "valid", "test")}
    histories, targets = None, {}
    if "valid_start" in cuts:
        beh = read_table(raw, "behaviour", schema.BEHAVIOUR)
        beh = beh.select("user_id", "ts", "event", "ad_id").filter(pl.col("ts") < cuts["test_end"])
        beh = beh.collect()
        length = exp.finetune.history_length
        train_beh = beh.filter(pl.col("ts") < cuts["valid_start"])
        histories = history_pairs(train_beh, length)
        for split in ("valid", "test"):  # the impression clicks, each with its user's past
            clicks = parts[split].filter(pl.col("click") == 1).drop_nulls(["user_id", "ad_id"])
            clicks = _cap(clicks.sort("ts", "user_id", "ad_id"), MAX_EVAL, exp.data.seed)
            targets[split] = history_targets(beh, clicks, length)
    else:
        log.info("the split is given, not by time: no history pairs (no cut for behaviour)")
    return {
        "parts": parts,
        "histories": histories,
        "targets": targets,
        "ads": texts,
        "cuts": cuts,
    }


class TextTable:
    """Distinct texts and their ids (the order they were first added)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def add(self, text: str) -> int:
        return self.ids.setdefault(text, len(self.ids))

    @property
    def texts(self) -> list[str]:
        return list(self.ids)


def build_tasks(
    inputs: dict[str, Any], cfg: FinetuneConfig, seed: int
) -> tuple[list[str], list[PairSet], dict[str, dict[str, RetrievalTask]], dict[str, int]]:
    """(texts, train pair sets, {split: {"query" | "history": RetrievalTask}}, counts)."""
    table = TextTable()
    ads = inputs["ads"].filter(pl.col("fused").is_not_null())
    fused = dict(zip(ads["ad_id"].to_list(), ads["fused"].to_list(), strict=True))
    known = pl.Series(list(fused), dtype=pl.Int64).implode()
    cuts = inputs["cuts"]

    def with_text(frame: pl.DataFrame) -> pl.DataFrame:  # histories of ads that have a text
        frame = frame.filter(pl.col("ad_id").is_in(known)).with_columns(
            pl.col("history").list.filter(pl.element().is_in(list(fused)))
        )
        return frame.filter(pl.col("history").list.len() > 0)

    hist = with_text(inputs["histories"]) if inputs["histories"] is not None else None

    def ad_text(ad: int) -> int:
        return table.add(fused[ad])

    train = inputs["parts"]["train"]
    qp = _cap(query_pairs(train).filter(pl.col("ad_id").is_in(known)), cfg.max_pairs, seed)
    anchors = [(table.add(q),) for q in qp["query"].to_list()]
    negatives = None
    if cfg.hard_negatives:
        shown = unclicked_pairs(train).filter(pl.col("ad_id").is_in(known))
        negatives = _draw_negatives(qp["query"], shown, seed, ad_text)
    sets = [_pair_set("query", anchors, [ad_text(a) for a in qp["ad_id"]], negatives)]
    if hist is not None:
        hp = _cap(hist, cfg.max_pairs, seed)
        anchors = [tuple(ad_text(a) for a in h) for h in hp["history"].to_list()]
        sets.append(_pair_set("history", anchors, [ad_text(a) for a in hp["ad_id"]]))
    sp = _cap(self_pairs(inputs["ads"], cuts.get("valid_start")), cfg.max_pairs, seed)
    anchors = [(table.add(t),) for t in sp["anchor"].to_list()]
    sets.append(_pair_set("self", anchors, [table.add(t) for t in sp["positive"]]))
    counts = {f"pairs_{s.kind}": len(s) for s in sets}

    tasks: dict[str, dict[str, RetrievalTask]] = {}
    for split, end in (("valid", "test_start"), ("test", "test_end")):
        live = [a for a in active_ads(inputs["ads"], cuts.get(end)).to_list() if a in fused]
        where = {a: k for k, a in enumerate(live)}
        candidates = np.array([ad_text(a) for a in live], dtype=np.int64)
        clicks = query_pairs(inputs["parts"][split]).filter(pl.col("ad_id").is_in(live))
        clicks = _cap(clicks, MAX_EVAL, seed)
        queries = [(table.add(q),) for q in clicks["query"].to_list()]
        found = {"query": (queries, clicks["ad_id"].to_list())}
        if split in inputs["targets"]:
            period = with_text(inputs["targets"][split]).filter(pl.col("ad_id").is_in(live))
            users = [tuple(ad_text(a) for a in h) for h in period["history"].to_list()]
            found["history"] = (users, period["ad_id"].to_list())
        tasks[split] = {}
        for name, (anchors, targets) in found.items():
            tasks[split][name] = _task(anchors, [where[a] for a in targets], candidates)
            counts[f"{split}_{name}_clicks"] = len(targets)
        counts[f"{split}_candidates"] = len(live)
    counts["texts"] = len(table.ids)
    return table.texts, sets, tasks, counts


def _task(anchors: list[tuple[int, ...]], targets: list[int], candidates) -> RetrievalTask:
    distinct = list(dict.fromkeys(anchors))
    at = {a: k for k, a in enumerate(distinct)}
    return RetrievalTask(
        anchors=distinct,
        candidates=candidates,
        query_of=np.array([at[a] for a in anchors], dtype=np.int64),
        target_of=np.array(targets, dtype=np.int64),
    )


def _draw_negatives(queries: pl.Series, shown: pl.DataFrame, seed: int, ad_text) -> np.ndarray:
    """Per query pair, the text id of one ad shown for its query and never clicked from it
    (seeded draw), -1 where there is none."""
    pool = {q: ads for q, ads in shown.group_by("query").agg("ad_id").sort("query").iter_rows()}
    rng = np.random.default_rng(seed)
    out = np.full(len(queries), -1, dtype=np.int64)
    for k, q in enumerate(queries.to_list()):
        ads = pool.get(q)
        if ads:
            out[k] = ad_text(ads[int(rng.integers(len(ads)))])
    return out


def _pair_set(
    kind: str,
    anchors: list[tuple[int, ...]],
    positives: list[int],
    negatives: np.ndarray | None = None,
) -> PairSet:
    """A PairSet; pairs sharing an anchor (the same texts) or a positive are masked."""
    keys: dict[tuple, int] = {}
    anchor_key = np.array([keys.setdefault(a, len(keys)) for a in anchors], dtype=np.int64)
    return PairSet(
        kind=kind,
        anchors=anchors,
        positives=np.array(positives, dtype=np.int64),
        anchor_key=anchor_key,
        positive_key=np.array(positives, dtype=np.int64),
        negatives=negatives,
    )
