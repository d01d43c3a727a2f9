"""`python -m pipeline` as a user runs it: a bad config or missing input is a one-line
`error: ...` on stderr naming the problem, a non-zero exit code and no traceback.

Reading a config imports neither torch, scikit-learn nor LightGBM (a bad config fails in a
fraction of a second); stages that need them import them. Only the cases the issue names run as
real processes; the rest call `pipeline.__main__.main` in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "market.n_adz=5"], ["market.n_adz", "unknown key"]),
        (["--set", "market.n_ads=lots"], ["market.n_ads", "must be int"]),
        (["--experiment", "no_such_experiment"], ["no_such_experiment", "does not exist"]),
    ],
    ids=["unknown-key", "wrong-type", "missing-experiment"],
)
def test_bad_config_process_exits_with_one_line(
    args: list[str], needles: list[str], tmp_path: Path
) -> None:
    base = ["--experiment", "small", "--set", f"data.root={tmp_path / 'data'}"]
    proc = cli("generate", *base, *args, tmp_path=tmp_path)
    assert proc.returncode != 0
    one_error_line(proc.stderr, *needles)
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing written for a config that did not load


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "markt.n_ads=5"], ["[markt]", "unknown section"]),
        (["--set", "features.text=1"], ["features.text", "must be bool"]),
        (["--set", "train.models=lightgbm"], ["train.models", "must be"]),
        (["--set", "market.n_ads"], ["market.n_ads", "section.key=value"]),
        (["--set", "market.n_ads=0"], ["market.n_ads must be positive"]),
    ],
    ids=["unknown-section", "wrong-bool", "str-for-list", "no-equals", "invalid-value"],
)
def test_bad_config_in_process(
    args: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["generate", "--experiment", "small", "--set", f"data.root={tmp_path}", *args])
    assert code != 0
    one_error_line(capsys.readouterr().err, *needles)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("content", "args", "needles"),
    [
        (b"[market]\nn_ads = 5 # caf\xe9\n", [], ["bad.toml", "not UTF-8"]),
        (b"market = 5\n", [], ["'market' must be a table"]),
        (b"market = 5\n", ["--set", "market.n_ads=9"], ["'market' must be a table"]),
        (b"", ["--set", "market=5"], ["market=5", "section.key=value"]),
        (b"", ["--set", "market.=5"], ["section.key=value"]),
    ],
    ids=["latin-1", "section-not-a-table", "override-into-a-value", "set-a-section", "no-key"],
)
def test_a_bad_experiment_file_is_one_line(
    content: bytes,
    args: list[str],
    needles: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "bad.toml").write_bytes(content)
    monkeypatch.chdir(tmp_path)  # experiments/ is read from the working directory
    code = main(["features", "--experiment", "bad", "--set", "data.root=data", *args])
    assert code == 2
    one_error_line(capsys.readouterr().err, *needles)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["../../tmp/x", "a/b", "small.toml", "", "caf\u00e9"])
def test_an_experiment_name_is_letters_digits_dash_underscore(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["features", "--experiment", name, "--set", f"data.root={tmp_path}"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "experiment name", repr(name))
    assert not any(tmp_path.iterdir())


def test_missing_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["features", "--experiment", "small", "--set", f"data.root={tmp_path}"])
    assert code != 0
    line = one_error_line(capsys.readouterr().err, "_manifest.json")
    assert str(tmp_path / "small" / "raw") in line


def test_unknown_stage_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_lists_every_stage(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for stage in ("generate", "ingest", "embed", "features", "train", "evaluate", "export", "ui"):
        assert stage in out


def test_generate_prints_a_one_line_summary(tmp_path: Path) -> None:
    root = tmp_path / "data"
    sizes = ["market.n_impressions=2000", "market.n_users=300", "market.n_ads=100"]
    overrides = [arg for s in sizes for arg in ("--set", s)]
    proc = cli(
        "generate",
        "--experiment",
        "small",
        "--set",
        f"data.root={root}",
        *overrides,
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = [line for line in proc.stdout.splitlines() if line.startswith("[generate]")]
    assert len(summary) == 1, proc.stdout
    assert "[generate] rows in=" not in proc.stderr  # printed once, not logged again
    assert "out=2,000" in summary[0]
    assert str(root / "small" / "raw") in summary[0]
    assert (root / "small" / "raw" / "_manifest.json").is_file()


def test_reading_a_config_imports_no_heavy_library() -> None:
    code = (
        "import sys; from pipeline.config import load_experiment; load_experiment('default'); "
        "print(sorted(m for m in ('torch', 'sklearn', 'lightgbm', 'transformers', 'mlflow') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_bench_names_its_sections_and_refuses_an_unknown_one(capsys) -> None:
    from pipeline.bench.__main__ import main as bench

    assert bench(["--help"]) == 0
    assert "embed, finetune, understand, features, neural" in capsys.readouterr().out
    assert bench(["nope"]) == 2
    assert "unknown bench section ['nope']" in capsys.readouterr().err
