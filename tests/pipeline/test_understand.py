"""The understand stage's inputs and outputs without training: annotation rows checked and
quarantined with a reason, bad files refused in one line, CSV and Parquet read alike, the
later-period rule, the skip without annotations, and the label table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.split import assign_split
from features.text import text_key
from models.query_tagger import TaggerOutput
from pipeline.__main__ import main
from pipeline.config import load_experiment
from pipeline.io import DataError
from pipeline.stage import Layout
from pipeline.understand import label_table
from pipeline.understand_data import (
    annotations_path,
    check_annotations,
    log_queries,
    read_annotations,
)

# `small`, smaller still: a raw/ in well under a second
SIZE = {
    "market.n_impressions": 4000,
    "market.n_users": 400,
    "market.n_ads": 150,
    "market.n_advertisers": 40,
    "market.n_annotations": 300,
}


def overrides(root: Path, base: Path | None = None, **extra: object) -> list[str]:
    sets = {**SIZE, "data.root": root, **extra}
    if base is not None:
        sets["understand.base"] = base
    return [f"{k}={v}" for k, v in sets.items()]


def cli(stage: str, sets: list[str], *flags: str) -> int:
    return main([stage, *flags, "--experiment", "small", *(a for s in sets for a in ("--set", s))])


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated `small` (sized down) raw/ shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("understand_raw")
    assert cli("raw", overrides(root)) == 0
    return root


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def span_json(*spans: tuple[int, int, str]) -> str:
    return json.dumps([{"start": s, "end": e, "label": lab} for s, e, lab in spans])


# --- check_annotations -----------------------------------------------------------------------


def test_each_unusable_row_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    good = [
        ("nike running shoes", "buy", "neutral", span_json((5, 18, "PRODUCT"), (0, 4, "BRAND"))),
        ("cheap yoga mat under $20", "cheap", None, span_json((17, 24, "PRICE"))),
        ("best coffee machine", "compare", "positive", None),
        ("laptop refund", "support", "negative", "[]"),
        ("smart watch review", "reviews", "", ""),
        ("trail bike", "info", "neutral", span_json((0, 10, "PRODUCT"))),
        ("dog food", "buy", "neutral", None),
        ("  trail shoes ", "buy", None, span_json((2, 13, "PRODUCT"))),  # offsets as written
    ]
    bad = [
        ("   ", "buy", None, None, "empty_query"),
        ("red shoes", None, None, None, "no_intent"),
        ("blue shoes", "buy", None, "[{", "bad_spans"),  # malformed JSON
        ("green shoes", "buy", None, span_json((0, 99, "PRODUCT")), "bad_spans"),  # past the end
        ("black shoes", "buy", None, span_json((0, 5, "COLOR")), "bad_spans"),  # unknown label
        ("nike running shoes", "info", None, None, "duplicate_query"),
        (" red hat", "buy", None, span_json((0, 4, "PRODUCT")), "bad_spans"),  # over the space
    ]
    rows = [*good[:3], *[b[:4] for b in bad], *good[3:]]
    frame = pl.DataFrame(rows, schema=["query", "intent", "sentiment", "spans"], orient="row")
    usable, quarantined = check_annotations(frame, tmp_path / "a.csv")
    assert usable.height + quarantined.height == frame.height
    assert usable["query"].to_list() == [g[0].strip() for g in good]
    got = dict(zip(quarantined["row"].to_list(), quarantined["reason"].to_list(), strict=True))
    assert got == {3 + k: b[4] for k, b in enumerate(bad)}
    spans = [[(s["start"], s["end"], s["label"]) for s in row] for row in usable["spans"]]
    assert spans[0] == [(0, 4, "BRAND"), (5, 18, "PRODUCT")]  # sorted by start
    assert spans[1] == [(17, 24, "PRICE")] and spans[2] == spans[3] == spans[4] == []
    assert spans[-1] == [(0, 11, "PRODUCT")]  # moved with the stripped leading spaces
    assert usable["sentiment"].to_list()[:5] == ["neutral", None, "positive", "negative", None]


def test_a_missing_intent_column_names_the_file_column_and_rows(tmp_path: Path) -> None:
    frame = pl.DataFrame({"query": [f"query {k}" for k in range(1234)]})
    with pytest.raises(DataError) as caught:
        check_annotations(frame, tmp_path / "labels.csv")
    message = str(caught.value)
    assert str(tmp_path / "labels.csv") in message
    assert "'intent'" in message and "1,234 rows" in message


def test_a_missing_intent_column_is_one_error_line_from_the_cli(
    raw_root: Path, store: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = store / "bad.csv"
    pl.DataFrame({"query": [f"query {k}" for k in range(30)]}).write_csv(bad)
    capsys.readouterr()
    code = cli("understand", overrides(raw_root, tiny_bert_dir, **{"understand.annotations": bad}))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert str(bad) in err[0] and "'intent'" in err[0] and "30 rows" in err[0]
    assert not (raw_root / "small" / "queries").exists()


def test_mostly_unusable_annotations_are_refused_with_the_reason_counts(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "query": ["", "", "a", "b", "c", "c", "d"],
            "intent": ["buy", "buy", None, "buy", "buy", "buy", "info"],
            "spans": [None, None, None, "nope", None, None, None],
        }
    )
    with pytest.raises(DataError) as caught:
        check_annotations(frame, tmp_path / "a.parquet")
    message = str(caught.value)
    assert "5 of 7 annotation rows unusable" in message
    for reason in ("empty_query: 2", "no_intent: 1", "bad_spans: 1", "duplicate_query: 1"):
        assert reason in message
    usable, quarantined = check_annotations(frame.slice(3), tmp_path / "a.parquet")
    assert (usable.height, quarantined.height) == (2, 2)  # half is still accepted


# --- reading files -----------------------------------------------------------------------------


def test_csv_with_json_spans_and_parquet_with_structs_read_the_same(
    raw_root: Path, tmp_path: Path
) -> None:
    exp = load_experiment("small", overrides(raw_root))
    own = pl.read_parquet(Layout.of(exp).raw / "query_annotations.parquet")
    assert own.schema["spans"] == pl.List(
        pl.Struct({"start": pl.Int32, "end": pl.Int32, "label": pl.String})
    )
    as_json = own.with_columns(
        pl.Series(
            "spans",
            [json.dumps(row) for row in own["spans"].to_list()],
            dtype=pl.String,
        )
    )
    as_json.write_csv(tmp_path / "labels.csv")
    own.write_parquet(tmp_path / "labels.parquet")
    queries = log_queries(exp)
    csv = read_annotations(exp, tmp_path / "labels.csv", queries, seed=3)
    parquet = read_annotations(exp, tmp_path / "labels.parquet", queries, seed=3)
    assert csv.rows_in == parquet.rows_in == own.height
    assert csv.bad.height == parquet.bad.height == 0
    for part in ("train", "valid", "test"):
        assert csv.parts[part].equals(parquet.parts[part]), part
    assert csv.parts["train"]["spans"].list.len().sum() > 0  # spans were read, not dropped


def first_seen(exp, raw: Path) -> tuple[pl.DataFrame, object]:
    """Each query's first time in the raw log (impressions and behaviour), and the valid start."""
    from datetime import datetime

    imp = pl.read_parquet(raw / "impressions.parquet")
    beh = pl.read_parquet(raw / "behaviour.parquet")
    _, bounds = assign_split(imp, exp.split)
    both = pl.concat([imp.select("ts", "query"), beh.select("ts", "query")]).drop_nulls()
    return both.group_by("query").agg(pl.min("ts")), datetime.fromisoformat(bounds["valid_start"])


