"""Evaluation plots as matplotlib Figures (Agg, no pyplot state), ready for `mlflow.log_figure`.

Every function takes plain arrays or dicts and returns a `Figure`; the caller saves or logs it.
Models keep the same colour on every chart (the order of the dict they come in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from models.metrics import binary_metrics, lift_curve, reliability_curve

Curves = Mapping[str, tuple[ArrayLike, ArrayLike]]  # label -> (y, p)
MAX_POINTS = 1000  # points drawn per curve


def roc_curves(curves: Curves, title: str = "ROC curves (test)") -> Figure:
    """All models' ROC curves on one chart, AUC in the legend."""
    fig, ax = _figure()
    for color, (label, (y, p)) in zip(_colors(), curves.items(), strict=False):
        y_arr, p_arr = np.asarray(y), np.asarray(p)
        auc = binary_metrics(y_arr, p_arr)["auc"]
        if math.isnan(auc):
            ax.plot([], [], color=color, label=f"{label} (AUC undefined: one class)")
            continue
        fpr, tpr, _ = roc_curve(y_arr, p_arr)
        ax.plot(*_thin(fpr, tpr), color=color, lw=2, label=f"{label} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random (AUC 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return fig


def reliability(
    curves: Curves,
    n_bins: int = 15,
    title: str = "Reliability (test)",
    what: str = "CTR",
    ece_bins: int = 15,
) -> Figure:
    """Predicted vs observed rate per equal-count bin (`n_bins` points), e.g. before and after
    calibration; the legend's ECE uses `ece_bins` equal-width bins, like the logged ECE.

    Top panel: reliability curves against the diagonal; bottom panel: the distribution of the
    predictions (log scale), its axis label giving the impressions per bin.
    """
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top = 0.0
    preds: list[tuple[str, str, np.ndarray]] = []
    per_bin: list[int] = []
    for color, (label, (y, p)) in zip(_colors(), curves.items(), strict=False):
        mean_pred, frac_pos, counts = reliability_curve(y, p, n_bins, strategy="quantile")
        ok = counts > 0
        if not ok.any():
            continue
        per_bin = per_bin or [int(c) for c in counts[ok]]
        m = binary_metrics(y, p, n_bins=ece_bins)
        ece, calib = m["ece"], m["calibration"]
        ax.plot(
            mean_pred[ok],
            frac_pos[ok],
            marker="o",
            color=color,
            lw=2,
            label=f"{label} (ECE {_fmt(ece)}, Σp/Σy {_fmt(calib, 3)})",
        )
        preds.append((color, label, np.asarray(p, dtype=float)))
        top = max(top, float(np.nanmax(mean_pred[ok])), float(np.nanmax(frac_pos[ok])))
    top = min(1.0, top * 1.1) if top > 0 else 1.0
    for color, label, p_arr in preds:
        hist.hist(p_arr, bins=50, range=(0, top), histtype="step", color=color, label=label)
    ax.plot([0, top], [0, top], color="grey", ls="--", lw=1, label="perfectly calibrated")
    ax.set(xlim=(0, top), ylim=(0, top), title=title)
    ax.set_ylabel(f"observed {what}")
    ax.legend(loc="upper left")
    hist.set_yscale("log")
    share = f"{min(per_bin):,}-{max(per_bin):,}" if per_bin else "0"
    hist.set_xlabel(f"predicted {what} (curve points: equal-count bins of {share} impressions)")
    hist.set_ylabel("impressions")
    return fig


def lift_chart(curves: Curves, title: str = "Cumulative gain (test)") -> Figure:
    """Share of all positives captured when targeting the top fraction ranked by each model."""
    fig, ax = _figure()
    for color, (label, (y, p)) in zip(_colors(), curves.items(), strict=False):
        frac, gain = lift_curve(y, p)
        if np.isnan(gain).all():
            ax.plot([], [], color=color, label=f"{label} (no positives)")
            continue
        top10 = float(np.interp(0.1, frac, gain))
        ax.plot(*_thin(frac, gain), color=color, lw=2, label=f"{label} (top 10% → {top10:.0%})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.set_xlabel("fraction of impressions targeted (highest score first)")
    ax.set_ylabel("fraction of positives captured")
    ax.legend(loc="lower right")
    return fig


def metric_by_slice(
    values: Mapping[str, Mapping[str, float]], metric: str = "AUC", title: str | None = None
) -> Figure:
    """Grouped bars: one group per slice, one bar per model; missing (NaN) values are marked."""
    models = list(values)
    slices = list(dict.fromkeys(s for per_model in values.values() for s in per_model))
    fig = Figure(figsize=(max(7.0, 0.9 * len(slices) * max(len(models), 1) + 2), 5))
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(slices))
    for i, (color, model) in enumerate(zip(_colors(), models, strict=False)):
        heights = np.array([values[model].get(s, math.nan) for s in slices], dtype=float)
        pos = x + (i - (len(models) - 1) / 2) * width
        bars = ax.bar(pos, np.nan_to_num(heights), width, color=color, label=model)
        labels = [_fmt(h, 3) for h in heights]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    rotate = len(slices) > 4
    ax.set_xticks(x, slices, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(metric)
    ax.set_xlabel("slice")
    ax.set_title(title or f"{metric} by slice (test; – = undefined)")
    ax.legend()
    return fig


def feature_importance(
    names: Sequence[str], gains: ArrayLike, top: int = 25, title: str | None = None
) -> Figure:
    """Horizontal bars of the `top` features by total gain, as a share of all gain."""
    gain = np.asarray(gains, dtype=float)
    if len(names) != len(gain):
        raise ValueError(f"{len(names)} names but {len(gain)} gains")
    order = np.argsort(-gain, kind="stable")[:top]
    total = gain.sum()
    share = gain[order] / total if total > 0 else np.zeros(len(order))
    fig = Figure(figsize=(8, max(3.0, 0.3 * len(order) + 1.2)), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), share, color="#1f77b4")
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
    ax.invert_yaxis()  # largest on top
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of total split gain")
    ax.set_ylabel("feature")
    ax.set_title(title or f"LightGBM feature importance (top {len(order)} of {len(names)})")
    return fig


def permutation_bars(
    names: Sequence[str], drops: ArrayLike, top: int = 25, title: str = "Permutation importance"
) -> Figure:
    """Horizontal bars of the `top` inputs by the CTR AUC lost when each is shuffled."""
    drop = np.asarray(drops, dtype=float)
    if len(names) != len(drop):
        raise ValueError(f"{len(names)} names but {len(drop)} values")
    order = np.argsort(-drop, kind="stable")[:top]
    fig = Figure(figsize=(8, max(3.0, 0.3 * len(order) + 1.2)), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(order)), drop[order], color="#ff7f0e")
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
    ax.invert_yaxis()  # largest on top
    ax.axvline(0, color="grey", lw=1)
    ax.set_xlabel("CTR AUC lost when the input is shuffled")
    ax.set_ylabel("input")
    ax.set_title(f"{title} (top {len(order)} of {len(names)})")
    return fig


