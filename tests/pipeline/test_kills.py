"""Crash safety: `kill -9` of a stage at named points of its writes (`ADCTR_CRASH_AT`, see
`pipeline.atomic.crash_point`) leaves every published output either as it was or as the new run
wrote it, complete, with manifests that agree with each other; the rerun then gives the same
outputs as a run that was never killed.

Each case starts from a finished pipeline on a small generic log (the "old" state), reruns one
stage with a changed setting (the "new" state), kills it at the point, checks what is
published, reruns the stage and compares with a clean run of the new setting.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fault_cases import BASE_TOML, LOG, base_log, csv, merged, toml_text
from harness import stage_env

from pipeline.atomic import CRASH_ENV
from pipeline.io import MANIFEST, file_digest, input_digest

pytestmark = pytest.mark.slow

NAME = "kills"
STAGES = ("raw", "features", "train", "evaluate", "export")
# the setting each stage is rerun with: its output must change, so old and new differ
NEW = {
    "features": ["--set", "features.windows_days=[1, 3]"],
    "train": ["--set", "lightgbm.num_boost_round=25"],
    "evaluate": ["--set", "evaluate.ece_bins=10"],
    "export": ["--set", "export.shrinkage=5.0"],
}
# the folders each stage publishes (under data/<exp>/)
OUTPUTS = {
    "features": ("features",),
    "train": ("models/lightgbm", "models/lightgbm/predictions"),
    "evaluate": ("evaluation",),
    "export": ("exports",),
}
POINTS = {
    "features": (
        "quarantine/features:published",
        f"{NAME}/features:written",
        f"{NAME}/features:exchanged",
    ),
    "train": (
        "models/lightgbm:written",
        "models/lightgbm:exchanged",
        "models/lightgbm:published",
    ),
    "evaluate": (
        f"{NAME}/evaluation:written",
        f"{NAME}/evaluation:exchanged",
        f"{NAME}/evaluation:published",
    ),
    "export": ("export:parquet", "export:version", "export:linked"),
}
CASES = [(stage, point) for stage, points in POINTS.items() for point in points]
# stages reruns of one stage need first (the ones before it) and after (to re-create old state)
BEFORE = {s: STAGES[: STAGES.index(s)] for s in OUTPUTS}


def run(work: Path, env: dict[str, str], stage: str, *extra: str, crash: str = "") -> int:
    env = env | ({CRASH_ENV: crash} if crash else {})
    cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", NAME, *extra]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if not crash and proc.returncode != 0:
        raise AssertionError(f"{stage} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode


def published(root: Path, rel: str) -> dict | None:
    """A published folder's manifest (following the exports link), checked complete: every
    file it lists is there with its digest. None when nothing is published."""
    folder = (root / rel).resolve() if (root / rel).is_symlink() else root / rel
    if not (folder / MANIFEST).is_file():
        assert not folder.exists() or not any(folder.iterdir()), f"{rel} has files, no manifest"
        return None
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, digest in manifest.get("files", {}).items():
        assert file_digest(folder / name) == digest, f"{rel}/{name} differs from its manifest"
    for name in manifest.get("tables", {}):
        assert (folder / f"{name}.parquet").is_file(), f"{rel}/{name}.parquet is missing"
    return manifest


def fingerprint(root: Path, stage: str) -> dict[str, object]:
    """What a stage's outputs hold, without run ids and times: parquet bytes, metrics."""
    out: dict[str, object] = {}
    for rel in OUTPUTS[stage]:
        folder = (root / rel).resolve()
        for path in sorted(folder.rglob("*.parquet")):
            out[str(path.relative_to(folder))] = file_digest(path)
        metrics = folder / "metrics.json"
        if metrics.is_file():
            doc = json.loads(metrics.read_text())
            out["metrics.json"] = {k: v for k, v in doc.items() if k != "run_id"}
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = tmp_path_factory.mktemp("kills_mlflow") / "mlflow.db"
    return stage_env(store)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A work folder with every stage run once: the old state every case starts from."""
    work = tmp_path_factory.mktemp("kills_old")
    (work / "experiments").mkdir()
    (work / "experiments" / f"{NAME}.toml").write_text(toml_text(merged(BASE_TOML, {})))
    (work / LOG).write_bytes(csv(base_log()))
    for stage in STAGES:
        run(work, env, stage)
    return work


@pytest.fixture(scope="module")
def clean_new(old: Path, env: dict[str, str], tmp_path_factory) -> dict[str, dict]:
    """Per stage: the fingerprint of a never-killed rerun with the new setting."""
    out = {}
    for stage, extra in NEW.items():
        work = tmp_path_factory.mktemp(f"kills_clean_{stage}")
        shutil.copytree(old, work, dirs_exist_ok=True, symlinks=True)
        run(work, env, stage, *extra)
        out[stage] = fingerprint(work / "data" / NAME, stage)
    return out


@pytest.mark.parametrize(("stage", "point"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_kill_leaves_old_or_new_and_the_rerun_matches(
    stage: str, point: str, old: Path, clean_new: dict, env: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(old, work, symlinks=True)
    root = work / "data" / NAME
    before = {rel: published(root, rel) for rel in OUTPUTS[stage]}
    code = run(work, env, stage, *NEW[stage], crash=point)
    assert code == -signal.SIGKILL, f"the stage did not reach {point} (exit {code})"
    after = {rel: published(root, rel) for rel in OUTPUTS[stage]}
    states = []
    for rel, manifest in after.items():
        assert manifest is not None, f"{rel}: nothing published after the kill"
        states.append("old" if manifest == before[rel] else "new")
    if stage == "train":  # a model and its predictions are one unit: the same run
        ids = {after[rel].get("run_id") for rel in OUTPUTS["train"]}
        assert len(ids) == 1, f"models and predictions from different runs: {ids} ({states})"
    if stage == "features":  # built from the raw/ that is published
        assert after["features"]["inputs"]["raw"] == input_digest(root / "raw")
    run(work, env, stage, *NEW[stage])
    assert fingerprint(root, stage) == clean_new[stage]
    leftovers = [p for p in root.rglob(".*") if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []
