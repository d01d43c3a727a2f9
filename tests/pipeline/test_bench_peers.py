"""`make bench-peers` without its peer venv: the export of the feature matrix, adctr's runs on
it, the one-line refusal without features, and the peer script's imports (it runs in
.venv-peers, where the project is not installed)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.bench.peers import PEER_SCRIPT, SPLITS, main
from pipeline.datasets import load_split
from pipeline.stage import Layout

ROWS = 600


def test_the_peer_script_imports_no_project_module() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(PEER_SCRIPT.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert {"numpy", "torch", "deepctr_torch"} <= imported
    assert not imported & {"pipeline", "features", "models", "adctr"}, imported


def test_without_features_it_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["export", "--experiment", "small", "--set", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run `make features` first" in err, err


@pytest.mark.slow
def test_export_and_adctr_runs_on_a_copy_of_small(small_pipeline, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "small")
    shutil.copytree(small_pipeline.root / "features", layout.features)
    opts = ["--experiment", "small", "--set", f"data.root={tmp_path}", "--rows", str(ROWS)]
    assert main(["export", *opts]) == 0
    path = layout.bench_peers / f"matrix-{ROWS}.npz"
    data = np.load(path)
    per_split = {"categorical", "numeric", "peer_numeric", "click", "conversion"}
    names = {"features", "categorical_names", "cardinalities", "numeric_names"}
    assert set(data.files) == names | {f"{s}_{k}" for s in SPLITS for k in per_split}
    for split in SPLITS:
        expected = load_split(layout, split).head(ROWS)
        np.testing.assert_array_equal(data[f"{split}_click"], expected["click"].to_numpy())
        codes = data[f"{split}_categorical"]
        assert codes.shape == (len(expected), len(data["categorical_names"]))
        assert ((codes >= 0) & (codes < data["cardinalities"])).all()
        peer, raw = data[f"{split}_peer_numeric"], data[f"{split}_numeric"]
        assert np.isfinite(peer).all() and np.isnan(raw).any()  # NaN -> 0 plus indicators
        assert peer.shape[1] > raw.shape[1]
        assert np.isin(peer[:, raw.shape[1] :], (0.0, 1.0)).all()
    stamp = path.stat().st_mtime_ns
    assert main(["export", *opts]) == 0 and path.stat().st_mtime_ns == stamp  # up to date

    for extra in (["--matrix", str(path)], ["--vectors"]):
        out = tmp_path / "run"
        files = ["--out", f"{out}.json", "--predictions", f"{out}.npy", "--seed", "1"]
        assert main(["adctr", *opts, *files, *extra]) == 0
        result = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
        assert result["rows"] == ROWS and result["fit_s"] > 0
        p = np.load(f"{out}.npy")
        assert p.shape == (len(data["test_click"]),) and ((p > 0) & (p < 1)).all()
