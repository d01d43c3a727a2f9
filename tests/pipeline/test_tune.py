"""`make tune`: the search spaces, determinism given a seed, the MLflow parent / child runs, the
TOML fragment (loadable by the strict config loader) and a stage that never reads test.

The data is a tiny feature table built here: two categorical ids and three numerics with a
planted click signal, written as `features/` with train and valid only."""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from features.spec import Feature, FeatureSpec
from pipeline import tune
from pipeline.config import ConfigError, Experiment, load_experiment
from pipeline.io import write_tables
from pipeline.stage import Layout

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]
SPEC = FeatureSpec(
    features=(
        Feature("c_a", "categorical", "test", "id", cardinality=7),
        Feature("c_b", "categorical", "test", "context", cardinality=5),
        Feature("n_x", "numeric", "test", "behaviour"),
        Feature("n_y", "numeric", "test", "behaviour"),
        Feature("n_z", "numeric", "test", "behaviour"),
    ),
    meta=("impression_id", "user_id"),
)
# fast model settings: the searched ones come from the trials
FAST = [
    "engine.num_threads=1",
    "lightgbm.num_boost_round=40",
    "lightgbm.early_stopping_rounds=5",
    "neural.epochs=1",
    "neural.mlp_sizes=[16]",
    "neural.head_sizes=[8]",
    "neural.text_tower=[8]",
    "neural.cross_layers=1",
    "neural.cross_rank=4",
    "logreg.hash_bits=8",
    "calibration.min_positives_isotonic=50",
]


