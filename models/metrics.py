"""Binary classification metrics for CTR / CVR models: AUC, logloss, NE, calibration, ECE, GAUC.

Pure numpy. Every metric that is undefined for the input (an empty slice, one label class only,
no positives) is `float("nan")` — reported as missing — rather than an exception.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EPS = 1e-7
NAN = float("nan")
METRIC_KEYS = ("auc", "logloss", "ne", "calibration", "ece", "gauc", "n", "positives")


def binary_metrics(
    y: ArrayLike, p: ArrayLike, groups: ArrayLike | None = None, n_bins: int = 15
) -> dict[str, float]:
    """AUC, logloss, NE, calibration ratio, ECE (and GAUC when `groups` is given) of `p` vs `y`.

    - `ne`: logloss divided by the entropy of the base rate (1.0 = no better than the base rate).
    - `calibration`: sum(p) / sum(y); 1.0 is perfectly calibrated on average.
    - `ece`: equal-width bins over [0, 1], count-weighted |mean p - mean y|.
    - `gauc`: impression-weighted mean of per-group AUC over groups holding both classes.
    """
    y_arr, p_arr = _check(y, p)
    n = len(y_arr)
    positives = float(y_arr.sum())
    out = {"n": float(n), "positives": positives}
    if n == 0:
        out.update(auc=NAN, logloss=NAN, ne=NAN, calibration=NAN, ece=NAN)
        if groups is not None:
            out["gauc"] = NAN
        return out
    logloss = _logloss(y_arr, p_arr)
    base = positives / n
    base_entropy = _logloss(y_arr, np.full(n, base)) if 0.0 < base < 1.0 else 0.0
    out["auc"] = float(_grouped_auc(y_arr, p_arr, np.zeros(n, dtype=np.int64))[0][0])
    out["logloss"] = logloss
    out["ne"] = logloss / base_entropy if base_entropy > 0 else NAN
    out["calibration"] = float(p_arr.sum()) / positives if positives > 0 else NAN
    out["ece"] = expected_calibration_error(y_arr, p_arr, n_bins)
    if groups is not None:
        out["gauc"] = group_auc(y_arr, p_arr, groups)
    return out


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 15) -> float:
    """Count-weighted mean of |mean prediction - observed rate| over equal-width bins."""
    mean_pred, frac_pos, counts = reliability_curve(y, p, n_bins)
    total = counts.sum()
    if total == 0:
        return NAN
    used = counts > 0
    gaps = np.abs(mean_pred[used] - frac_pos[used])
    return float((gaps * counts[used]).sum() / total)


def group_auc(y: ArrayLike, p: ArrayLike, groups: ArrayLike) -> float:
    """Impression-weighted mean AUC over groups (e.g. users) that hold both label classes."""
    y_arr, p_arr = _check(y, p)
    g = np.asarray(groups)
    if g.shape != y_arr.shape:
        raise ValueError(f"groups has shape {g.shape}, labels {y_arr.shape}")
    if len(y_arr) == 0:
        return NAN
    _, codes = np.unique(g, return_inverse=True)
    auc, weight = _grouped_auc(y_arr, p_arr, codes.ravel())
    ok = ~np.isnan(auc)
    if not ok.any():
        return NAN
    return float((auc[ok] * weight[ok]).sum() / weight[ok].sum())


def reliability_curve(
    y: ArrayLike, p: ArrayLike, n_bins: int = 15, strategy: str = "uniform"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: mean prediction, observed positive rate, count.

    `strategy="uniform"`: `n_bins` equal-width bins over [0, 1] (the ECE bins); empty bins have
    NaN means and a count of 0. `strategy="quantile"`: bins of about equal count (better for
    CTRs of a few percent, which all fall in the first uniform bin); at most `n_bins` bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y_arr, p_arr = _check(y, p)
    if strategy == "uniform":
        idx = np.clip((p_arr * n_bins).astype(np.int64), 0, n_bins - 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p_arr, np.linspace(0, 1, n_bins + 1))) if len(p_arr) else []
        n_bins = max(len(edges) - 1, 1)
        idx = np.searchsorted(np.asarray(edges)[1:-1], p_arr, side="right")
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p_arr, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y_arr, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(counts > 0, sum_p / counts, np.nan)
        frac_pos = np.where(counts > 0, sum_y / counts, np.nan)
    return mean_pred, frac_pos, counts.astype(np.int64)


def lift_curve(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: targeting the top fraction by `p` captures this share of all positives.

    Both arrays start at 0; the gain is NaN throughout when there are no positives.
    """
    y_arr, p_arr = _check(y, p)
    n = len(y_arr)
    order = np.argsort(-p_arr, kind="stable")
    hits = np.concatenate([[0.0], np.cumsum(y_arr[order])])
    fraction = np.arange(n + 1, dtype=np.float64) / max(n, 1)
    total = hits[-1]
    gain = hits / total if total > 0 else np.full(n + 1, np.nan)
    return fraction, gain


def _check(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"labels have {y_arr.size} values, predictions {p_arr.size}")
    if y_arr.size and not np.isin(y_arr, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p_arr).all():
        raise ValueError("predictions contain NaN or inf")
    return y_arr, np.clip(p_arr, 0.0, 1.0)


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


def _grouped_auc(y: np.ndarray, p: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group AUC (Mann-Whitney, ties count one half) and group sizes; NaN for one class."""
    order = np.lexsort((p, codes))
    g, s, t = codes[order], p[order], y[order]
    n = len(g)
    # average 1-based rank within each group, ties (same group, same score) share their mean rank
    new_group = np.concatenate([[True], g[1:] != g[:-1]])
    new_tie = new_group | np.concatenate([[True], s[1:] != s[:-1]])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    tie_id = np.cumsum(new_tie) - 1
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], n)
    mean_pos = (tie_start + tie_end - 1) / 2.0  # 0-based mean position of each tie run
    rank = mean_pos[tie_id] - group_start + 1.0
    n_groups = int(codes.max()) + 1
    size = np.bincount(g, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(g, weights=t, minlength=n_groups)
    rank_pos = np.bincount(g, weights=rank * t, minlength=n_groups)
    n_neg = size - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return auc, size
