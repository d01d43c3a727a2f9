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
    """Where an experiment's files live: `<data.root>/<experiment>/...`."""

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
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

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
