"""The `generate` stage: raw/ and oracle/ with manifests and canonical schemas; deterministic."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from features import schema
from pipeline.config import Experiment, load_experiment
from pipeline.io import MANIFEST, file_digest, read_manifest, read_table
from pipeline.sources.simulated import generate
from pipeline.stage import Layout

EXPERIMENTS = Path(__file__).resolve().parents[4] / "experiments"
HIDDEN_TABLES = ("impressions", "ads_hidden", "user_tastes", "queries", "impression_intents")


def small(root: Path, *overrides: str) -> Experiment:
    return load_experiment("small", [f"data.root={root}", *overrides], directory=EXPERIMENTS)


def read_all(layout: Layout) -> dict[str, pl.DataFrame]:
    raw = schema.RAW_TABLES | {"query_annotations": schema.QUERY_ANNOTATIONS}
    out = {f"raw/{n}": read_table(layout.raw, n, s).collect() for n, s in raw.items()}
    out |= {f"oracle/{n}": read_table(layout.oracle, n).collect() for n in HIDDEN_TABLES}
    return out


def oracle_rows(layout: Layout, name: str) -> int:
    return read_manifest(layout.oracle)["tables"][name]["rows"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, dict]:
    exp = small(tmp_path_factory.mktemp("gen_a"))
    summary = generate.run(exp)
    assert summary.rows_out == exp.market.n_impressions
    return exp, read_all(Layout.of(exp))


def test_raw_and_oracle_have_manifests(generated: tuple) -> None:
    exp, _ = generated
    layout = Layout.of(exp)
    raw = read_manifest(layout.raw)
    assert set(raw["tables"]) == {*schema.RAW_TABLES, "query_annotations"}
    annotations = raw["tables"]["query_annotations"]["rows"]
    assert 0 < annotations <= exp.market.n_annotations
    assert raw["stats"]["annotations"] == annotations
    assert raw["stats"]["distinct_queries"] == oracle_rows(layout, "queries")
    assert raw["tables"]["impressions"]["rows"] == exp.market.n_impressions
    assert raw["config_hash"] == exp.digest()
    assert raw["source"] == "simulated"
    assert raw["code_version"] and raw["created_at"]
    assert 0.01 <= raw["stats"]["ctr"] <= 0.05
    oracle = read_manifest(layout.oracle)
    assert set(oracle["tables"]) == set(HIDDEN_TABLES)
    # the hidden state lives under oracle/ only
    assert not any("subtopic" in c for t in raw["tables"].values() for c in t["schema"])
    assert sorted(p.name for p in layout.root.iterdir()) == ["oracle", "raw"]


def test_raw_tables_have_the_canonical_schema(generated: tuple) -> None:
    _, tables = generated
    for name, expected in schema.RAW_TABLES.items():
        assert dict(tables[f"raw/{name}"].schema) == expected, name
    assert dict(tables["oracle/impressions"].schema) == schema.ORACLE
    assert dict(tables["raw/query_annotations"].schema) == schema.QUERY_ANNOTATIONS
    assert dict(tables["oracle/queries"].schema) == schema.ORACLE_QUERIES
    assert dict(tables["oracle/impression_intents"].schema) == schema.ORACLE_INTENTS


def test_annotations_label_logged_queries(generated: tuple) -> None:
    _, tables = generated
    truth = tables["oracle/queries"]
    logged = pl.concat([tables["raw/impressions"]["query"], tables["raw/behaviour"]["query"]])
    assert set(truth["query"]) == set(logged.drop_nulls())
    annotations = tables["raw/query_annotations"]
    assert annotations["query"].is_unique().all()
    assert annotations["query"].is_in(truth["query"].implode()).all()
    intents = tables["oracle/impression_intents"]
    assert intents["impression_id"].sort().equals(tables["raw/impressions"]["impression_id"].sort())


def test_no_annotations_when_none_asked(tmp_path: Path) -> None:
    sizes = ["market.n_impressions=1500", "market.n_users=200", "market.n_ads=80"]
    exp = small(tmp_path, *sizes, "market.n_annotations=0")
    generate.run(exp)
    layout = Layout.of(exp)
    assert read_manifest(layout.raw)["tables"]["query_annotations"]["rows"] == 0
    assert (
        read_table(layout.raw, "query_annotations", schema.QUERY_ANNOTATIONS).collect().height == 0
    )


def test_oracle_is_keyed_by_every_impression(generated: tuple) -> None:
    _, tables = generated
    imp, oracle = tables["raw/impressions"], tables["oracle/impressions"]
    assert oracle.height == imp.height
    assert oracle["impression_id"].sort().equals(imp["impression_id"].sort())
    assert oracle["p_click"].is_between(0, 1).all()
    assert oracle["p_conversion"].is_between(0, 1).all()
    hidden = tables["oracle/ads_hidden"]
    assert hidden["ad_id"].sort().equals(tables["raw/ads"]["ad_id"].sort())


def test_rerun_with_the_same_seed_gives_equal_tables(generated: tuple, tmp_path: Path) -> None:
    _, first = generated
    exp_b = small(tmp_path)
    generate.run(exp_b)
    second = read_all(Layout.of(exp_b))
    assert set(second) == set(first)
    for name, frame in first.items():
        assert frame.equals(second[name]), name
    # the Parquet files are byte-identical too, and so are the manifests' tables and digests
    exp_a, _ = generated
    for sub in ("raw", "oracle"):
        a, b = Layout.of(exp_a).root / sub, Layout.of(exp_b).root / sub
        for path in a.glob("*.parquet"):
            assert file_digest(path) == file_digest(b / path.name), path
        man_a, man_b = read_manifest(a), read_manifest(b)
        assert man_a["tables"] == man_b["tables"]
        assert man_a["config_hash"] != "" and man_a.get("stats") == man_b.get("stats")


def test_rerun_in_place_replaces_the_output(tmp_path: Path) -> None:
    sizes = ["market.n_impressions=1500", "market.n_users=200", "market.n_ads=80"]
    exp = small(tmp_path, *sizes)
    generate.run(exp)
    first = read_all(Layout.of(exp))
    generate.run(small(tmp_path, *sizes, "data.seed=8"))
    layout = Layout.of(exp)
    changed = read_all(layout)
    assert not changed["raw/impressions"].equals(first["raw/impressions"])
    assert read_manifest(layout.raw)["config_hash"] != exp.digest()
    leftovers = [p.name for p in layout.root.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []
    assert all((layout.root / d / MANIFEST).is_file() for d in ("raw", "oracle"))
