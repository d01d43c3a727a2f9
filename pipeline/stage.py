"""What every stage shares: logging set-up, the data layout, and the one-line summary."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Experiment

log = logging.getLogger("adctr")


@dataclass(frozen=True)
class Layout:
    """Where an experiment's files live: `<data.root>/<experiment>/...`. Every path a stage
    reads or writes is named here, and nowhere else."""

    root: Path

    @classmethod
    def of(cls, exp: Experiment) -> Layout:
        return cls(Path(exp.data.root) / exp.name)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def oracle(self) -> Path:
        return self.root / "oracle"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def encoder(self) -> Path:
        """The fine-tuned text encoder (`finetune`): `model/` and its manifest."""
        return self.root / "encoder"

    @property
    def encoder_model(self) -> Path:
        """The tuned weights as a normal local Hugging Face model directory."""
        return self.encoder / "model"

    @property
    def queries(self) -> Path:
        """The understood queries (`understand`): `queries.parquet`, `model/`, the manifest."""
        return self.root / "queries"

    @property
    def queries_model(self) -> Path:
        """The query tagger (encoder + intent, sentiment and entity heads)."""
        return self.queries / "model"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def feature_spec(self) -> Path:
        """The `FeatureSpec` of the feature tables (written with them)."""
        return self.features / "feature_spec.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_dir(self, kind: str) -> Path:
        """One trained model's files (estimator, calibrators, spec, history)."""
        return self.models / kind

    def prediction_dir(self, kind: str) -> Path:
        """One model's valid / test predictions (raw and calibrated), inside its model folder:
        the two are published together, in one rename."""
        return self.model_dir(kind) / "predictions"

    @property
    def tune(self) -> Path:
        """What `tune` writes (the search itself lives in MLflow)."""
        return self.root / "tune"

    @property
    def tune_best(self) -> Path:
        """The best settings found by `tune`, a TOML fragment to paste into an experiment."""
        return self.tune / "best.toml"

    @property
    def evaluation(self) -> Path:
        """The comparison tables and `metrics.json` written by `evaluate`."""
        return self.root / "evaluation"

    @property
    def evaluation_metrics(self) -> Path:
        """Every model's test metrics and the champion's kind (`evaluate`)."""
        return self.evaluation / "metrics.json"

    @property
    def replay(self) -> Path:
        return self.root / "replay"

    @property
    def exports(self) -> Path:
        """A symlink to the published version under `export_versions`."""
        return self.root / "exports"

    @property
    def export_versions(self) -> Path:
        return self.root / "export-versions"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def features_quarantine(self) -> Path:
        """Impressions the features stage set aside (with a reason)."""
        return self.quarantine / "features"

    @property
    def understand_quarantine(self) -> Path:
        """Annotation rows the understand stage could not use (with a reason)."""
        return self.quarantine / "understand"

    def ingest_quarantine(self, source: str) -> Path:
        """Malformed rows of one ingest source (file, line, reason)."""
        return self.quarantine / f"ingest_{source}.parquet"

    @property
    def realdata(self) -> Path:
        """`make realdata`'s table of every real-data experiment (beside the experiments)."""
        return self.root.parent / "realdata"

    @property
    def bench_peers(self) -> Path:
        """`make bench-peers`: the exported model input, each run's predictions, the results."""
        return self.root / "bench-peers"

    @property
    def embed_cache(self) -> Path:
        """Shared across experiments: keyed by (encoder id, text hash)."""
        return self.root.parent / "_cache" / "embeddings"


@dataclass
class StageSummary:
    """Printed as one line at the end of every stage."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    output: str = ""
    started: float = field(default_factory=time.perf_counter)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.notes.items())
        return (
            f"[{self.stage}] rows in={self.rows_in:,} out={self.rows_out:,} "
            f"quarantined={self.rows_quarantined:,} in {self.seconds:.1f}s -> {self.output}{extra}"
        )


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
