"""`make realdata`'s table: mean ± std per model, the verdict per dataset, the bootstrap gap."""

from __future__ import annotations

import numpy as np

from pipeline.realdata import auc_gap_interval, table


def _run(seed: int, positives: int, champ: str, auc: dict[str, float], gap=None) -> dict:
    return {
        "seed": seed,
        "champion": champ,
        "test_rows": 400,
        "test_positives": positives,
        "auc_gap_95": gap,
        "metrics": {
            k: {"test_ctr_auc": v, "test_ctr_logloss": 0.4, "test_ctr_ne": 0.9}
            for k, v in auc.items()
        },
    }


def test_table_gives_mean_std_and_says_when_a_log_is_too_small() -> None:
    results = {
        "big": [
            _run(7, 90, "neural", {"neural": 0.74, "logreg": 0.72}),
            _run(8, 90, "neural", {"neural": 0.70, "logreg": 0.72}, gap=[-0.05, 0.02]),
        ],
        "tiny": [_run(7, 2, "lightgbm", {"lightgbm": 0.9, "logreg": 0.5})],
    }
    text = table(results)
    assert "| big | neural | 0.7200 ± 0.0200 |" in text
    assert "| big | logreg (reference) | 0.7200 ± 0.0000 |" in text
    assert "seed 7: ok, seed 8: AUC below reference, within noise" in text
    assert "tiny: 400 test rows, [2] test clicks; too small to rank models" in text
    assert "| tiny | lightgbm | 0.9000 ± 0.0000 | 0.4000 ± 0.0000 | 0.9000 ± 0.0000 | 1/1 |" in text


def test_auc_gap_interval_is_zero_for_the_same_model_and_covers_a_real_gap() -> None:
    rng = np.random.default_rng(0)
    click = (rng.random(2000) < 0.2).astype(int)
    good = click + rng.normal(0, 0.5, 2000)
    noise = rng.normal(0, 1, 2000)
    assert auc_gap_interval(click, good, good) == (0.0, 0.0)
    low, high = auc_gap_interval(click, good, noise)
    assert 0.2 < low < high < 0.5  # a strong model against noise: clearly positive
