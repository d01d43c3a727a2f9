"""Export: validation and guardrail on hand-made tables; on the `small` pipeline, a published
table checked against its manifest, broken inputs refused with the old bytes untouched, and
SIGKILLs at every publish phase (and at random moments) leaving the old or the new table."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from models.bidding import BiddingConfig, BidParams, bid_table
from pipeline import export, export_grid, publish, registry
from pipeline import export_checks as checks
from pipeline.atomic import CRASH_ENV
from pipeline.config import EvaluateConfig, Experiment, ExportConfig, load_experiment
from pipeline.io import MANIFEST, DataError
from pipeline.stage import Layout

REPO = Path(__file__).resolve().parents[2]
SEGMENTS = ("age_bucket", "device")


# ---------------------------------------------------------------- hand-made tables (fast)


def tiny_table(exp: Experiment) -> pl.DataFrame:
    cells = pl.DataFrame(
        {
            "ad_id": [1, 1, 2, 2],
            "placement": ["top", "side", "top", "side"],
            "segment": ["all"] * 4,
            "goal": ["cpc", "cpc", "cpa", "cpa"],
            "max_cpc": [2.0, 2.0, None, None],
            "target_cpa": [None, None, 40.0, 40.0],
            "pctr": [0.1, 0.05, 0.02, 0.01],
            "pcvr": [0.3, 0.3, 0.5, 0.25],
            "rows": [3, 0, 1, 0],
            "source": ["cell", "ad", "cell", "ad"],
        }
    )
    table = bid_table(cells, BidParams("linear", 1.0, 0.2), exp.bidding)
    schema = checks.table_schema(exp.export.segment_columns)
    return table.select([pl.col(c).cast(t) for c, t in schema.items()])


def test_validate_names_every_problem() -> None:
    exp = Experiment(name="t", export=ExportConfig(segment_columns=()))
    ads = pl.DataFrame({"ad_id": [1, 2]})
    places = pl.DataFrame({"placement": ["side", "top"]})
    good = tiny_table(exp)
    assert checks.validate(good, ads, places, exp) == []

    nan_bid = good.with_columns(bid=pl.Series([np.nan, 1.0, 1.0, 1.0]))
    assert any("bid has 1 NaN" in p for p in checks.validate(nan_bid, ads, places, exp))
    negative = good.with_columns(pctr=-pl.col("pctr"))
    assert any("pctr has 4" in p for p in checks.validate(negative, ads, places, exp))
    missing = good.filter(pl.col("ad_id") != 2)
    assert any("missing, e.g. 2/" in p for p in checks.validate(missing, ads, places, exp))
    too_big = good.with_columns(bid_multiplier=pl.col("bid_multiplier") * 100)
    problems = checks.validate(too_big, ads, places, exp)
    assert any("bid_multiplier(s) outside [0.0, 10.0]" in p for p in problems)
    dup = pl.concat([good, good.head(1)])
    assert any("duplicate" in p for p in checks.validate(dup, ads, places, exp))
    wrong = good.with_columns(pl.col("rows").cast(pl.Int32))
    assert checks.validate(wrong, ads, places, exp)[0].startswith("schema is")
    assert checks.validate(good.head(0), ads, places, exp) == ["the table is empty"]
    zero = good.with_columns(bid=pl.lit(0.0), bid_multiplier=pl.lit(0.0))
    assert "every bid is 0" in checks.validate(zero, ads, places, exp)
    capped = replace(exp, bidding=BiddingConfig(bid_cap=0.5))
    assert any("bid_cap" in p for p in checks.validate(good, ads, places, capped))
    floored = replace(exp, bidding=BiddingConfig(bid_floor=10.0))
    assert any("bid_floor" in p for p in checks.validate(good, ads, places, floored))


def _champion(
    value: float, metric: str = "valid_ctcvr_logloss", mode: str = "min"
) -> checks.Champion:
    return checks.Champion("neural", "adctr-t-neural", "3", "r3", "models:/x", metric, value, mode)


def test_guardrail_margin_is_relative() -> None:
    old = {"metric": "valid_ctcvr_logloss", "metric_value": 0.1, "name": "m", "version": "2"}
    previous = {"model": old}
    assert checks.guardrail(_champion(0.5), None, 0.02) is None  # nothing published yet
    assert checks.guardrail(_champion(0.1019), previous, 0.02) is None
    assert checks.guardrail(_champion(0.09), previous, 0.0) is None  # better is fine
    reason = checks.guardrail(_champion(0.1021), previous, 0.02)
    assert reason and "0.1021 is worse than the published m v2 (0.1) by more than 2.0%" in reason
    assert checks.guardrail(_champion(np.nan), previous, 0.02)
    # another metric cannot be compared: allowed, with a warning
    assert checks.guardrail(_champion(9.0, "valid_ctr_logloss"), previous, 0.02) is None


def test_guardrail_follows_the_metric_direction() -> None:
    """A champion metric where higher is better (champion_mode = "max") is guarded downwards."""
    old = {"metric": "valid_ctr_auc", "metric_value": 0.8, "name": "m", "version": "2"}
    previous = {"model": old}
    assert checks.guardrail(_champion(0.79, "valid_ctr_auc", "max"), previous, 0.02) is None
    assert checks.guardrail(_champion(0.95, "valid_ctr_auc", "max"), previous, 0.0) is None
    reason = checks.guardrail(_champion(0.78, "valid_ctr_auc", "max"), previous, 0.02)
    assert reason and "valid_ctr_auc 0.78 is worse than the published m v2 (0.8)" in reason
    # the same numbers read as a loss: 0.95 is far worse
    assert checks.guardrail(_champion(0.95, "valid_ctr_auc", "min"), previous, 0.02)


def test_champion_version_takes_the_configured_metric(tmp_path: Path, monkeypatch) -> None:
    """The guardrail metric is `evaluate.champion_metric` of the run behind the alias, and the
    CTR logloss when that run lacks it (no conversions)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = Experiment(name="t_guard", evaluate=EvaluateConfig("valid_ctr_auc", "max"))
    layout = Layout(tmp_path / "t_guard")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("t_guard")
    client = mlflow.MlflowClient()
    metrics = {"lightgbm": {"valid_ctr_auc": 0.75, "valid_ctr_logloss": 0.2}, "neural": {}}
    metrics["neural"] = {"valid_ctr_logloss": 0.3}
    for kind, values in metrics.items():
        with mlflow.start_run() as run:
            mlflow.log_metrics(values)
        name = registry.model_name(exp.name, kind)
        client.create_registered_model(name)
        client.create_model_version(name, run.info.artifact_uri, run_id=run.info.run_id)
        client.set_registered_model_alias(name, registry.CHAMPION, "1")
    champion = export.champion_version(exp, layout)  # no metrics.json: the first kind
    assert (champion.kind, champion.name, champion.version) == (
        "lightgbm",
        "adctr-t_guard-lightgbm",
        "1",
    )
    assert (champion.metric, champion.mode, champion.metric_value) == ("valid_ctr_auc", "max", 0.75)
    assert champion.uri == "models:/adctr-t_guard-lightgbm@champion"
    layout.evaluation.mkdir(parents=True)
    layout.evaluation_metrics.write_text(json.dumps({"champion": "neural"}))
    champion = export.champion_version(exp, layout)
    assert (champion.kind, champion.metric, champion.mode) == ("neural", "valid_ctr_logloss", "min")


