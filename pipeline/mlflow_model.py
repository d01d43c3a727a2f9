"""The MLflow pyfunc of a trained adctr model (logged as "models from code", no pickle).

Input: a feature frame (columns as in the `FeatureSpec`, e.g. rows of
`features/test.parquet`). Output: calibrated `pctr`, `pcvr`, `pctcvr`.
The artifact `model_dir` holds the model's own files plus `adctr_model.json` (`ModelMeta`:
kind, spec, calibrators), written by the train stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from features.spec import FeatureSpec
from models.calibration import Calibrator
from pipeline.datasets import to_matrix

META_FILE = "adctr_model.json"
ESTIMATOR_DIR = "model"  # the estimator's own files (LightGBM text models, safetensors)
HISTORY_FILE = "history.json"  # per-epoch training curves (neural; [] for the others)


@dataclass(frozen=True)
class ModelMeta:
    """What a model directory says besides the estimator: its kind, the feature spec it was
    trained on and its calibrators (`adctr_model.json`)."""

    kind: str
    spec: FeatureSpec
    calibrators: dict[str, Calibrator]

    def to_json(self) -> str:
        cals = {k: c.to_dict() for k, c in self.calibrators.items()}
        return json.dumps({"kind": self.kind, "spec": self.spec.to_dict(), "calibrators": cals})

    @classmethod
    def load(cls, model_dir: Path) -> ModelMeta:
        meta = json.loads((Path(model_dir) / META_FILE).read_text())
        cals = {k: Calibrator.from_dict(v) for k, v in meta["calibrators"].items()}
        return cls(meta["kind"], FeatureSpec.from_dict(meta["spec"]), cals)


def load_estimator(model_dir: Path, num_threads: int | None = None) -> tuple[Any, ModelMeta]:
    """The estimator saved in `model_dir` (`num_threads` overrides its saved thread count) and
    its metadata."""
    meta = ModelMeta.load(model_dir)
    if meta.kind == "lightgbm":
        from models.lgbm import LightGBMCTR

        return LightGBMCTR.load(model_dir / ESTIMATOR_DIR, num_threads), meta
    if meta.kind == "logreg":
        from models.logreg import LogRegCTR

        return LogRegCTR.load(model_dir / ESTIMATOR_DIR, num_threads), meta
    from models.neural import NeuralCTR

    return NeuralCTR.load(model_dir / ESTIMATOR_DIR, num_threads), meta


def calibrate(raw: np.ndarray, calibrators: dict[str, Calibrator]) -> np.ndarray:
    """(N, 3) raw [pctr, pcvr, pctcvr] -> calibrated, with pctcvr = pctr * pcvr."""
    pctr = calibrators["ctr"].transform(raw[:, 0]) if "ctr" in calibrators else raw[:, 0]
    pcvr = calibrators["cvr"].transform(raw[:, 1]) if "cvr" in calibrators else raw[:, 1]
    return np.column_stack([pctr, pcvr, pctr * pcvr])


class AdctrModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        model_dir = Path(context.artifacts["model_dir"])
        self.estimator, self.meta = load_estimator(model_dir)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        frame = (
            pl.from_pandas(model_input) if isinstance(model_input, pd.DataFrame) else model_input
        )
        x = to_matrix(frame, self.meta.spec, self.meta.kind)
        out = calibrate(self.estimator.predict_proba(x), self.meta.calibrators)
        return pd.DataFrame(out, columns=["pctr", "pcvr", "pctcvr"])


mlflow.models.set_model(AdctrModel())
