"""Results do not move by accident: the `small` pipeline (the session fixture `small_pipeline`,
which runs every stage as a user would) must give byte-identical feature files and equal
evaluation metrics to the recorded ones in `tests/golden/small.json`.

A change that is meant to move results updates the record on purpose, and its note gives the
before/after table: `ADCTR_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipeline/test_golden.py`
rewrites the file from the current code.

The text encoder's rounding depends on the CPU (bf16 where it has native bf16 matmuls, fp32
else, and the fp32 kernels block differently on AVX2 and AVX-512), and every feature built from
the embeddings follows it. So there is one record per CPU class, `small-<precision>-<isa>.json`
(e.g. `small-fp32-avx2.json`); on a class without a record the test skips and says how to make
one. bf16 rounding also differs between CPU models of one class (an AMD Zen 4 EPYC does not
reproduce the bf16-avx512 record made on another model), so a record names the CPU model it
was made on (`cpu`: vendor-family-model from /proc/cpuinfo), and a bf16 record is checked only
on that model (elsewhere the test skips and says so). A record named after the model as well,
`small-<precision>-<isa>-<vendor>-<family>-<model>.json`, is preferred where it exists; make
one by copying the class's record to that name and rewriting it.

An AVX-512 machine with native bf16 makes and checks the fp32-avx2 record too, with every
library held to AVX2: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4
AVX512_ICL"` (checked: so set, such a machine reproduced the record made on an AVX2 one).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"


def record_key() -> str:
    """The CPU class the record depends on: the encoder's precision here and torch's ISA."""
    import torch

    from features.text import EmbedConfig, precision

    return f"{precision(EmbedConfig())}-{torch.backends.cpu.get_cpu_capability().lower()}"


def cpu_model() -> str:
    """This CPU's vendor, family and model as /proc/cpuinfo names them ("" where unreadable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    facts = dict(line.split(":", 1) for line in lines if ":" in line)
    facts = {k.strip(): v.strip() for k, v in facts.items()}
    parts = [facts.get(k, "") for k in ("vendor_id", "cpu family", "model")]
    return "-".join(parts).lower() if all(parts) else ""


def golden_path() -> Path:
    """The record this machine checks: its CPU model's where one exists, else its class's."""
    generic = GOLDEN_DIR / f"small-{record_key()}.json"
    specific = GOLDEN_DIR / f"small-{record_key()}-{cpu_model()}.json"
    return specific if cpu_model() and specific.is_file() else generic


GOLDEN = golden_path()
SPEC = "feature_spec.json"
QUARANTINE = "quarantine/features/impressions.parquet"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def feature_files(root: Path) -> list[str]:
    """The feature spec and every table the features stage wrote (its manifest's)."""
    tables = json.loads((root / "features" / "_manifest.json").read_text())["tables"]
    return [SPEC, *(f"{name}.parquet" for name in sorted(tables))]


def current(root: Path) -> dict[str, Any]:
    features = {name: sha256(root / "features" / name) for name in feature_files(root)}
    features[QUARANTINE] = sha256(root / QUARANTINE)
    evaluation = json.loads((root / "evaluation" / "metrics.json").read_text())
    return {
        "features": features,
        "champion": evaluation["champion"],
        "metrics": evaluation["metrics"],
    }


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def metric_differences(want: dict, got: dict) -> list[str]:
    out = []
    for model in sorted(set(want) | set(got)):
        w, g = want.get(model, {}), got.get(model, {})
        out += [
            f"{model}.{k}: {w.get(k)} -> {g.get(k)}"
            for k in sorted(set(w) | set(g))
            if not same(w.get(k), g.get(k))
        ]
    return out


def other_model(record: dict[str, Any], key: str, cpu: str) -> str | None:
    """Why a record cannot be checked on this CPU model (None: it can): a bf16 record made on
    another model."""
    made_on = record.get("cpu")
    if made_on and key.startswith("bf16") and made_on != cpu:
        return (
            f"was made on CPU {made_on}, this one is {cpu or 'unknown'}, and bf16 rounding "
            "differs between CPU models"
        )
    return None


MAKE = "ADCTR_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipeline/test_golden.py"


def test_small_results_match_the_record(small_pipeline) -> None:
    got = current(small_pipeline.root)
    if os.environ.get("ADCTR_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        record = got | {"cpu": cpu_model()}
        GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {GOLDEN}")
    if not GOLDEN.is_file():
        pytest.skip(f"no golden record for this CPU class ({GOLDEN.name}); make one with {MAKE}")
    want = json.loads(GOLDEN.read_text())
    other = other_model(want, record_key(), cpu_model())
    if other:
        pytest.skip(
            f"{GOLDEN.name} {other}; make this model's record "
            f"(copied to {GOLDEN.stem}-{cpu_model()}.json) with {MAKE}"
        )
    names = sorted(set(got["features"]) | set(want["features"]))
    changed = [n for n in names if got["features"].get(n) != want["features"].get(n)]
    assert not changed, f"feature files changed bytes (or came or went): {changed}"
    diffs = metric_differences(want["metrics"], got["metrics"])
    assert not diffs, f"{len(diffs)} metrics moved, e.g. {diffs[:8]}"
    assert got["champion"] == want["champion"]


def test_metric_comparison_sees_a_moved_metric() -> None:
    want = {"neural": {"test_ctr_auc": 0.71, "test_cvr_auc": float("nan")}}
    assert metric_differences(want, json.loads(json.dumps(want))) == []
    moved = {"neural": {"test_ctr_auc": 0.7100001, "test_cvr_auc": float("nan")}}
    assert metric_differences(want, moved) == ["neural.test_ctr_auc: 0.71 -> 0.7100001"]


def test_a_bf16_record_is_checked_on_the_cpu_model_it_was_made_on_only() -> None:
    record = {"cpu": "authenticamd-26-2"}
    assert other_model(record, "bf16-avx512", "authenticamd-26-2") is None
    assert "authenticamd-25-17" in other_model(record, "bf16-avx512", "authenticamd-25-17")
    assert other_model(record, "fp32-avx2", "authenticamd-25-17") is None  # fp32 reproduces
    assert other_model({}, "bf16-avx512", "authenticamd-25-17") is None  # an older record
