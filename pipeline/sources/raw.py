"""The `raw` stage: runs the data source that `data.source` names. Reads the experiment config
(and, for a dataset, the files at `data.path`). Writes `raw/` in the canonical schema: the
simulator's `generate` for `simulated` (+ `oracle/`), else the `ingest` adapter of that name
(+ `quarantine/ingest_<source>.parquet`)."""

from __future__ import annotations

from pipeline.config import ConfigError, Experiment
from pipeline.sources import ingest
from pipeline.sources.simulated import SOURCE as SIMULATED
from pipeline.sources.simulated import generate
from pipeline.stage import StageSummary

SOURCES = (SIMULATED, *ingest.ADAPTERS)  # the sources that build `raw/`


def run(exp: Experiment) -> StageSummary:
    """Build `raw/` from `data.source`; the summary is that source's stage (generate | ingest)."""
    source = exp.data.source
    if source == SIMULATED:
        return generate.run(exp)
    if source in ingest.ADAPTERS:
        return ingest.run(exp)
    raise ConfigError(f"data.source = '{source}' is not a known source ({', '.join(SOURCES)})")
