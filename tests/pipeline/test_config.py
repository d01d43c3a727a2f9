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
    assert flat["train.models"] == ["lightgbm", "neural"]


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