def training_curves(history: Sequence[Mapping[str, float]], title: str = "Training") -> Figure:
    """Loss-like series in the left panel, AUC series in the right one, per epoch."""
    rows = [dict(r) for r in history]
    x_key = next((k for k in ("epoch", "step") if rows and k in rows[0]), None)
    x = [r[x_key] for r in rows] if x_key else list(range(1, len(rows) + 1))
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("epoch", "step")))
    auc_keys = [k for k in keys if "auc" in k]
    other = [k for k in keys if k not in auc_keys]
    panels = [(other, "loss"), (auc_keys, "AUC")] if auc_keys else [(other, "loss")]
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (series, ylabel) in zip(axes, panels, strict=True):
        for color, key in zip(_colors(), series, strict=False):
            ys = [r.get(key, math.nan) for r in rows]
            ax.plot(x, ys, marker="o", ms=3, color=color, label=key)
        ax.set_xlabel(x_key or "epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend()
    fig.suptitle(title)
    return fig


def confusion(matrix: ArrayLike, labels: Sequence[str], title: str) -> Figure:
    """A confusion matrix (rows true, columns predicted), each row as shares of its total, the
    counts written in the cells."""
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    size = max(4.5, 0.7 * len(labels) + 2.5)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n:.0f}", ha="center", va="center",
                color="white" if shares[i, j] > 0.5 else "black", fontsize=8)  # fmt: skip
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("annotated")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, format=PercentFormatter(1.0), label="share of the row")
    return fig


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    ax.grid(alpha=0.3)
    return fig, ax


def _colors() -> list[str]:
    return [f"C{i}" for i in range(10)] * 10


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).astype(int))
    return x[idx], y[idx]


def _fmt(value: float, digits: int = 4) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"
