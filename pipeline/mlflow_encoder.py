"""The MLflow pyfunc of a fine-tuned text encoder (logged as "models from code", no pickle).

Input: a frame with a `text` column. Output: one unit-norm float32 vector per row (mean
pooling, as the embed stage; an empty text gives the zero vector). The artifact `encoder_dir`
is the tuned model as a normal local Hugging Face directory (`pipeline.finetune`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.text import EmbedConfig, TextEncoder


class AdctrEncoder(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        directory = context.artifacts["encoder_dir"]
        self.encoder = TextEncoder(EmbedConfig(encoder=directory, dtype="float32"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        texts = [None if t is None or t != t else str(t) for t in model_input["text"]]
        return self.encoder.encode(texts, progress=False).vectors


mlflow.models.set_model(AdctrEncoder())