def test_publish_swaps_versions_and_prunes(tmp_path: Path) -> None:
    exp = Experiment(name="t", export=ExportConfig(segment_columns=()))
    table = tiny_table(exp)
    layout = Layout(tmp_path)
    legacy = layout.exports  # a plain directory from before versioning
    legacy.mkdir()
    (legacy / "bid_weights.csv").write_text("old")
    for i in range(4):
        manifest = {"version": f"v{i}"}
        final = publish.publish(
            table.head(i + 1), manifest, layout.exports, layout.export_versions, keep=2
        )
        assert published_version(tmp_path) == f"v{i}" == final.name
        assert os.readlink(layout.exports) == f"export-versions/v{i}"  # relative: root can move
    kept = sorted(p.name for p in layout.export_versions.iterdir())
    assert kept == ["v2", "v3"]  # the legacy table and v0, v1 are pruned
    got, manifest = publish.read_published(tmp_path / "exports")
    assert got.equals(table) and manifest["rows"] == 4
    (Path(os.path.realpath(tmp_path / "exports")) / publish.TABLE_FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match="checksum"):
        publish.read_published(tmp_path / "exports")


# ---------------------------------------------------------------- the small pipeline (slow)


def snapshot(root: Path) -> dict[str, bytes]:
    """The link and every byte of the published version."""
    exports = root / "exports"
    real = Path(os.path.realpath(exports))
    return {"->": os.readlink(exports).encode()} | {
        p.name: p.read_bytes() for p in sorted(real.iterdir())
    }


