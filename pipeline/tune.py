"""Tune each model's main settings on valid with Optuna (`make tune`). Reads `features/` (train
and valid only: the test split is never loaded). Writes `tune/best.toml`, the best settings of
each tuned model as a TOML fragment to paste into an experiment, and per model one MLflow run
`tune-<kind>` (tag `stage=tune`) holding one nested run per trial.

A trial fits the model on train with early stopping on valid (`pipeline.train.fit_model`, the
experiment's config with the trial's settings) and scores it by the objective, the valid CTR
logloss of calibrated predictions out of fold (`models.calibration.out_of_fold`, seed 0 as
`evaluate`'s `valid_ctr_ne_oof`): every model ships calibrated predictions, so a raw logloss
would rank settings partly on a miscalibration the calibrator removes (the neural model's
ESMM-trained pCTR, say), while calibrating valid in-sample would flatter settings whose scores
the isotonic map can overfit. Out of fold, each row is judged by a map that never saw it.

Trial 0 is the experiment's current settings (those inside the search space), so the best is
never worse on valid than what `train` would fit now. The sampler is Optuna's TPE seeded from
`tune.seed`, trials run one at a time and each model is seeded by `data.seed` (as in `train`):
the same seed and trial budget give the same trials, values and fragment. `tune.timeout_s`
stops starting new trials of a model after that long (a running trial finishes).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np

from features.spec import FeatureSpec
from models.calibration import out_of_fold
from models.metrics import binary_metrics
from models.sizing import lightgbm_defaults, neural_defaults, resolve
from pipeline.atomic import atomic_file
from pipeline.config import ConfigError, Experiment
from pipeline.datasets import labels, load_spec, load_split, load_tables, to_matrix
from pipeline.lineage import check_lineage
from pipeline.stage import Layout, StageSummary
from pipeline.tracking import child_run, log_metrics, stage_run
from pipeline.train import fit_model

log = logging.getLogger(__name__)

OBJECTIVE = "valid_ctr_logloss_oof"  # minimised
OBJECTIVE_TEXT = "valid CTR logloss (calibrated out of fold)"
OOF_SEED = 0  # the folds of evaluate's valid_ctr_ne_oof
DIGITS = 4  # significant digits of a searched float


@dataclass(frozen=True)
class Param:
    """One searched setting of a model's config section: a range (`low`..`high`, on a log
    scale when `log`, integers when `integer`) or a list of `choices`."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[int, ...] = ()

    def suggest(self, trial: Any) -> int | float:
        """The trial's value; a float is rounded to `DIGITS` significant digits, so the
        fragment reads well and holds exactly what the trial fitted."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        value = trial.suggest_float(self.name, self.low, self.high, log=self.log)
        return float(f"{value:.{DIGITS}g}")

    def contains(self, value: object) -> bool:
        """Whether `value` (a current setting) is a point of this space."""
        if value is None or isinstance(value, bool):
            return False
        if self.choices:
            return value in self.choices
        if self.integer and not isinstance(value, int):
            return False
        return isinstance(value, int | float) and self.low <= value <= self.high


# the main settings of each model kind (the section of the config named like the kind)
SPACES: dict[str, tuple[Param, ...]] = {
    "lightgbm": (
        Param("num_leaves", 7, 255, log=True, integer=True),
        Param("min_data_in_leaf", 10, 2000, log=True, integer=True),
        Param("feature_fraction", 0.5, 1.0),
        Param("learning_rate", 0.01, 0.2, log=True),
        Param("lambda_l2", 1e-3, 100.0, log=True),
    ),
    "neural": (
        Param("lr", 1e-4, 1e-2, log=True),
        Param("batch_size", choices=(64, 128, 256, 512, 1024, 2048, 4096)),
        Param("dropout", 0.0, 0.5),
        Param("weight_decay", 1e-7, 1e-3, log=True),
        Param("embedding_dim", 4, 64, log=True, integer=True),
    ),
    "logreg": (Param("C", 1e-3, 100.0, log=True),),
}


def with_params(exp: Experiment, kind: str, params: dict[str, Any]) -> Experiment:
    """`exp` with `params` set in the `kind` section (validated by the section's dataclass)."""
    section = dataclasses.replace(getattr(exp, kind), **params)
    return dataclasses.replace(exp, **{kind: section})


def valid_scores(raw_ctr: np.ndarray, click: np.ndarray, exp: Experiment) -> dict[str, float]:
    """The objective and what goes with it, from raw valid pCTR: logloss and NE of the out of
    fold calibrated predictions, AUC of the raw ones (calibration keeps the order)."""
    if not np.isfinite(raw_ctr).all():
        return {OBJECTIVE: float("nan")}
    cfg = exp.calibration
    held = out_of_fold(raw_ctr, click, cfg.method, cfg.min_positives_isotonic, seed=OOF_SEED)
    oof = binary_metrics(click, held)
    return {
        OBJECTIVE: oof["logloss"],
        "valid_ctr_ne_oof": oof["ne"],
        "valid_ctr_auc": binary_metrics(click, raw_ctr)["auc"],
    }


SIZE_RULES = {"lightgbm": lightgbm_defaults, "neural": neural_defaults}


def current_params(exp: Experiment, kind: str, rows: int = 0, positives: int = 0) -> dict[str, Any]:
    """The experiment's settings of `kind` that lie in its search space (trial 0); those it
    leaves unset as the model would derive them from `rows` train rows with `positives`
    clicks (`models.sizing`)."""
    section = getattr(exp, kind)
    if kind in SIZE_RULES:
        section, _ = resolve(section, SIZE_RULES[kind](rows, positives))
    values = {p.name: getattr(section, p.name) for p in SPACES[kind]}
    return {p.name: values[p.name] for p in SPACES[kind] if p.contains(values[p.name])}


@dataclass
class Study:
    """What the search of one model found."""

    kind: str
    trials: int  # trials run (any state)
    complete: int  # trials with a value
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    baseline_value: float | None  # trial 0, the current settings
    seconds: float
    history: list[tuple[dict[str, Any], float | None]]  # each trial's settings and value


def tune_model(
    kind: str,
    exp: Experiment,
    frames: dict,
    spec: FeatureSpec,
    tables: Mapping[str, np.ndarray] | None = None,
) -> Study:
    """Search `kind`'s space within `tune.trials` and `tune.timeout_s`; one parent MLflow run
    with a nested run per trial (`tables`: the lookup tables, see `train.fit_model`)."""
    import optuna

    cfg = exp.tune
    seed = exp.data.seed if cfg.seed is None else cfg.seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    startup = max(2, min(10, cfg.trials // 2))  # random trials before TPE models the results
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    train_click, _ = labels(frames["train"], spec)
    baseline = current_params(exp, kind, len(train_click), int(train_click.sum()))
    if baseline:
        study.enqueue_trial(baseline)
    click, _ = labels(frames["valid"], spec)
    x_valid = to_matrix(frames["valid"], spec, kind, tables)
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        params = {p.name: p.suggest(trial) for p in SPACES[kind]}
        trial_exp = with_params(exp, kind, params)
        tags = {"trial": str(trial.number), "baseline": str(trial.number == 0).lower()}
        with child_run(exp, "tune", f"tune-{kind}-{trial.number}", model=kind, tags=tags):
            t0 = time.perf_counter()
            model = fit_model(kind, trial_exp, frames, spec, tables)
            scores = valid_scores(model.predict_proba(x_valid)[:, 0], click, exp)
            scores["duration_s"] = time.perf_counter() - t0
            mlflow.log_params(
                {f"{kind}.{k}": v for k, v in params.items()} | {"trial": trial.number}
            )
            log_metrics(scores)
        trial.set_user_attr("duration_s", scores["duration_s"])
        trial.set_user_attr("params", params)
        return scores[OBJECTIVE]

    def progress(study: Any, trial: Any) -> None:
        value = "failed" if trial.value is None else f"{trial.value:.5f}"
        best = _best(study)
        log.info(
            "tune %s trial %d/%d: %s %s in %.1fs (best %s) %s",
            kind,
            trial.number + 1,
            cfg.trials,
            OBJECTIVE,
            value,
            trial.user_attrs.get("duration_s", float("nan")),
            "none yet" if best is None else f"{best.value:.5f} at trial {best.number}",
            _fmt(trial.user_attrs.get("params", trial.params)),
        )

    tags = {"objective": OBJECTIVE, "sampler": "tpe", "tune_seed": str(seed)}
    with stage_run(exp, "tune", run_name=f"tune-{kind}", model=kind, tags=tags):
        study.optimize(
            objective, n_trials=cfg.trials, timeout=cfg.timeout_s, n_jobs=1, callbacks=[progress]
        )
        seconds = time.perf_counter() - started
        done = [t for t in study.trials if t.value is not None]
        best = _best(study)
        if best is None:
            raise ConfigError(f"tune: no trial of {kind} gave a finite {OBJECTIVE}")
        first = study.trials[0]
        result = Study(
            kind=kind,
            trials=len(study.trials),
            complete=len(done),
            best_params=dict(best.user_attrs["params"]),
            best_value=float(best.value),
            best_trial=best.number,
            baseline_value=first.value if baseline and first.value is not None else None,
            seconds=seconds,
            history=[(t.user_attrs.get("params", t.params), t.value) for t in study.trials],
        )
        mlflow.log_params({f"best.{kind}.{k}": v for k, v in result.best_params.items()})
        mlflow.set_tag("best_trial", str(best.number))
        summary = {f"best_{OBJECTIVE}": result.best_value, "trials": result.trials}
        if result.baseline_value is not None:
            summary[f"baseline_{OBJECTIVE}"] = result.baseline_value
        log_metrics(summary | {"complete_trials": result.complete, "duration_s": seconds})
    if result.trials < cfg.trials:
        log.info(
            "tune %s: the time budget (%gs) stopped the search after %d of %d trials",
            kind,
            cfg.timeout_s,
            result.trials,
            cfg.trials,
        )
    return result


def _best(study: Any) -> Any:
    done = [t for t in study.trials if t.value is not None and np.isfinite(t.value)]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def _fmt(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_toml_value(v)}" for k, v in params.items())


def _toml_value(value: int | float) -> str:
    """A TOML literal that reads back to exactly `value` (an int stays an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a searched value: {value!r}")
    return repr(value) if isinstance(value, int) else repr(float(value))


def fragment(exp: Experiment, studies: list[Study]) -> str:
    """The best settings as TOML, one table per model, with a header saying how they were
    found (pasted into an experiment, merge a table with one it already has)."""
    cfg = exp.tune
    seed = exp.data.seed if cfg.seed is None else cfg.seed
    lines = [
        f"# make tune EXP={exp.name}: up to {cfg.trials} trials per model (seed {seed}), "
        f"{OBJECTIVE_TEXT}",
    ]
    for s in studies:
        lines.append("")
        baseline = (
            ""
            if s.baseline_value is None
            else f"; the current settings (trial 0): {s.baseline_value:.5f}"
        )
        lines.append(
            f"# {s.kind}: {s.trials} trials, best {s.best_value:.5f} "
            f"at trial {s.best_trial}{baseline}"
        )
        lines.append(f"[{s.kind}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in s.best_params.items()]
    return "\n".join(lines) + "\n"


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("tune", output=str(layout.tune_best))
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tune needs optuna (the `tune` extra of pyproject.toml): run `make tune`"
        ) from None
    check_lineage(layout.features, {"raw": layout.raw}, "make features")
    spec = load_spec(layout)
    frames = {s: load_split(layout, s) for s in ("train", "valid")}  # never test
    tables = load_tables(layout, spec)  # the lookup tables, as train uses them
    summary.rows_in = sum(f.height for f in frames.values())
    kinds = exp.tune.models if exp.tune.models is not None else exp.train.models
    studies = []
    for kind in kinds:
        study = tune_model(kind, exp, frames, spec, tables)
        studies.append(study)
        summary.notes[f"{kind}_trials"] = study.trials
        log.info("tune %s: %d trials in %.1fs", kind, study.trials, study.seconds)
        summary.notes[f"{kind}_best"] = round(study.best_value, 5)
    text = fragment(exp, studies)
    atomic_file(layout.tune_best, text.encode())
    sets = " ".join(
        f"{s.kind}.{k}={_toml_value(v)}" for s in studies for k, v in s.best_params.items()
    )
    log.info("best settings in %s:\n%s", layout.tune_best, text.rstrip())
    log.info('train with them: make train EXP=%s SET="%s"', exp.name, sets)
    summary.rows_out = len(studies)
    return summary
