"""The metric names of ARCHITECTURE.md computed from labels and predictions (one place for train and
evaluate): `<prefix>ctr_auc`, `<prefix>ctr_logloss`, ... `<prefix>ctcvr_auc`."""

from __future__ import annotations

import numpy as np

from models.metrics import binary_metrics

CTR_KEYS = ("auc", "logloss", "ne", "calibration", "ece", "gauc")
CVR_KEYS = ("auc", "logloss", "ne", "calibration", "ece")
CTCVR_KEYS = ("auc", "logloss", "calibration")


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
