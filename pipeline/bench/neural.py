"""`make bench` section: training and inference throughput of the neural CTR/CVR model.

Reads the `default` experiment's `features/` when they exist (else skips that row). Writes nothing.

Side by side, on 2 threads (one row on 1) and the default `NeuralConfig` (batch size printed):
- a synthetic FeatureMatrix shaped like the default features with text on (500k rows,
  12 id fields up to 20k values, 40 numeric, a 384-d ad text embedding, a 64-d interest vector);
- the same with every id table on sparse gradients + SparseAdam (`sparse_min_rows=0`) and with
  every table dense (on 100k rows), which is how the `sparse_min_rows` default was chosen;
- the real default training features, when present, with the target attention over the user
  history on and off (`neural.attention`, on the same rows: what the block costs).
Each case trains one epoch and then scores the rows; samples/s is wall clock, CPU s is the
process's CPU time (on a shared machine the load average shown says how far apart they are).
torch's OpenMP threads spin while they wait: on a busy machine set OMP_WAIT_POLICY=PASSIVE
before Python starts, or 2 threads run several times slower than 1.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import numpy as np

from models.matrix import FeatureMatrix
from models.neural import NeuralConfig, NeuralCTR
from pipeline.config import Experiment
from pipeline.stage import Layout

log = logging.getLogger(__name__)

DEFAULT = Layout.of(Experiment(name="default"))  # its features, with the default data.root
THREADS = 2
# id fields of the default features with text on: user, ad, campaign, advertiser, brand, ...
CARDINALITIES = (20_000, 2_400, 1_000, 300, 121, 25, 17, 13, 8, 6, 5, 4)
N_NUMERIC = 40
DENSE = {"ad_text": 384, "user_interest": 64}


def synthetic_matrix(n: int, seed: int = 0) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    """Random inputs of the default shape, with clicks (~4%) and conversions (~10% of clicks)."""
    rng = np.random.default_rng(seed)
    categorical = np.column_stack([rng.integers(0, c, n) for c in CARDINALITIES])
    numeric = rng.standard_normal((n, N_NUMERIC), dtype=np.float32)
    numeric[rng.random((n, N_NUMERIC), dtype=np.float32) < 0.05] = np.nan
    dense = {k: rng.standard_normal((n, d), dtype=np.float32) for k, d in DENSE.items()}
    logit = -3.3 + 0.5 * np.nan_to_num(numeric[:, 0]) + 0.3 * (categorical[:, 1] % 3)
    click = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    conversion = click * (rng.random(n) < 0.1)
    X = FeatureMatrix(
        categorical=categorical.astype(np.int64),
        numeric=numeric,
        categorical_names=tuple(f"c_{i}" for i in range(len(CARDINALITIES))),
        numeric_names=tuple(f"n_{i}" for i in range(N_NUMERIC)),
        cardinalities=CARDINALITIES,
        embeddings=dense,
    )
    return X, click, conversion.astype(np.float32)


def measure(
    case: str,
    X: FeatureMatrix,
    click: np.ndarray,
    conv: np.ndarray,
    config: NeuralConfig,
    threads: int = THREADS,
) -> dict[str, object]:
    """Train one epoch, then score every row; wall-clock and CPU figures."""
    config = replace(config, epochs=1)
    cpu, started = time.process_time(), time.perf_counter()
    model = NeuralCTR(config, random_state=0, num_threads=threads).fit(X, click, conv)
    fit_s, fit_cpu = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    model.predict_proba(X)
    predict_s = time.perf_counter() - started
    sparse = sum(t.sparse for t in model.module_.ids.tables)
    return {
        "case": case,
        "rows": len(X),
        "threads": threads,
        "batch": model.config_.batch_size,
        "sparse tables": f"{sparse}/{len(model.module_.ids.tables)}",
        "train samples/s": len(X) / fit_s,
        "train CPU s": fit_cpu,
        "train s": fit_s,
        "predict samples/s": len(X) / predict_s,
    }


def real_matrix() -> tuple[FeatureMatrix, np.ndarray, np.ndarray] | None:
    """The default experiment's training features, or None when they are not built yet."""
    if not DEFAULT.feature_spec.is_file():
        return None
    from pipeline.datasets import load_spec, load_split, load_tables, to_matrix
    from pipeline.train_inputs import neural_labels

    spec = load_spec(DEFAULT)
    frame = load_split(DEFAULT, "train")
    return to_matrix(frame, spec, "neural", load_tables(DEFAULT, spec)), *neural_labels(frame, spec)


def main() -> None:
    config = NeuralConfig()
    rows = []
    X, click, conv = synthetic_matrix(500_000)
    rows.append(measure("synthetic, default", X, click, conv, config))
    small = np.arange(100_000)
    Xs, cs, vs = X.take(small), click[small], conv[small]
    rows.append(measure("synthetic, default", Xs, cs, vs, config, threads=1))
    rows.append(measure("synthetic, all sparse", Xs, cs, vs, replace(config, sparse_min_rows=0)))
    rows.append(measure("synthetic, all dense", Xs, cs, vs, replace(config, sparse_min_rows=2**62)))
    del X, Xs
    real = real_matrix()
    if real is None:
        log.info("no %s: skipping the real-features row (run `make features`)", DEFAULT.features)
    else:
        Xr, cr, vr = real
        case = f"default features ({Xr.numeric.shape[1]} num, {len(Xr.embeddings)} dense)"
        rows.append(measure(case, Xr, cr, vr, config))
        if Xr.items:
            off = replace(config, attention=False)
            rows.append(measure(f"{case}, attention off", Xr, cr, vr, off))
    print_table(rows)
    load, wait = os.getloadavg()[0], os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"1 epoch each, then predict_proba on the same rows; 1-min load average {load:.1f}")
    print(f"OMP_WAIT_POLICY={wait} (on a busy machine, spinning OpenMP threads make 2 threads")
    print("several times slower than 1; OMP_WAIT_POLICY=PASSIVE removes that)")


def print_table(rows: list[dict[str, object]]) -> None:
    """A plain fixed-width table on stdout (the bench's report)."""
    headers = list(rows[0])
    cells = [[_cell(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