def test_annotations_of_later_queries_are_never_used_and_unknown_ones_are_kept(
    raw_root: Path, tmp_path: Path
) -> None:
    exp = load_experiment("small", overrides(raw_root))
    raw = Layout.of(exp).raw
    first, valid_start = first_seen(exp, raw)
    late = first.filter(pl.col("ts") >= valid_start).sort("query")["query"][0]
    own = pl.read_parquet(raw / "query_annotations.parquet")
    extra = pl.DataFrame(
        {"query": [late, "zzz never searched"], "intent": ["buy", "info"],
         "sentiment": [None, None], "spans": [[], []]},
        schema=own.schema,
    )  # fmt: skip
    path = tmp_path / "labels.parquet"
    pl.concat([own, extra]).write_parquet(path)
    data = read_annotations(exp, path, log_queries(exp), seed=11)
    used = pl.concat(data.parts.values())["query"].to_list()
    assert data.later == 1
    assert late not in used and "zzz never searched" in used
    assert len(used) + data.later + data.bad.height == data.rows_in == own.height + 2


def test_no_simulated_annotation_in_any_part_first_occurs_after_the_train_period(
    raw_root: Path,
) -> None:
    exp = load_experiment("small", overrides(raw_root))
    raw = Layout.of(exp).raw
    path = annotations_path(exp)
    assert path == raw / "query_annotations.parquet"
    data = read_annotations(exp, path, log_queries(exp), seed=exp.data.seed)
    first, valid_start = first_seen(exp, raw)
    used = pl.concat(data.parts.values()).select("query")
    assert used.height == SIZE["market.n_annotations"] and data.later == 0
    seen = used.join(first, on="query", how="left")
    assert seen["ts"].null_count() == 0  # every simulated annotation is a query of the log
    assert seen["ts"].max() < valid_start


