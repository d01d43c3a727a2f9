"""Strict experiment config: unknown keys / sections / wrong types are errors naming the key;
`--set section.key=value` parsing; flat() and digest(); every shipped experiment loads."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import (
    SECTIONS,
    ConfigError,
    Experiment,
    load_experiment,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


def write_exp(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_experiment_loads(path: Path) -> None:
    exp = load_experiment(path.stem, directory=EXPERIMENTS)
    assert exp.name == path.stem
    assert exp.digest()


def test_default_and_small_exist_and_small_is_smaller() -> None:
    default = load_experiment("default", directory=EXPERIMENTS)
    small = load_experiment("small", directory=EXPERIMENTS)
    assert small.market.n_impressions < default.market.n_impressions
    assert default.data.source == small.data.source == "simulated"


def test_toml_values_land_in_their_section(tmp_path: Path) -> None:
    write_exp(
        tmp_path,
        "e",
        "[market]\nn_ads = 123\nexploration = 2\n[train]\nmodels = ['lightgbm']\n",
    )
    exp = load_experiment("e", directory=tmp_path)
    assert exp.market.n_ads == 123
    # an int where a float is expected is accepted and becomes a float
    assert exp.market.exploration == 2.0 and isinstance(exp.market.exploration, float)
    # TOML arrays become tuples (the dataclasses are frozen and hashable)
    assert exp.train.models == ("lightgbm",)
    # everything not listed keeps its default
    assert exp.market.n_users == Experiment(name="x").market.n_users


def test_unknown_key_names_it(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "[market]\nn_adz = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'market\.n_adz'"):
        load_experiment("e", directory=tmp_path)


def test_unknown_section_names_it(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "[markt]\nn_ads = 5\n")
    with pytest.raises(ConfigError, match=r"unknown section '\[markt\]'"):
        load_experiment("e", directory=tmp_path)


def test_top_level_scalar_is_not_a_section(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "market = 5\n")
    with pytest.raises(ConfigError, match="'market' must be a table"):
        load_experiment("e", directory=tmp_path)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("[market]\nn_ads = 'many'", "market.n_ads"),  # str for int
        ("[market]\nn_ads = 1.5", "market.n_ads"),  # float for int
        ("[market]\nn_ads = true", "market.n_ads"),  # bool is not an int
        ("[market]\nexploration = false", "market.exploration"),  # bool is not a float
        ("[features]\ntext = 1", "features.text"),  # int for bool
        ("[data]\nsource = 3", "data.source"),  # int for str
        ("[train]\nmodels = 'lightgbm'", "train.models"),  # str for a list
        ("[features]\nwindows_days = [1, 'x']", "features.windows_days"),  # bad list item
    ],
)
def test_wrong_type_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    write_exp(tmp_path, "e", line + "\n")
    with pytest.raises(ConfigError) as info:
        load_experiment("e", directory=tmp_path)
    message = str(info.value)
    assert f"'{key}' must be" in message
    assert "\n" not in message


def test_missing_experiment_names_it_and_lists_the_known_ones(tmp_path: Path) -> None:
    write_exp(tmp_path, "present", "")
    with pytest.raises(ConfigError, match=r"no experiment 'absent'.*available: present"):
        load_experiment("absent", directory=tmp_path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "[market\nn_ads = 5\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment("e", directory=tmp_path)


def test_section_validation_becomes_a_config_error(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "[market]\nn_ads = 0\n")
    with pytest.raises(ConfigError, match=r"market\.n_ads must be positive"):
        load_experiment("e", directory=tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("market.n_ads=500", ("market", "n_ads", 500)),
        ("lightgbm.learning_rate=0.05", ("lightgbm", "learning_rate", 0.05)),
        ("neural.lr=1e-3", ("neural", "lr", 1e-3)),
        ("features.text=false", ("features", "text", False)),
        ("features.windows_days=[1, 7]", ("features", "windows_days", [1, 7])),
        ("train.models=['lightgbm']", ("train", "models", ["lightgbm"])),
        ("data.source=criteo", ("data", "source", "criteo")),  # bare word -> string
        ('data.path="a b/c.csv"', ("data", "path", "a b/c.csv")),  # quoted string
        ("data.root=/tmp/x=y", ("data", "root", "/tmp/x=y")),  # splits at the first '='
        (" market.n_ads =7", ("market", "n_ads", 7)),
        ("ingest.separator=", ("ingest", "separator", "")),  # nothing after '=': empty string
    ],
)
def test_parse_override(text: str, expected: tuple) -> None:
    section, key, value = parse_override(text)
    assert (section, key, value) == expected
    assert type(value) is type(expected[2])


@pytest.mark.parametrize("text", ["market.n_ads", "n_ads=5", "=5", ".n_ads=5", "market.=5"])
def test_parse_override_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        parse_override(text)


def test_overrides_apply_and_are_strict() -> None:
    exp = load_experiment(
        "small",
        ["market.n_ads=77", "features.text=false", "train.models=['lightgbm']", "neural.lr=1e-2"],
        directory=EXPERIMENTS,
    )
    assert exp.market.n_ads == 77
    assert exp.features.text is False
    assert exp.train.models == ("lightgbm",)
    assert exp.neural.lr == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"'market\.bogus'"):
        load_experiment("small", ["market.bogus=1"], directory=EXPERIMENTS)
    with pytest.raises(ConfigError, match=r"'\[bogus\]'"):
        load_experiment("small", ["bogus.key=1"], directory=EXPERIMENTS)
    with pytest.raises(ConfigError, match=r"'market\.n_ads' must be int"):
        load_experiment("small", ["market.n_ads=lots"], directory=EXPERIMENTS)


def test_override_wins_over_the_toml(tmp_path: Path) -> None:
    write_exp(tmp_path, "e", "[market]\nn_ads = 5\n")
    assert load_experiment("e", ["market.n_ads=9"], directory=tmp_path).market.n_ads == 9


def test_sections_are_frozen() -> None:
    exp = Experiment(name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.market.n_ads = 1  # type: ignore[misc]


def test_flat_lists_every_setting_once() -> None:
    exp = Experiment(name="x")
    flat = exp.flat()
    expected = {
        f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }
    assert set(flat) == expected
    assert "name" not in flat
    # tuples are flattened to lists (MLflow params and JSON)
    assert flat["train.models"] == ["lightgbm", "neural", "logreg"]


def test_digest_is_stable_and_sensitive() -> None:
    a = load_experiment("small", directory=EXPERIMENTS)
    b = load_experiment("small", directory=EXPERIMENTS)
    assert a.digest() == b.digest()
    assert len(a.digest()) == 16 and int(a.digest(), 16) >= 0
    changed = load_experiment("small", ["market.n_ads=401"], directory=EXPERIMENTS)
    assert changed.digest() != a.digest()
    # an override equal to the TOML value does not change the digest
    same = load_experiment("small", ["market.n_ads=400"], directory=EXPERIMENTS)
    assert same.digest() == a.digest()


def test_digest_is_the_same_in_another_process() -> None:
    code = (
        "from pathlib import Path; from pipeline.config import load_experiment; "
        f"print(load_experiment('small', directory=Path({str(EXPERIMENTS)!r})).digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == load_experiment("small", directory=EXPERIMENTS).digest()


def test_one_num_threads_setting_in_engine() -> None:
    flat = load_experiment("small", directory=EXPERIMENTS).flat()
    assert [k for k in flat if k.endswith("num_threads")] == ["engine.num_threads"]
    exp = load_experiment("small", ["engine.num_threads=1"], directory=EXPERIMENTS)
    assert exp.engine.num_threads == 1
    for old in ("train", "neural", "embed"):  # the former homes are gone
        with pytest.raises(ConfigError, match=f"unknown key '{old}.num_threads'"):
            load_experiment("small", [f"{old}.num_threads=1"], directory=EXPERIMENTS)
    with pytest.raises(ConfigError, match=r"\[engine\] num_threads must be >= 1"):
        load_experiment("small", ["engine.num_threads=0"], directory=EXPERIMENTS)


def test_evaluate_champion_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match="champion_mode must be min or max"):
        load_experiment("small", ['evaluate.champion_mode="lowest"'], directory=EXPERIMENTS)


# Every section refuses a value outside what its code can use: one line, naming the field.
BAD_VALUES = [
    ("data.source=bogus", r"\[data\] data\.source = 'bogus' is not a known source \(simulated, "),
    ("data.seed=-1", r"\[data\] seed must be >= 0, got -1"),
    ("engine.num_threads=0", r"\[engine\] num_threads must be >= 1, got 0"),
    ('train.models=["xgboost"]', r"\[train\] models must name some of lightgbm, neural, logreg"),
    ("train.models=[]", r"\[train\] models must name some of"),
    ('train.models=["neural", "neural"]', r"\[train\] models names a model twice"),
    ('tune.models=["xgboost"]', r"\[tune\] models must name distinct models of lightgbm, "),
    ('tune.models=["logreg", "logreg"]', r"\[tune\] models must name distinct models"),
    ("tune.trials=0", r"\[tune\] trials must be >= 1, got 0"),
    ("tune.timeout_s=0", r"\[tune\] timeout_s must be > 0, got 0.0"),
    ("tune.seed=-1", r"\[tune\] seed must be >= 0, got -1"),
    ("evaluate.champion_mode=maybe", r"champion_mode must be min or max, got 'maybe'"),
    ("evaluate.champion_metric=nosuch", r"champion_metric 'nosuch' is not a metric"),
    ("evaluate.champion_metric=valid_ctcvr_ne", r"'valid_ctcvr_ne' is not a metric"),
    ("evaluate.champion_metric=valid_ctr_auc", r"champion_mode must be max for .*'valid_ctr_auc'"),
    ("evaluate.champion_metric=valid_ctr_calibration", r"ratio best at 1"),
    ("evaluate.champion_metric=test_ctcvr_logloss", r"a test metric: .* use valid_ctcvr_logloss"),
    ("evaluate.champion_metric=test_cold_ctr_ne", r"a test metric: .* use valid_ctr_ne"),
    ("evaluate.ece_bins=1", r"\[evaluate\] ece_bins must be >= 2, got 1"),
    ("evaluate.reliability_bins=0", r"reliability_bins must be >= 2, got 0"),
    ("evaluate.position_buckets=[1, 4, 2]", r"position_buckets must be increasing"),
    ("export.strategy=nope", r"\[export\] strategy: unknown strategy 'nope'"),
    ("export.budget_fraction=1.5", r"budget_fraction must lie in \(0, 1\], got 1.5"),
    ("export.keep_versions=1", r"keep_versions must be >= 2"),
    ('export.score_splits=["test", "test"]', r"score_splits must name distinct"),
    ('export.score_splits=["holdout"]', r"score_splits must name some of train, valid, test"),
    ("ingest.split_mode=sometimes", r"\[ingest\] split_mode must be one of auto, time, files"),
    ("ingest.on_bad_rows=ignore", r"on_bad_rows must be one of quarantine, error, got 'ignore'"),
    ("ingest.format=xlsx", r"format must be one of csv, tsv, parquet, got 'xlsx'"),
    ("ingest.timestamp_format=unixms", r"timestamp_format must be .*got 'unixms'"),
    ("ingest.max_bad_fraction=1.1", r"max_bad_fraction must lie in \[0, 1\], got 1.1"),
    ("ingest.max_rows=-5", r"max_rows must be >= 0 \(0 = all\), got -5"),
    ('ingest.separator=";;"', r"separator must be one ASCII character"),
    ("market.start=notadate", r"market\.start must be an ISO 8601 date.*'notadate'"),
    ("market.start=2026-02-30", r"market\.start must be an ISO 8601 date"),
    ("market.n_users=0", r"market\.n_users must be positive, got 0"),
    ("market.cpa_share=1.5", r"market\.cpa_share must lie in \[0, 1\], got 1.5"),
    ("market.exploration=-1", r"market\.exploration must be >= 0"),
    ("market.new_ad_days=28", r"market\.new_ad_days must lie between 0 and market\.days"),
    ("embed.pooling=max", r"\[embed\] pooling must be 'mean' or 'cls'"),
    ("finetune.method=adapter", r"\[finetune\] method must be one of top, lora, got 'adapter'"),
    ("finetune.batch_size=1", r"batch_size must be >= 2 \(in-batch negatives\)"),
    ("finetune.select=first", r"select must be 'best' or 'last'"),
    ("finetune.query_weight=-1", r"pair weights must be >= 0"),
    ("understand.holdout=0.9", r"\[understand\] holdout must be in \(0, 0.5\], got 0.9"),
    ("understand.dtype=fp8", r"\[understand\] dtype must be auto, float32 or bfloat16"),
    ("understand.max_steps=0", r"\[understand\] max_steps must be >= 1, got 0"),
    ('embed.fields=["title", "title"]', r"fields must name distinct values"),
    ('embed.encoder=""', r"encoder must be"),
    ("features.windows_days=[7, 7]", r"\[features\] windows_days names a value twice"),
    ("features.windows_days=[0]", r"windows_days must be positive, got \[0\]"),
    ('features.behaviour_keys=["nosuch"]', r"unknown behaviour_keys \['nosuch'\]"),
    ("features.interest_half_life_days=0", r"interest_half_life_days must be positive"),
    ("features.interest_dim=0", r"interest_dim must be >= 1, got 0"),
    ("features.recent_clicks=0", r"recent_clicks must be >= 1, got 0"),
    ("features.history_length=-1", r"history_length must lie in \[0, 100\], got -1"),
    ("neural.attention=1", r"'neural\.attention' must be bool, got int 1"),
    ("neural.attention_dim=0", r"attention_dim must be >= 1, got 0"),
    ("neural.attention_hidden=[0]", r"attention_hidden must hold layer sizes >= 1"),
    ("split.train_days=0", r"\[split\] train_days must be >= 1, got 0"),
    ("split.valid_fraction=0", r"valid_fraction must lie in \(0, 1\), got 0.0"),
    ("split.test_fraction=0.9", r"valid_fraction \+ test_fraction must be below 1"),
    ("split.random_seed=-2", r"random_seed must be >= 0"),
    ("lightgbm.num_leaves=-1", r"\[lightgbm\] num_leaves must lie in \[2, 131072\], got -1"),
    ("lightgbm.cvr_num_leaves=1", r"cvr_num_leaves must lie in \[2, 131072\], got 1"),
    ("lightgbm.learning_rate=0", r"learning_rate must be > 0, got 0.0"),
    ("lightgbm.min_data_in_leaf=0", r"min_data_in_leaf must be >= 1, got 0"),
    ("lightgbm.feature_fraction=0", r"feature_fraction must lie in \(0, 1\], got 0.0"),
    ("lightgbm.bagging_fraction=1.2", r"bagging_fraction must lie in \(0, 1\], got 1.2"),
    ("lightgbm.num_boost_round=0", r"num_boost_round must be >= 1, got 0"),
    ("lightgbm.early_stopping_rounds=0", r"early_stopping_rounds must be >= 1"),
    ("lightgbm.lambda_l2=-1", r"lambda_l2 must be >= 0"),
    ("neural.dropout=1", r"\[neural\] dropout must be in \[0, 1\), got 1.0"),
    ("neural.lr=0", r"lr must be > 0, got 0.0"),
    ("neural.numeric_clip=-1", r"numeric_clip must be > 0"),
    ("neural.weight_decay=-0.1", r"weight_decay must be >= 0"),
    ("neural.mlp_sizes=[64, 0]", r"mlp_sizes must hold layer sizes >= 1"),
    ("calibration.method=beta", r"\[calibration\] calibration\.method must be isotonic or platt"),
    ("calibration.min_positives_isotonic=-1", r"min_positives_isotonic must be >= 0"),
    ('bidding.strategies=["greedy"]', r"\[bidding\] strategies: unknown strategy 'greedy'"),
    ("bidding.strategies=[]", r"strategies must name distinct strategies"),
    ('bidding.strategies=["linear", "linear"]', r"strategies must name distinct strategies"),
    ("bidding.paced_base=paced", r"paced_base must be constant, linear or ortb, got 'paced'"),
    ("bidding.budget_fractions=[0.5, 2]", r"budget_fractions must lie in \(0, 1\]"),
    ("bidding.budget_fractions=[0.5, 0.5]", r"budget_fractions names a budget twice"),
    ("bidding.max_multiplier=0", r"max_multiplier > 0"),
    ("bidding.base_bid=0", r"base_bid must be > 0"),
    ("bidding.bid_floor=-1", r"bid_floor and ortb_c must be >= 0"),
    ("logreg.C=0", r"\[logreg\] C and tol must be > 0, got 0.0"),
    ("logreg.hash_bits=40", r"\[logreg\] hash_bits must lie in \[1, 26\], got 40"),
    ("bidding.bid_cap=-1", r"bid_cap must be 0 \(none\) or >= bid_floor"),
    ("bidding.grid_points=1", r"grid_points >= 2, got 0.05, 6.0 and 1"),
    ("bidding.pacing_gain=-1", r"pacing_gain must be >= 0, got -1.0"),
    ("bidding.pacing_max=0.05", r"pacing_max must be > 0 and >= pacing_min \(0.1\)"),
    ("bidding.pacing_slot_cap=0.5", r"pacing_slot_cap must be 0 \(no cap\) or >= 1"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_a_bad_value_is_a_one_line_config_error(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_experiment("small", [override], directory=EXPERIMENTS)
    assert "\n" not in str(info.value)


def test_every_section_has_a_bad_value_case() -> None:
    tested = {override.split(".", 1)[0] for override, _ in BAD_VALUES}
    assert tested == set(SECTIONS)


@pytest.mark.parametrize(
    "override",
    [
        "data.source=ipinyou_bidlog",  # replay-only, but a valid source
        "data.source=generic",
        "evaluate.champion_metric=valid_ctr_logloss",
        "evaluate.champion_metric=valid_ctr_ne",
        "evaluate.position_buckets=[]",
        "evaluate.position_buckets=[0, 1, 3]",  # 0-based positions (Avazu's banner_pos)
        "ingest.timestamp_format=%y%m%d%H",
        "ingest.timestamp_format=unix_ms",
        'ingest.separator="\t"',
        "features.windows_days=[]",  # only the all-time counts
        "split.valid_fraction=0.3",
        "market.start=2026-03-02T06:00",
        "lightgbm.feature_fraction=1",
        "neural.cross_layers=0",
        "neural.ctcvr_weight=0",
        "bidding.pacing_slot_cap=0",
        "bidding.bid_cap=0",
        'bidding.strategies=["paced"]',
        "calibration.min_positives_isotonic=0",
    ],
)
def test_edge_values_that_the_code_handles_are_accepted(override: str) -> None:
    load_experiment("small", [override], directory=EXPERIMENTS)


def test_champion_metric_names_are_what_task_metrics_logs() -> None:
    import numpy as np

    from pipeline.scoring import PREFIXES, metric_names, task_metrics

    rng = np.random.default_rng(0)
    click = (rng.random(400) < 0.3).astype(int)
    conversion = click * (rng.random(400) < 0.5)
    p = rng.uniform(0.05, 0.95, (3, 400))
    users = rng.integers(0, 20, 400)
    logged = set()
    for prefix in PREFIXES:
        out = task_metrics(click, conversion, *p, users, prefix, n_bins=10)
        logged |= {k for k in out if not k.endswith("_positives")}
    names = metric_names()
    assert names == logged
    assert {"test_ctcvr_logloss", "valid_ctr_auc", "test_cold_ctr_gauc"} <= names
    for name in names:
        mode = "max" if name.endswith("auc") else "min"
        if name.endswith("calibration") or name.startswith("test_"):
            continue  # no best direction / reported, never chosen on
        cfg = load_experiment(
            "small",
            [f"evaluate.champion_metric={name}", f"evaluate.champion_mode={mode}"],
            directory=EXPERIMENTS,
        ).evaluate
        assert (cfg.champion_metric, cfg.champion_mode) == (name, mode)
