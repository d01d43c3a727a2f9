"""Fine-tune the text encoder on the marketplace's own clicks. Reads `raw/` (the train period
only: impressions, behaviour and ads cut at the start of valid); writes `encoder/` (`model/`, a
normal local Hugging Face directory with the tuned weights merged, and a manifest naming the
base model's revision, the data digest, the settings' key and the retrieval metrics); logs an
MLflow run (tag stage=finetune) with the curves, and registers the encoder as
`adctr-<experiment>-encoder` (a pyfunc: texts in, vectors out).

`embed.encoder = "finetuned"` makes the embed stage use it: its vectors are cached under the
tuned revision, so frozen and tuned vectors never mix. Judged by retrieval: every active ad
ranked by cosine to each search query that led to a click, recall@10 and MRR of the clicked
ad, on valid (early stopping) and on test (reported only), for the base and the tuned encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from features.text import (
    DEFAULT_ENCODER,
    bf16_native,
    encoder_id,
    model_revision,
    resolve_model_dir,
)
from models.finetune_config import FinetuneConfig
from pipeline.atomic import atomic_dir
from pipeline.config import Experiment
from pipeline.io import (
    MANIFEST,
    DataError,
    input_digest,
    one_line,
    read_manifest,
    write_file_manifest,
)
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)

FINETUNED = "finetuned"  # the `embed.encoder` value that selects this stage's output
ENCODER_KIND = "encoder"  # registered as adctr-<experiment>-encoder
ENCODER_PYFUNC = Path(__file__).with_name("mlflow_encoder.py")


def settings_key(exp: Experiment, base_revision: str, raw_digest: str) -> str:
    """What the tuned weights depend on: the [finetune] and [split] settings, the seed, the
    base model's bytes and the raw data. The encoder is up to date while this is unchanged."""
    blob = {
        k: v
        for k, v in exp.flat().items()
        if k.startswith(("finetune.", "split.")) or k == "data.seed"
    }
    blob |= {"base_revision": base_revision, "raw": raw_digest, "bf16": tuning_bf16(exp.finetune)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_dir(cfg: FinetuneConfig) -> Path:
    """The base encoder's directory; a DataError line naming the path when it is not one."""
    try:
        path = resolve_model_dir(cfg.base or DEFAULT_ENCODER)
    except FileNotFoundError as exc:
        raise DataError(f"finetune.base: {exc}") from None
    return path


def tuning_bf16(cfg: FinetuneConfig) -> bool:
    """Whether the tuning runs under bfloat16 autocast (`finetune.dtype`, `auto` resolved)."""
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and bf16_native())


def current_key(exp: Experiment) -> str:
    layout = Layout.of(exp)
    return settings_key(exp, model_revision(base_dir(exp.finetune)), input_digest(layout.raw))


def up_to_date(exp: Experiment) -> bool:
    """Whether `encoder/` was tuned from the current settings, base model and raw data."""
    encoder = Layout.of(exp).encoder
    if not (encoder / MANIFEST).is_file():
        return False
    return read_manifest(encoder).get("settings_key") == current_key(exp)


def tuned_model_dir(exp: Experiment) -> Path:
    """The tuned encoder `embed` uses; a DataError with the command to run when it is missing
    or was tuned from other settings or data."""
    layout = Layout.of(exp)
    if not (layout.encoder / MANIFEST).is_file():
        raise DataError(
            f"embed.encoder = '{FINETUNED}' but {layout.encoder} holds no tuned encoder: "
            f"run `make finetune EXP={exp.name}`"
        )
    if not up_to_date(exp):
        raise DataError(
            f"{layout.encoder} was tuned from other settings or data: "
            f"run `make finetune EXP={exp.name}`"
        )
    return layout.encoder_model


def run(exp: Experiment) -> StageSummary:
    from models.neural_loop import torch_settings
    from models.text_tuner import EncoderTuner
    from pipeline.finetune_data import build_tasks, read_inputs

    layout = Layout.of(exp)
    cfg = exp.finetune
    summary = StageSummary("finetune", output=str(layout.encoder))
    base = base_dir(cfg)
    base_revision = model_revision(base)
    seed = cfg.seed if cfg.seed is not None else exp.data.seed
    texts, sets, tasks, counts = build_tasks(read_inputs(exp), cfg, seed)
    log.info("finetune %s (%s) on %s", base, cfg.method, json.dumps(counts))
    select_on = selection_metric(tasks["valid"], layout)
    if all(len(s) < 2 for s in sets):
        raise DataError(f"{layout.raw}: no train-period pairs (query clicks, user histories, "
                        "ad titles with descriptions): nothing to fine-tune on")  # fmt: skip
    with torch_settings(exp.engine.num_threads):
        try:
            tuner = EncoderTuner(cfg, base, texts, seed, bf16=tuning_bf16(cfg))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"finetune.base {base}: not a usable encoder ({one_line(exc)})"
            ) from None
        summary.rows_in = sum(len(s) for s in sets)
        manifest = _tune_and_publish(
            exp, tuner, (sets, tasks, select_on), counts, base, base_revision, seed
        )
    metrics, kind = manifest["metrics"], select_on.split("_")[1]
    summary.rows_out = summary.rows_in
    summary.notes = {
        "method": cfg.method,
        "best_step": manifest["best_step"],
        f"valid_{kind}_mrr": _change(metrics, f"valid_{kind}_mrr"),
        f"test_{kind}_mrr": _change(metrics, f"test_{kind}_mrr"),
        f"test_{kind}_recall_at_10": _change(metrics, f"test_{kind}_recall_at_10"),
        "encoder_id": manifest["encoder_id"],
    }
    return summary