# --- skipping ----------------------------------------------------------------------------------


def test_without_annotations_the_stage_says_why_and_writes_nothing(
    store: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    sets = overrides(store, tiny_bert_dir, **{"market.n_annotations": 0})
    assert cli("raw", sets) == 0
    root = store / "small"

    def files() -> list[Path]:  # the stage lock file aside
        return sorted(p.relative_to(root) for p in root.rglob("*") if ".locks" not in p.parts)

    before = files()
    for flags in ((), ("--if-needed",)):
        capsys.readouterr()
        assert cli("understand", sets, *flags) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("[understand]"), out
        assert "skipped=no query annotations" in out[0]
        assert "understand.annotations is not set" in out[0]
    assert files() == before
    assert not (root / "queries").exists() and not (root / "quarantine" / "understand").exists()


# --- the label table ---------------------------------------------------------------------------


def test_label_table_reads_entities_and_price_caps_from_the_spans() -> None:
    texts = ["nike shoes under $80", "yoga mat under 2k", "laptop refund"]
    out = TaggerOutput(
        intent_probs=np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.1, 0.7]], np.float32),
        sentiment_probs=np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], np.float32),
        spans=[
            [(0, 4, "BRAND"), (5, 10, "PRODUCT"), (11, 20, "PRICE")],
            [(0, 8, "PRODUCT"), (9, 17, "PRICE")],
            [],
        ],
    )
    table = label_table(texts, out, ["buy", "cheap", "support"], ["neutral", "negative"])
    assert table["query_key"].to_list() == [text_key(t) for t in texts]
    assert table["intent"].to_list() == ["buy", "cheap", "support"]
    assert table["sentiment"].to_list() == ["neutral", "neutral", "negative"]
    assert table["brand"].to_list() == ["nike", None, None]
    assert table["product"].to_list() == ["shoes", "yoga mat", None]
    assert table["price_cap"].to_list() == [80.0, 2000.0, None]
    p = table.select(pl.col("^p_intent_.*$")).to_numpy()
    assert table.select(pl.col("^p_intent_.*$")).columns == [
        "p_intent_buy", "p_intent_cheap", "p_intent_support"
    ]  # fmt: skip
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p, out.intent_probs)