def frame(n: int, seed: int, start: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cat_a, cat_b = rng.integers(1, 7, n), rng.integers(1, 5, n)
    num = rng.normal(size=(n, 3)).astype(np.float32)
    logit = -1.5 + 1.2 * num[:, 0] + 0.8 * (cat_a == 3)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    conv = (click * (rng.random(n) < 0.3)).astype(np.int8)
    return pl.DataFrame(
        {
            "impression_id": np.arange(start, start + n),
            "user_id": rng.integers(0, 50, n),
            "c_a": cat_a,
            "c_b": cat_b,
            "n_x": num[:, 0],
            "n_y": num[:, 1],
            "n_z": num[:, 2],
            "click": click,
            "conversion": conv,
        }
    )


def frames() -> dict[str, pl.DataFrame]:
    return {"train": frame(1500, 0), "valid": frame(600, 1, start=10_000)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow store for the module (creating one takes seconds); each test its own
    experiment name."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('tune_store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def experiment(tmp_path: Path, name: str, *overrides: str) -> Experiment:
    settings = [*FAST, f"data.root={tmp_path / 'data'}", *overrides]
    exp = load_experiment("small", settings, directory=REPO / "experiments")
    return dataclasses.replace(exp, name=name)


def test_every_model_kind_has_a_space_inside_its_config() -> None:
    from pipeline.config import MODEL_KINDS

    assert set(tune.SPACES) == set(MODEL_KINDS)
    exp = Experiment(name="x")
    for kind, space in tune.SPACES.items():
        fields = {f.name for f in dataclasses.fields(getattr(exp, kind))}
        assert {p.name for p in space} <= fields, kind
        # the current defaults, derived from a mid-size log where unset, are points of the
        # space: trial 0 tries them unchanged
        current = tune.current_params(exp, kind, 100_000, 3_000)
        assert set(current) == {p.name for p in space}, kind
    batch = next(p for p in tune.SPACES["neural"] if p.name == "batch_size")
    assert all(b & (b - 1) == 0 for b in batch.choices)  # powers of 2


def test_same_seed_same_trials_values_and_fragment(tmp_path: Path, store: str) -> None:
    exp = experiment(tmp_path, "seeded", "tune.trials=4", "tune.seed=3")
    first = tune.tune_model("lightgbm", exp, frames(), SPEC)
    again = tune.tune_model("lightgbm", exp, frames(), SPEC)
    assert first.trials == first.complete == 4
    assert first.history == again.history
    assert tune.fragment(exp, [first]) == tune.fragment(exp, [again])
    # trial 0 is the experiment's current settings; the best is never worse
    click = frames()["train"]["click"].to_numpy()
    assert first.history[0][0] == tune.current_params(exp, "lightgbm", len(click), int(click.sum()))
    assert first.best_value <= first.baseline_value
    assert first.best_value == min(v for _, v in first.history)
    reseeded = dataclasses.replace(exp, tune=dataclasses.replace(exp.tune, seed=4, trials=2))
    other = tune.tune_model("lightgbm", reseeded, frames(), SPEC)
    assert other.history[0] == first.history[0]  # the current settings again
    assert other.history[1][0] != first.history[1][0]


def test_trials_are_child_runs_of_one_tune_run(tmp_path: Path, store: str) -> None:
    exp = experiment(tmp_path, "runs", "tune.trials=3")
    study = tune.tune_model("logreg", exp, frames(), SPEC)
    client = mlflow.MlflowClient(store)
    exp_id = client.get_experiment_by_name("runs").experiment_id
    parents = client.search_runs(
        [exp_id], "tags.stage = 'tune' and attributes.run_name = 'tune-logreg'"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["model"] == "logreg"
    assert parent.data.params["best.logreg.C"] == str(study.best_params["C"])
    assert parent.data.metrics["best_valid_ctr_logloss_oof"] == pytest.approx(study.best_value)
    assert parent.data.metrics["trials"] == 3
    children = client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", order_by=["params.trial"]
    )
    assert len(children) == 3
    for i, child in enumerate(children):
        assert child.data.tags["stage"] == "tune" and child.data.tags["trial"] == str(i)
        assert child.data.params["trial"] == str(i)
        assert float(child.data.params["logreg.C"]) == study.history[i][0]["C"]
        assert child.data.metrics["valid_ctr_logloss_oof"] == pytest.approx(study.history[i][1])
        assert child.data.metrics["duration_s"] > 0
        assert 0 < child.data.metrics["valid_ctr_ne_oof"] < 1.5


def test_a_time_budget_stops_the_search(tmp_path: Path, store: str) -> None:
    exp = experiment(tmp_path, "budget", "tune.trials=50", "tune.timeout_s=0.01")
    study = tune.tune_model("logreg", exp, frames(), SPEC)
    assert 1 <= study.trials < 50  # a trial that started runs to its end


def test_the_stage_reads_no_test_and_writes_a_fragment_that_loads(
    tmp_path: Path, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    exp = experiment(tmp_path, "tiny", "tune.trials=2")
    layout = Layout.of(exp)
    # no test.parquet at all: the stage must not need it
    spec_file = {layout.feature_spec.name: SPEC.to_json().encode()}
    write_tables(
        layout.features, frames(), config_digest="t", inputs={"raw": layout.raw}, files=spec_file
    )
    with caplog.at_level("INFO", logger="pipeline.tune"):
        summary = tune.run(exp)
    assert summary.output == str(layout.tune_best)
    text = layout.tune_best.read_text()
    assert text.startswith("# make tune EXP=tiny: up to 2 trials per model")
    assert [line for line in text.splitlines() if line.startswith("[")] == [
        "[lightgbm]",
        "[neural]",
        "[logreg]",
    ]
    assert "tune neural trial 2/2: valid_ctr_logloss_oof" in caplog.text
    assert 'train with them: make train EXP=tiny SET="lightgbm.num_leaves=' in caplog.text
    # pasted into an experiment, the strict loader takes it and holds the tuned values
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    small = (REPO / "experiments" / "small.toml").read_text()
    (experiments / "pasted.toml").write_text(small + "\n" + text)
    pasted = load_experiment("pasted", directory=experiments)
    tuned = tomllib.loads(text)
    for kind, values in tuned.items():
        for key, value in values.items():
            assert getattr(getattr(pasted, kind), key) == value
    assert isinstance(pasted.neural.batch_size, int) and isinstance(pasted.neural.lr, float)


def test_the_tune_section_names_models_and_seed() -> None:
    exp = load_experiment(
        "small", ['tune.models=["logreg"]', "tune.seed=3"], directory=REPO / "experiments"
    )
    assert exp.tune.models == ("logreg",) and exp.tune.seed == 3
    default = load_experiment("small", directory=REPO / "experiments")
    assert default.tune.models is None and default.tune.seed is None  # train.models, data.seed
    with pytest.raises(ConfigError, match=r"unknown key 'tune.budget'"):
        load_experiment("small", ["tune.budget=3"], directory=REPO / "experiments")


def test_without_optuna_the_stage_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(ConfigError, match=r"tune needs optuna .*run `make tune`"):
        tune.run(experiment(tmp_path, "bare"))