def _change(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[f'frozen_{key}']:.4f}->{metrics[f'tuned_{key}']:.4f}"


def selection_metric(valid: dict, layout: Layout) -> str:
    """What early stopping watches: the MRR of the valid search queries' clicked ads, else
    (a log without queries) of the users' next clicked ads; a DataError when there is neither."""
    for name in ("query", "history"):
        if name in valid and len(valid[name]):
            return f"valid_{name}_mrr"
    raise DataError(
        f"{layout.raw}/impressions.parquet: no valid-period click from a search query (column "
        "'query') nor a user history (behaviour.parquet), nothing to judge a tuned encoder by: "
        "keep embed.encoder frozen"
    )


def _tune_and_publish(
    exp: Experiment,
    tuner: Any,
    work: tuple[list, dict, str],
    counts: dict[str, int],
    base: Path,
    base_revision: str,
    seed: int,
) -> dict[str, Any]:
    """Fit in an MLflow run (curves per check), write `encoder/` atomically, register it.
    `work`: the pair sets, the retrieval tasks per split and the metric early stopping uses."""
    import mlflow

    from pipeline import registry
    from pipeline.tracking import log_metrics, stage_run

    layout = Layout.of(exp)
    sets, tasks, select_on = work

    def on_check(check: dict) -> None:
        log.info(
            "step %d: loss %.4f %s %.4f (%.0fs)",
            check["step"], check["loss"], select_on, check[select_on], check["seconds"],
        )  # fmt: skip
        log_metrics({k: v for k, v in check.items() if k != "step"}, step=check["step"])

    def test_metrics(prefix: str) -> dict[str, float]:
        out = {}
        for name, task in tasks["test"].items():
            found = tuner.evaluate(task) if len(task) else {}
            out |= {f"{prefix}_test_{name}_{k}": v for k, v in found.items() if k != "n"}
        return out

    with stage_run(exp, "finetune", model=ENCODER_KIND) as active:
        mlflow.log_params({"trainable_params": tuner.trainable, **counts})
        mlflow.set_tag("selection_metric", select_on)
        metrics = test_metrics("frozen")
        checks = tuner.fit(sets, tasks["valid"], select_on, on_check=on_check)
        best = max(checks, key=lambda c: (c[select_on], -c["step"]))
        kept = best if exp.finetune.select == "best" else checks[-1]
        metrics |= {f"frozen_{k}": v for k, v in checks[0].items() if k.startswith("valid_")}
        metrics |= {f"tuned_{k}": v for k, v in kept.items() if k.startswith("valid_")}
        metrics |= test_metrics("tuned")
        log_metrics(metrics)
        name = registry.model_name(exp.name, ENCODER_KIND)
        with atomic_dir(layout.encoder) as tmp:
            model_dir = tmp / layout.encoder_model.name
            tuner.save(model_dir)
            revision = model_revision(model_dir)
            info = _log_encoder(model_dir, name, tuner.dim)
            manifest = write_file_manifest(
                tmp,
                config_digest=exp.digest(),
                inputs={"raw": layout.raw},
                extra={
                    "base": exp.finetune.base or DEFAULT_ENCODER, "base_dir": str(base),
                    "base_revision": base_revision,
                    "revision": revision, "encoder_id": tuned_encoder_id(revision),
                    "settings_key": settings_key(exp, base_revision, input_digest(layout.raw)),
                    "method": exp.finetune.method, "seed": seed, "bf16": tuner.bf16,
                    "trainable_params": tuner.trainable, "best_step": kept["step"],
                    "selection_metric": select_on,
                    "steps": checks[-1]["step"], "metrics": metrics, "counts": counts,
                    "checks": checks, "run_id": active.info.run_id,
                    "registered_model": name, "registered_version": info.registered_model_version,
                },
            )  # fmt: skip
            mlflow.log_dict(manifest, "encoder_manifest.json")
    return manifest


def _log_encoder(model_dir: Path, name: str, dim: int) -> Any:
    """The tuned encoder as a registered pyfunc (texts in, unit vectors out)."""
    import warnings

    import mlflow
    import numpy as np
    import pandas as pd

    from pipeline.tracking import model_requirements

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        signature = mlflow.models.infer_signature(
            pd.DataFrame({"text": ["an ad"]}), np.zeros((1, dim), dtype=np.float32)
        )
        return mlflow.pyfunc.log_model(
            name="encoder",
            python_model=str(ENCODER_PYFUNC),
            artifacts={"encoder_dir": str(model_dir)},
            signature=signature,
            registered_model_name=name,
            pip_requirements=model_requirements(),
        )


def run_if_needed(exp: Experiment) -> StageSummary:
    """`make features`: tune only when `embed.encoder = "finetuned"` and `encoder/` is
    missing or stale; else one line saying why not."""
    layout = Layout.of(exp)
    summary = StageSummary("finetune", output=str(layout.encoder))
    if exp.embed.encoder != FINETUNED:
        summary.notes = {"skipped": f"embed.encoder is not '{FINETUNED}'"}
        return summary
    if up_to_date(exp):
        summary.notes = {"skipped": "up to date", "encoder_id": _tuned_id(layout)}
        return summary
    return run(exp)


def _tuned_id(layout: Layout) -> str:
    return read_manifest(layout.encoder).get("encoder_id", "?")


def tuned_encoder_id(revision: str) -> str:
    return encoder_id(FINETUNED, revision)
