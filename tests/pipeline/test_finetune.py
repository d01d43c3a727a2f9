"""The finetune stage on the `small` marketplace with the tiny random BERT as its base: train
period only, bit-identical for a seed, bad encoders refused in one line, up-to-date skips."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from features.split import SplitConfig, assign_split
from pipeline.__main__ import main
from pipeline.config import load_experiment
from pipeline.stage import Layout

STEPS = 8


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def settings(root: Path, base: Path) -> list[str]:
    sets = {
        "data.root": root,
        "finetune.base": base,
        "finetune.max_steps": STEPS,
        "finetune.eval_every": STEPS,
        "finetune.top_layers": 1,
        "finetune.batch_size": 16,
        "finetune.lr": 0.003,
        "finetune.select": "last",  # the weights of the last step, whatever valid says
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def make_raw(root: Path) -> Layout:
    assert main(["raw", "--experiment", "small", "--set", f"data.root={root}"]) == 0
    return Layout(root / "small")


def tune(root: Path, base: Path, *extra: str) -> dict:
    assert main(["finetune", "--experiment", "small", *settings(root, base), *extra]) == 0
    return json.loads((Layout(root / "small").encoder / "_manifest.json").read_text())


def weights(root: Path) -> bytes:
    return (Layout(root / "small").encoder_model / "model.safetensors").read_bytes()


def plant(layout: Layout, period: str) -> None:
    """A click from a search query on an ad of another category, and a user's view -> click,
    in the given period of the raw log (rewritten in place, same rows)."""
    imp = pl.read_parquet(layout.raw / "impressions.parquet")
    ads = pl.read_parquet(layout.raw / "ads.parquet")
    _, bounds = assign_split(imp, SplitConfig())
    valid_start = datetime.fromisoformat(bounds["valid_start"])
    inside = pl.col("ts") >= valid_start if period == "valid" else pl.col("ts") < valid_start
    target = imp.filter(inside & pl.col("query").is_not_null() & (pl.col("click") == 0))
    row_id = target["impression_id"][0]
    odd_ad = int(ads.sort("ad_id")["ad_id"][-1])
    imp = imp.with_columns(
        pl.when(pl.col("impression_id") == row_id).then(1).otherwise(pl.col("click"))
        .cast(pl.Int8).alias("click"),
        pl.when(pl.col("impression_id") == row_id).then(odd_ad).otherwise(pl.col("ad_id"))
        .alias("ad_id"),
    )  # fmt: skip
    imp.write_parquet(layout.raw / "impressions.parquet")
    beh = pl.read_parquet(layout.raw / "behaviour.parquet")
    clicks = beh.filter(inside & (pl.col("event") == "click")).head(20)["ts"]
    beh = beh.with_columns(
        pl.when(pl.col("ts").is_in(clicks.implode())).then(odd_ad).otherwise(pl.col("ad_id"))
        .alias("ad_id")
    )  # fmt: skip
    beh.write_parquet(layout.raw / "behaviour.parquet")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> dict[str, Path]:
    """Four tunings of `small`: twice the same (a, b), one with clicks planted in valid, one
    with the same plant in train. One MLflow store."""
    store = tmp_path_factory.mktemp("finetune")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    roots = {name: store / name for name in ("a", "b", "valid", "train")}
    try:
        for name, root in roots.items():
            layout = make_raw(root)
            if name in ("valid", "train"):
                plant(layout, name)
            tune(root, tiny_bert_dir)
    finally:
        mp.undo()
    return roots


def manifest_of(root: Path) -> dict:
    return json.loads((Layout(root / "small").encoder / "_manifest.json").read_text())


def test_valid_period_clicks_never_reach_the_weights_and_a_seed_repeats_bit_for_bit(
    tuned: dict[str, Path],
) -> None:
    found = {name: manifest_of(root) for name, root in tuned.items()}
    assert all(m["best_step"] == STEPS for m in found.values())
    assert weights(tuned["a"]) == weights(tuned["b"])  # the same seed, bit for bit
    assert found["a"]["revision"] == found["b"]["revision"]
    assert weights(tuned["valid"]) == weights(tuned["a"])  # valid clicks are not pairs
    clicks = "valid_query_clicks"
    assert found["valid"]["counts"][clicks] == found["a"]["counts"][clicks] + 1  # it was planted
    assert weights(tuned["train"]) != weights(tuned["a"])  # the same plant in train is


def test_the_manifest_names_base_data_settings_and_metrics(
    tuned: dict[str, Path], tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tuned["a"]
    layout = Layout(root / "small")
    man = manifest_of(root)
    assert man["base_dir"] == str(tiny_bert_dir) and len(man["base_revision"]) == 64
    assert man["encoder_id"] == f"finetuned-{man['revision'][:8]}"
    assert man["registered_model"] == "adctr-small-encoder"
    for split in ("valid", "test"):
        for task in ("query", "history"):
            for which in ("frozen", "tuned"):
                assert 0 < man["metrics"][f"{which}_{split}_{task}_mrr"] <= 1
    assert man["selection_metric"] == "valid_query_mrr"
    assert man["counts"]["pairs_query"] > 0 and man["counts"]["pairs_history"] > 0
    assert [c["step"] for c in man["checks"]] == [0, STEPS]
    assert (layout.encoder_model / "config.json").is_file()
    # `make features` runs the stage only when embed uses it and it is stale
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root.parent / 'mlflow.db'}")
    args = ["finetune", "--if-needed", "--experiment", "small", *settings(root, tiny_bert_dir)]
    assert main(args) == 0
    assert manifest_of(root)["run_id"] == man["run_id"]  # not stale: not rerun
    from pipeline.finetune import up_to_date

    exp = load_experiment("small", ["embed.encoder=finetuned", f"data.root={root}"])
    assert not up_to_date(exp)  # tuned with other settings than the plain `small` ones
    exp = load_experiment("small", settings(root, tiny_bert_dir)[1::2])
    assert up_to_date(exp)  # the settings it was tuned with


def test_if_needed_skips_unless_embed_uses_the_tuned_encoder(store, capsys) -> None:
    make_raw(store)
    code = main(["finetune", "--if-needed", "--experiment", "small", "--set", f"data.root={store}"])
    assert code == 0
    assert "skipped=embed.encoder is not 'finetuned'" in capsys.readouterr().out
    assert not (store / "small" / "encoder").exists()


@pytest.mark.parametrize("problem", ["missing", "not_a_model", "tokenizer_mismatch"])
def test_a_bad_base_encoder_is_one_line_naming_it(
    store: Path, tiny_bert_dir: Path, problem: str, capsys: pytest.CaptureFixture
) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    make_raw(store)
    base = store / "encoders" / problem
    if problem == "not_a_model":
        base.mkdir(parents=True)
        (base / "config.json").write_text('{"hello": "world"}')
    elif problem == "tokenizer_mismatch":
        BertTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(base)
        config = BertConfig.from_pretrained(tiny_bert_dir)
        config.vocab_size = 8
        BertModel(config).save_pretrained(base)
    capsys.readouterr()
    code = main(["finetune", "--experiment", "small", *settings(store, base)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and str(base) in err[0], err
    assert not (store / "small" / "encoder").exists()


def test_embed_refuses_a_missing_or_stale_tuned_encoder(store, tiny_bert_dir, capsys) -> None:
    make_raw(store)
    args = ["embed", "--experiment", "small", "--set", f"data.root={store}"]
    capsys.readouterr()
    assert main([*args, "--set", "embed.encoder=finetuned"]) == 2
    assert "run `make finetune EXP=small`" in capsys.readouterr().err
    assert main([*args, "--set", f"embed.encoder={store / 'nowhere'}"]) == 2
    assert str(store / "nowhere") in capsys.readouterr().err
