"""Fault injection: every malformed input of tests/pipeline/fault_cases.py, run as a user runs
it (`python -m pipeline <stage> --experiment <case>` in a scratch working directory holding
`experiments/<case>.toml` and the input files), ends in a one-line `error:` with exit 2, in a
quarantine with exact row accounting, or (a click-only log) in a published export. Never in a
traceback, never in a silent success.

Cases the current code does not handle are strict xfails whose reason says what happens today;
the fix that handles one turns it into an unexpected pass, which fails until its mark goes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from fault_cases import CASES, REPO, Case, Error, Ok, Outcome, Quarantine, base_log
from harness import stage_env

from pipeline.io import read_manifest

pytestmark = pytest.mark.slow

# where each stage publishes, under data/<experiment>/
OUTPUT = {
    "raw": "raw",
    "features": "features",
    "train": "models",
    "evaluate": "evaluation",
    "export": "exports",
}
SUMMARY = re.compile(r"^\[(\w+)\] rows in=([\d,]+) out=([\d,]+) quarantined=([\d,]+)", re.M)
FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


@dataclass(frozen=True)
class StageRun:
    stage: str
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def counts(self) -> tuple[int, int, int] | None:
        """(rows in, out, quarantined) of the stage's summary line (stdout, else stderr)."""
        for text in (self.stdout, self.stderr):
            found = SUMMARY.findall(text)
            if found:
                return tuple(int(v.replace(",", "")) for v in found[-1][1:])  # type: ignore[return-value]
        return None

    def raised_at(self) -> str:
        """The innermost frame of the project's own code in a traceback ("" if none)."""
        ours = [
            f"{Path(f).relative_to(REPO)}:{line} in {func}"
            for f, line, func in FRAME.findall(self.stderr)
            if Path(f).is_relative_to(REPO)
        ]
        return ours[-1] if ours else ""

    def describe(self) -> str:
        where = f" raised at {self.raised_at()}" if "Traceback" in self.stderr else ""
        return f"{self.stage}: exit {self.returncode}, {self.last_line()[:300]!r}{where}"


@pytest.fixture(scope="module")
def base() -> pl.DataFrame:
    frame = base_log()
    assert not frame.is_duplicated().any(), "the base log must not repeat a row"
    return frame


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One MLflow store for the module (each case is its own MLflow experiment)."""
    store = tmp_path_factory.mktemp("faults_mlflow") / "mlflow.db"
    return stage_env(store)


def run_case(case: Case, work: Path, base: pl.DataFrame, env: dict[str, str]) -> list[StageRun]:
    """Write the case's inputs into `work`, then run its stages until one fails."""
    name = case.experiment or case.name
    toml = work / "experiments" / f"{name}.toml"
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_bytes(case.toml())
    for rel, data in case.files(base).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    runs: list[StageRun] = []
    for i, stage in enumerate(case.stages):
        if case.tamper and i == len(case.stages) - 1:
            case.tamper(work / "data" / name)
        sets = [arg for s in case.sets for arg in ("--set", s)]
        cmd = [sys.executable, "-m", "pipeline", stage, "--experiment", name, *sets]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        runs.append(StageRun(stage, proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
    return runs


def unmet(outcome: Outcome, runs: list[StageRun], exp_dir: Path) -> str:
    """Why the runs do not show `outcome` ("" when they do)."""
    if isinstance(outcome, Error):
        return error_unmet(outcome, runs[-1], exp_dir)
    if runs[-1].returncode != 0:
        return f"{runs[-1].stage} failed"
    if isinstance(outcome, Quarantine):
        return quarantine_unmet(outcome, runs, exp_dir)
    return ok_unmet(outcome, exp_dir)


def error_unmet(outcome: Error, last: StageRun, exp_dir: Path) -> str:
    if last.returncode == 0:
        return "every stage exited 0 (a silent success)"
    if last.stage not in outcome.stages:
        return f"failed at {last.stage}, expected an error at one of {outcome.stages}"
    errors = [line for line in last.stderr.splitlines() if line.startswith("error:")]
    if last.returncode != 2 or len(errors) != 1 or not last.last_line().startswith("error:"):
        return "not a one-line error with exit 2"
    if not re.search(outcome.match, last.last_line()):
        return f"the error line does not match {outcome.match!r}"
    if (exp_dir / OUTPUT[last.stage]).exists():
        return f"{last.stage} failed but published {OUTPUT[last.stage]}/"
    return ""


def quarantine_unmet(outcome: Quarantine, runs: list[StageRun], exp_dir: Path) -> str:
    counts = {r.stage: r.counts() for r in runs}
    for stage in outcome.stages:
        c = counts[stage]
        if c is None:
            return f"{stage} printed no summary line"
        if c[0] != c[1] + c[2]:
            return f"{stage}: rows in {c[0]} != out {c[1]} + quarantined {c[2]}"
    if not any(counts[stage][2] > 0 for stage in outcome.stages):  # type: ignore[index]
        return f"nothing quarantined at {outcome.stages}"
    kept = quarantined_rows(exp_dir)
    total = sum(c[2] for c in counts.values() if c)
    if kept != total:
        return f"quarantine/ holds {kept} rows, the summary lines say {total}"
    return ""


def ok_unmet(outcome: Ok, exp_dir: Path) -> str:
    out = exp_dir / OUTPUT[outcome.stage]
    if not any(out.rglob("_manifest.json")):
        return f"{outcome.stage} exited 0 but published no manifest under {OUTPUT[outcome.stage]}/"
    if outcome.stage in ("train", "evaluate", "export"):
        rows = read_manifest(exp_dir / "features")["tables"]
        empty = [s for s in ("train", "valid", "test") if rows[s]["rows"] == 0]
        if empty:
            return f"{outcome.stage} exited 0 on empty {empty} split(s)"
    if outcome.stage == "export" and pl.read_parquet(out / "bid_weights.parquet").height == 0:
        return "export published an empty table"
    return ""


def quarantined_rows(exp_dir: Path) -> int:
    """Rows in every quarantine table of the experiment."""
    files = sorted((exp_dir / "quarantine").rglob("*.parquet"))
    return sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)


def params() -> list:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.today)] if case.today else []
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def test_case_names_are_unique_and_enough() -> None:
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names) >= 30


@pytest.mark.parametrize("case", params())
def test_fault(case: Case, tmp_path: Path, base: pl.DataFrame, env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    runs = run_case(case, work, base, env)
    story = "; ".join(r.describe() for r in runs)
    assert not any("Traceback" in r.stderr for r in runs), f"a traceback ({story})"
    exp_dir = work / "data" / (case.experiment or case.name)
    reasons = [unmet(o, runs, exp_dir) for o in case.expect]
    assert "" in reasons, f"{' / '.join(reasons)} ({story})"
    for rel in case.must_not_exist:
        assert not (work / rel).exists(), f"{work / rel} was written ({story})"