def published_version(root: Path) -> str:
    """Check the published table against its manifest; its version."""
    exports = root / "exports"
    assert exports.is_symlink()
    table, manifest = publish.read_published(exports)  # checks sha256 and row count
    real = Path(os.path.realpath(exports))
    csv = (real / publish.CSV_FILE).read_bytes()
    assert hashlib.sha256(csv).hexdigest() == manifest["csv_sha256"]
    assert pl.read_csv(real / publish.CSV_FILE).height == manifest["rows"] == table.height
    assert manifest["version"] == real.name
    return manifest["version"]


def export_cmd(run) -> list[str]:
    """`python -m pipeline export` on the small pipeline's data root (`run`: a PipelineRun)."""
    root = f"data.root={run.data_root}"
    return [sys.executable, "-m", "pipeline", "export", "--experiment", "small", "--set", root]


def cli_export(run, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*export_cmd(run), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=run.env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def published(small_pipeline):
    cli_export(small_pipeline)
    return small_pipeline


@pytest.fixture
def in_process(published, monkeypatch: pytest.MonkeyPatch) -> Experiment:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", published.tracking_uri)
    return load_experiment("small", [f"data.root={published.data_root}"])


@pytest.mark.slow
def test_published_table_matches_manifest_and_covers_the_grid(published) -> None:
    root = published.root
    published_version(root)
    table, manifest = publish.read_published(root / "exports")
    assert dict(table.schema) == checks.table_schema(SEGMENTS)
    assert manifest["schema"] == {k: str(v) for k, v in table.schema.items()}
    # every active ad x every placement x every segment of the user profiles, once
    ads = pl.read_parquet(root / "raw" / "ads.parquet")
    cut = pl.lit(manifest["valid_from"]).str.to_datetime()
    active = ads.filter(pl.col("created_at") < cut)["ad_id"]
    placements = pl.read_parquet(root / "features" / "test.parquet")["placement"].unique()
    users = pl.read_parquet(root / "raw" / "users.parquet").select(SEGMENTS).unique()
    assert set(table["ad_id"]) == set(active) and set(table["placement"]) == set(placements)
    assert table.height == active.len() * placements.len() * users.height
    assert not table.select(export_grid.KEY_COLUMNS).is_duplicated().any()
    for col in ("pctr", "pcvr", "value", "bid", "bid_multiplier", "placement_weight"):
        x = table[col].to_numpy()
        assert np.isfinite(x).all() and (x >= 0).all(), col
    assert table["bid_multiplier"].max() <= BiddingConfig().max_multiplier
    assert set(table["source"]) <= {"cell", "ad", "category", "prior"}
    # the model version and the runs it names are the registry's and MLflow's
    mlflow.set_tracking_uri(published.tracking_uri)
    client = mlflow.MlflowClient()
    model = manifest["model"]
    mv = client.get_model_version_by_alias(model["name"], "champion")
    assert (model["version"], manifest["model_run_id"]) == (str(mv.version), mv.run_id)
    assert model["metric_value"] == client.get_run(mv.run_id).data.metrics[model["metric"]]
    run = client.get_run(manifest["export_run_id"])
    assert run.data.tags["stage"] == "export" and run.data.tags["export_status"] == "published"
    logged = {
        a.path for d in ("export", "plots") for a in client.list_artifacts(run.info.run_id, d)
    }
    assert {"export/bid_weights.parquet", "export/_manifest.json"} <= logged
    assert "plots/bid_histogram.png" in logged
    params = manifest["strategy"]
    assert params["name"] == ExportConfig().strategy and params["params"]["base_bid"] > 0
    pacing = params["pacing"]  # paced: the controller's state to start from
    assert BiddingConfig().pacing_min <= pacing["multiplier"] <= BiddingConfig().pacing_max


def _nan_first_prediction(real_score):
    def broken(model, rows):
        scored = real_score(model, rows)
        first = pl.int_range(pl.len()) == 0
        return scored.with_columns(pctr=pl.when(first).then(np.nan).otherwise(pl.col("pctr")))

    return broken


def _drop_first_ad(real_build):
    def broken(exp, rows, grid, params):
        table = real_build(exp, rows, grid, params)
        return table.filter(pl.col("ad_id") != table["ad_id"].min())

    return broken


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "wrap", "match"),
    [
        ("score", _nan_first_prediction, "NaN"),
        ("build_table", _drop_first_ad, "missing"),
    ],
)
def test_broken_input_is_refused_and_the_table_is_untouched(
    published, in_process: Experiment, monkeypatch, name, wrap, match
) -> None:
    before = snapshot(published.root)
    monkeypatch.setattr(export, name, wrap(getattr(export, name)))
    with pytest.raises(export.ExportRefused, match=match) as err:
        export.run(in_process)
    assert "\n" not in str(err.value) and "published table kept" in str(err.value)
    assert snapshot(published.root) == before
    runs = mlflow.search_runs(
        experiment_names=["small"], filter_string="tags.export_status = 'refused'"
    )
    assert len(runs) >= 1 and runs["status"].iloc[0] == "FAILED"


