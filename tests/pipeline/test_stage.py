"""`Layout`: every path of an experiment's data, under `<data.root>/<experiment>/`."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_experiment
from pipeline.stage import Layout

REPO = Path(__file__).resolve().parents[2]


def test_layout_follows_data_root() -> None:
    exp = load_experiment("small", ["data.root=/somewhere"], directory=REPO / "experiments")
    assert Layout.of(exp).root == Path("/somewhere/small")


def test_every_path_lives_under_the_experiment_root() -> None:
    layout = Layout(Path("/d/exp"))
    paths = {
        "raw": layout.raw,
        "features": layout.features,
        "feature_spec": layout.feature_spec,
        "model_dir": layout.model_dir("neural"),
        "prediction_dir": layout.prediction_dir("lightgbm"),
        "evaluation": layout.evaluation,
        "evaluation_metrics": layout.evaluation_metrics,
        "replay": layout.replay,
        "exports": layout.exports,
        "export_versions": layout.export_versions,
        "features_quarantine": layout.features_quarantine,
        "ingest_quarantine": layout.ingest_quarantine("criteo"),
    }
    expected = {
        "raw": "raw",
        "features": "features",
        "feature_spec": "features/feature_spec.json",
        "model_dir": "models/neural",
        "prediction_dir": "models/lightgbm/predictions",
        "evaluation": "evaluation",
        "evaluation_metrics": "evaluation/metrics.json",
        "replay": "replay",
        "exports": "exports",
        "export_versions": "export-versions",
        "features_quarantine": "quarantine/features",
        "ingest_quarantine": "quarantine/ingest_criteo.parquet",
    }
    assert {k: str(p.relative_to(layout.root)) for k, p in paths.items()} == expected
    # the embedding cache is shared by the experiments of one data root
    assert layout.embed_cache == Path("/d/_cache/embeddings")
