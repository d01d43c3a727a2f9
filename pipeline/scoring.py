"""The metric names of ARCHITECTURE.md computed from labels and predictions (one place for train and
evaluate): `<prefix>ctr_auc`, `<prefix>ctr_logloss`, ... `<prefix>ctcvr_auc`."""

from __future__ import annotations

import numpy as np

from models.metrics import binary_metrics

CTR_KEYS = ("auc", "logloss", "ne", "calibration", "ece", "gauc")
CVR_KEYS = ("auc", "logloss", "ne", "calibration", "ece")
CTCVR_KEYS = ("auc", "logloss", "calibration")
TASK_KEYS = {"ctr": CTR_KEYS, "cvr": CVR_KEYS, "ctcvr": CTCVR_KEYS}
# the prefixes every model run is scored under: the calibrated valid and test predictions and
# the test period's cold-start slice (train); evaluate adds slices such as test_warm_
PREFIXES = ("valid_", "test_", "test_cold_")
# which way is better, for ranking models by one metric (a calibration ratio is best at 1)
KEY_MODES = {"auc": "max", "gauc": "max", "logloss": "min", "ne": "min", "ece": "min"}


def metric_names() -> frozenset[str]:
    """Every `<prefix><task>_<key>` name `task_metrics` logs under `PREFIXES`."""
    return frozenset(
        f"{prefix}{task}_{key}"
        for prefix in PREFIXES
        for task, keys in TASK_KEYS.items()
        for key in keys
    )


def metric_mode(name: str) -> str | None:
    """The better direction (min | max) of a metric named by `metric_names`; None for a
    calibration ratio (best at 1, neither min nor max)."""
    return KEY_MODES.get(name.rsplit("_", 1)[-1])


def task_metrics(
    click: np.ndarray,
    conversion: np.ndarray | None,
    pctr: np.ndarray,
    pcvr: np.ndarray | None,
    pctcvr: np.ndarray | None,
    users: np.ndarray | None = None,
    prefix: str = "test_",
    *,
    n_bins: int,
) -> dict[str, float]:
    """CTR on all rows, CVR on clicked rows, CTCVR on all rows; NaN where undefined.

    `n_bins` is the ECE's bin count: `evaluate.ece_bins`, for every stage that logs an ECE.
    """
    out: dict[str, float] = {}
    ctr = binary_metrics(click, pctr, groups=users, n_bins=n_bins)
    out.update({f"{prefix}ctr_{k}": ctr[k] for k in CTR_KEYS if k in ctr})
    if conversion is None or pcvr is None or pctcvr is None:
        return out
    clicked = click == 1
    if np.isfinite(pcvr[clicked]).all():
        cvr = binary_metrics(conversion[clicked], pcvr[clicked], n_bins=n_bins)
        out.update({f"{prefix}cvr_{k}": cvr[k] for k in CVR_KEYS})
        out[f"{prefix}cvr_positives"] = float(conversion[clicked].sum())
    if np.isfinite(pctcvr).all():
        ctcvr = binary_metrics(conversion, pctcvr, n_bins=n_bins)
        out.update({f"{prefix}ctcvr_{k}": ctcvr[k] for k in CTCVR_KEYS})
    return out
