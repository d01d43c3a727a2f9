"""The MLflow pyfunc of a trained adctr model (logged as "models from code", no pickle).

Input: a feature frame (columns as in `feature_spec.json`, e.g. rows of
`features/test.parquet`). Output: calibrated `pctr`, `pcvr`, `pctcvr`.
The artifact `model_dir` holds the model's own files plus `adctr_model.json` (kind, spec,
calibrators), written by the train stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from models.calibration import Calibrator
from pipeline.datasets import to_matrix

META_FILE = "adctr_model.json"


def load_estimator(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The estimator saved in `model_dir` and its metadata (kind, spec, calibrators)."""
    meta = json.loads((model_dir / META_FILE).read_text())
    if meta["kind"] == "lightgbm":
        from models.lgbm import LightGBMCTR

        return LightGBMCTR.load(model_dir / "model"), meta
    from models.neural import NeuralCTR

    return NeuralCTR.load(model_dir / "model"), meta


def calibrate(raw: np.ndarray, calibrators: dict[str, Calibrator]) -> np.ndarray:
    """(N, 3) raw [pctr, pcvr, pctcvr] -> calibrated, with pctcvr = pctr * pcvr."""
    pctr = calibrators["ctr"].transform(raw[:, 0]) if "ctr" in calibrators else raw[:, 0]
    pcvr = calibrators["cvr"].transform(raw[:, 1]) if "cvr" in calibrators else raw[:, 1]
    return np.column_stack([pctr, pcvr, pctr * pcvr])


class AdctrModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        model_dir = Path(context.artifacts["model_dir"])
        self.estimator, self.meta = load_estimator(model_dir)
        self.calibrators = {k: Calibrator.from_dict(v) for k, v in self.meta["calibrators"].items()}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        frame = (
            pl.from_pandas(model_input) if isinstance(model_input, pd.DataFrame) else model_input
        )
        x = to_matrix(frame, self.meta["spec"], self.meta["kind"])
        out = calibrate(self.estimator.predict_proba(x), self.calibrators)
        return pd.DataFrame(out, columns=["pctr", "pcvr", "pctcvr"])


mlflow.models.set_model(AdctrModel())
