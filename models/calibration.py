"""Probability calibration fitted on the validation split: isotonic, or Platt where data is thin.

Bids multiply probabilities by money, so they must be calibrated. Saved as JSON (no pickle).

Plain isotonic regression is a step function: on `default` it maps ~75,000 distinct scores to
~80 values, so every impression in a step bids the same and the model's ranking inside a step
is lost (AUC drops, and the top step, the one that matters for bidding on small budgets, is one
big tie). The isotonic method here is therefore *centred* isotonic regression (Oron & Flournoy,
2017): each constant block of the fit becomes one knot at its centre and the map interpolates
linearly between knots, which is strictly increasing and keeps the block means. Beyond the first
and last knot it follows the raw score's odds from the edge knot (a shift in logit space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-6
TAIL_EPS = 1e-12


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "isotonic"  # isotonic | platt
    min_positives_isotonic: int = 200  # fewer positives on valid -> Platt

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt"):
            raise ValueError(f"calibration.method must be isotonic or platt, not {self.method!r}")
        if self.min_positives_isotonic < 0:
            raise ValueError(
                f"min_positives_isotonic must be >= 0, got {self.min_positives_isotonic}"
            )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """Maps raw scores to calibrated probabilities; `fit(p, y) -> self`, `transform(p)`."""

    def __init__(self, method: str = "isotonic", min_positives_isotonic: int = 200) -> None:
        self.method = method
        self.min_positives_isotonic = min_positives_isotonic

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ok = np.isfinite(p)
        p, y = p[ok], y[ok]
        self.n_ = len(y)
        positives = int(y.sum())
        if positives == 0 or positives == len(y):
            self.method_ = "identity"
        elif self.method == "isotonic" and positives >= self.min_positives_isotonic:
            from sklearn.isotonic import IsotonicRegression  # lazy: config imports this module

            low, _ = self.bounds_  # knots at least 2 * low from 0 and 1: room for the tails
            iso = IsotonicRegression(y_min=max(EPS, 2 * low), y_max=min(1 - EPS, 1 - 2 * low))
            iso.set_params(out_of_bounds="clip")
            iso.fit(p, y)
            self.method_ = "isotonic"
            self.x_, self.y_ = _block_centres(iso.X_thresholds_, iso.y_thresholds_)
            self.centred_ = True
        else:
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e4).fit(_logit(p)[:, None], y)
            self.method_ = "platt"
            self.coef_, self.intercept_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    @property
    def bounds_(self) -> tuple[float, float]:
        """The calibrated range: no rate nearer 0 or 1 than half an event in the n fit rows
        (`0.5 / (n + 1)`) can be told from the data; maps saved without `n` keep 1e-12."""
        n = getattr(self, "n_", None)
        edge = 0.5 / (n + 1) if n else TAIL_EPS
        return edge, 1.0 - edge

    def transform(self, p: np.ndarray) -> np.ndarray:
        return np.clip(self._map(np.asarray(p, dtype=np.float64)), *self.bounds_)

    def _map(self, p: np.ndarray) -> np.ndarray:
        if self.method_ == "identity":
            return p.copy()
        if self.method_ == "isotonic":
            out = np.interp(p, self.x_, self.y_)
            if getattr(self, "centred_", False):
                lo, hi = p < self.x_[0], p > self.x_[-1]
                shift = _logit(p) - _logit(np.where(hi, self.x_[-1], self.x_[0]))
                edge = _logit(np.where(hi, self.y_[-1], self.y_[0]))
                tail = 1.0 / (1.0 + np.exp(-(edge + shift)))  # (0, y_0) below, (y_-1, 1) above
                # squeezed into [bound, y_0) and (y_-1, 1 - bound]: ordered, never 0 or 1
                (low, high), y0, y1 = self.bounds_, self.y_[0], self.y_[-1]
                below = low + tail / y0 * (y0 - low)
                above = y1 + (tail - y1) / (1.0 - y1) * (high - y1)
                return np.where(lo, below, np.where(hi, above, out))
            return np.clip(out, EPS, 1 - EPS)
        return 1.0 / (1.0 + np.exp(-(self.coef_ * _logit(p) + self.intercept_)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method_, "n": self.n_}
        if self.method_ == "isotonic":
            out.update(x=self.x_, y=self.y_, centred=getattr(self, "centred_", False))
        elif self.method_ == "platt":
            out.update(coef=self.coef_, intercept=self.intercept_)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        cal = cls(method=data["method"] if data["method"] != "identity" else "isotonic")
        cal.method_ = data["method"]
        if data.get("n"):
            cal.n_ = int(data["n"])
        if cal.method_ == "isotonic":
            cal.x_, cal.y_ = data["x"], data["y"]
            cal.centred_ = bool(data.get("centred", False))  # step maps saved before centring
        elif cal.method_ == "platt":
            cal.coef_, cal.intercept_ = data["coef"], data["intercept"]
        return cal


def _block_centres(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Knots of centred isotonic regression: one (centre of x, value) per run of equal y."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    ends = np.r_[starts[1:], len(y)] - 1
    return (0.5 * (x[starts] + x[ends])).tolist(), y[starts].tolist()


def out_of_fold(
    p: np.ndarray,
    y: np.ndarray,
    method: str = "isotonic",
    min_positives_isotonic: int = 200,
    folds: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Calibrated probabilities of `p` where each row's calibrator never saw that row: the rows
    are dealt into `folds` seeded folds and each fold is mapped by a calibrator fitted on the
    others. Judging a model on the split its calibrator was fitted on flatters it (isotonic
    regression fits noise); this does not."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    fold = np.random.default_rng(seed).permutation(len(p)) % folds
    out = np.empty_like(p)
    for k in range(folds):
        held = fold == k
        cal = Calibrator(method, min_positives_isotonic).fit(p[~held], y[~held])
        out[held] = cal.transform(p[held])
    return out


def out_of_fold_calibrated(
    raw: np.ndarray,
    click: np.ndarray,
    conversion: np.ndarray | None,
    config: CalibrationConfig,
    seed: int = 0,
) -> np.ndarray:
    """(N, 3) [pctr, pcvr, pctcvr] of the raw valid predictions `raw`, each row calibrated by
    calibrators that never saw it: pCTR out of fold over all rows, pCVR out of fold over the
    clicked rows (the rows its calibrator is fitted on) and, for the other rows, by the
    calibrator of all clicked rows. The honest valid metrics that selection reads."""
    raw = np.asarray(raw, dtype=np.float64)
    click = np.asarray(click)
    method, least = config.method, config.min_positives_isotonic
    pctr = out_of_fold(raw[:, 0], click, method, least, seed=seed)
    pcvr = raw[:, 1].copy()
    if conversion is not None and np.isfinite(pcvr).all():
        clicked = click == 1
        conv = np.asarray(conversion)[clicked]
        pcvr[clicked] = out_of_fold(pcvr[clicked], conv, method, least, seed=seed)
        if (~clicked).any():
            cal = Calibrator(method, least).fit(raw[clicked, 1], conv)
            pcvr[~clicked] = cal.transform(raw[~clicked, 1])
    return np.column_stack([pctr, pcvr, pctr * pcvr])
