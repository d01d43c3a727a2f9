"""Shared fixtures. `small_pipeline` runs every stage of the `small` experiment once per test
session (as a user would, through `python -m pipeline`) into a temporary data root and MLflow
store; end-to-end, contract and browser tests read what it made."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class PipelineRun:
    data_root: Path
    tracking_uri: str
    env: dict[str, str]

    @property
    def root(self) -> Path:
        return self.data_root / "small"


# fast settings so the whole small pipeline stays well under a minute on 2 cores
SMALL_OVERRIDES = ["--set", "neural.epochs=2", "--set", "lightgbm.num_boost_round=200"]


def run_stage(stage: str, run: PipelineRun, *extra: str, check: bool = True):
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        stage,
        "--experiment",
        "small",
        "--set",
        f"data.root={run.data_root}",
        *SMALL_OVERRIDES,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=run.env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    base = tmp_path_factory.mktemp("small_pipeline")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    run = PipelineRun(base / "data", uri, env)
    for stage in ("raw", "embed", "features", "train", "evaluate"):
        run_stage(stage, run)
    return run


# --- tiny random-weight BERT for the text-embedding unit tests (owned by the embed tests) ---
_TINY_WORDS = (
    "the a an and or of for with to in on by is are new best cheap free sale shop buy get "
    "running shoes shoe trail road coffee espresso machine bike electric yoga mat headphones "
    "wireless watch smart hotel flight deal insurance car dog food laptop gaming course online "
    "red blue green black white lightweight waterproof fast delivery off % - . , ! ? : # "
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z"
)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BERT (hidden 32, 2 layers) saved with its tokenizer: a local HF dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("models") / "tiny-bert"
    path.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = list(dict.fromkeys(_TINY_WORDS.split()))
    vocab = specials + words + [f"##{w}" for w in words if len(w) == 1 and w.isalnum()]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).eval().save_pretrained(path)
    return path