@pytest.mark.slow
def test_guardrail_refuses_a_worse_champion(
    published, in_process: Experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(published.root)
    _, manifest = publish.read_published(published.root / "exports")
    real = export.load_champion

    def worse(exp, layout):
        champion, model = real(exp, layout)
        return replace(champion, metric_value=manifest["model"]["metric_value"] * 1.5), model

    monkeypatch.setattr(export, "load_champion", worse)
    with pytest.raises(export.ExportRefused, match="worse than the published"):
        export.run(in_process)
    assert snapshot(published.root) == before


@pytest.mark.slow
def test_cli_refusal_exits_2_with_one_line(published) -> None:
    before = snapshot(published.root)
    # a floor far above every bid: each multiplier leaves its bounds
    proc = cli_export(published, "--set", "bidding.bid_floor=1000.0", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: export refused: validation failed") and "bid_multiplier" in last
    assert snapshot(published.root) == before


PUBLISH_AGAIN = """
import sys
from pathlib import Path
import polars as pl
from pipeline.publish import publish, read_published
from pipeline.stage import Layout
layout = Layout(Path(sys.argv[1]))
table, manifest = read_published(layout.exports)
manifest = {k: v for k, v in manifest.items() if k not in ("rows", "sha256", "csv_sha256")}
manifest |= {"version": sys.argv[2]}
table = table.with_columns(bid=pl.col("bid") * 1.01)
publish(table, manifest, layout.exports, layout.export_versions)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "outcome"),
    [("parquet", "old"), ("files", "old"), ("version", "old"), ("linked", "new")],
)
def test_sigkill_at_each_publish_phase_leaves_old_or_new(published, phase, outcome) -> None:
    root = published.root
    old = published_version(root)
    new = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-kill-{phase}"
    env = published.env | {CRASH_ENV: f"export:{phase}"}
    cmd = [sys.executable, "-c", PUBLISH_AGAIN, str(root), new]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert published_version(root) == (old if outcome == "old" else new)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_mixes_tables(published) -> None:
    root = published.root
    start = time.monotonic()
    cli_export(published)
    full = time.monotonic() - start  # how long one export takes here, to spread the kills
    published_version(root)
    rng, killed = random.Random(7), 0
    for _ in range(3):
        proc = subprocess.Popen(export_cmd(published), cwd=REPO, env=published.env)
        time.sleep(rng.uniform(0.5, 1.1) * full)
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(timeout=60) == -signal.SIGKILL
        published_version(root)  # consistent, whichever table it is
    assert killed >= 1
    cli_export(published)  # a clean run afterwards tidies up what the kills left
    versions = Layout(root).export_versions
    assert not list(versions.glob(".tmp-*")) and not list(root.glob(".tmp-exports-*"))
    assert len(list(versions.iterdir())) <= ExportConfig().keep_versions
    manifest = json.loads((root / "exports" / MANIFEST).read_text())
    assert manifest["version"] == published_version(root)
