"""Text features for the features stage (filled in by the text-embedding work).

`add_text_features(frame, layout, exp)` returns the frame with text feature columns added and
their `feature_spec.json` entries; until then it adds none.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.config import Experiment
from pipeline.stage import Layout


def add_text_features(
    frame: pl.LazyFrame, layout: Layout, exp: Experiment
) -> tuple[pl.LazyFrame, list[dict[str, Any]]]:
    del layout, exp
    return frame, []
