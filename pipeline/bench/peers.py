"""`make bench-peers`: adctr's neural model against DeepCTR-Torch's `DCNMix`, in one run.

Reads the experiment's `features/` (`default` unless `--experiment`). Writes
`<data.root>/<experiment>/bench-peers/`: the exported model input (`matrix.npz`, or
`matrix-<rows>.npz` with `--rows`), each run's test predictions, and `results.json`.

    python -m pipeline.bench.peers export [--experiment NAME] [--set k=v ...] [--rows N]
    python -m pipeline.bench.peers run --python .venv-peers/bin/python [--seeds 0,1,2] [...]

`export` reads each split once through `pipeline.datasets` and keeps its id codes, numeric
columns and labels (the embedding vectors and history items dropped), and, for the peer, which
has no such layer, the numeric columns as adctr's net sees them (`models.dcn_esmm.NumericInput`:
signed log1p, standardised on train, clipped, NaN -> 0 plus missing indicators). It is redone
only when `features/` changed. `run` trains, for each seed, every system for one epoch, each
in a fresh process on 2 threads, the systems interleaved (their order rotates with the seed):
- DeepCTR-Torch `DCNMix` (`bench/peers_deepctr.py`, inside .venv-peers);
- adctr's `NeuralCTR` on the same matrix;
- adctr's `NeuralCTR` with its vectors (ad text, user interest, history attention) read from
  `features/` (the same rows);
- the two adctr runs again with `precision = "bf16"` (the training step under bf16 autocast);
  adctr's default is the CPU's native precision, and the table marks the rows it picks.
Both sides take `EQUIVALENT`'s settings. Samples/s is train rows over the wall seconds of the
fit call; test AUC and log loss of pCTR are computed here, the same way for every system.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.cpu import native_precision
from models.dcn_esmm import NumericInput, numeric_statistics
from models.matrix import FeatureMatrix
from models.metrics import binary_metrics
from models.neural import NeuralConfig, NeuralCTR
from models.neural_config import PRECISIONS
from pipeline.atomic import atomic_file
from pipeline.bench import REPO, measured
from pipeline.bench.neural import THREADS, print_table
from pipeline.config import ConfigError, load_experiment
from pipeline.datasets import SplitTable, load_spec, load_tables, spec_columns, to_matrix
from pipeline.io import DataError, input_digest, one_line
from pipeline.stage import Layout, setup_logging
from pipeline.train_inputs import neural_labels

SPLITS = ("train", "valid", "test")
PEER, ADCTR, WITH_VECTORS = (
    "DeepCTR-Torch DCNMix",
    "adctr NeuralCTR",
    "adctr NeuralCTR, with vectors",
)
# the same two with `neural.precision = "bf16"` (the training step under bf16 autocast)
ADCTR_BF16, WITH_VECTORS_BF16 = f"{ADCTR}, bf16", f"{WITH_VECTORS}, bf16"
SYSTEMS = (PEER, ADCTR, WITH_VECTORS, ADCTR_BF16, WITH_VECTORS_BF16)
PEER_SCRIPT = REPO / "bench" / "peers_deepctr.py"
# the set-up both sides train with: adctr's AdamW without decay is Adam, no dropout
EQUIVALENT = NeuralConfig(
    embedding_dim=16,
    cross_layers=3,
    cross_rank=64,
    mlp_sizes=(256, 128),
    batch_size=2048,
    lr=1e-3,
    epochs=1,
    dropout=0.0,
    weight_decay=0.0,
)


def matrix_path(layout: Layout, rows: int | None) -> Path:
    return layout.bench_peers / (f"matrix-{rows}.npz" if rows else "matrix.npz")


def read_split(
    layout: Layout, split: str, rows: int | None, tables: dict | None = None
) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    """The first `rows` rows (None: all) of a split as the neural model's input and labels."""
    spec = load_spec(layout)
    table = SplitTable.of(layout, split)
    names = [*spec_columns(spec, "neural"), "click", *(["conversion"] * spec.has_conversion)]
    frame = table.slab(0, names, min(rows or table.rows, table.rows))
    return to_matrix(frame, spec, "neural", tables), *neural_labels(frame, spec)


def export(layout: Layout, rows: int | None) -> Path:
    """Write (or keep, when `features/` is unchanged) the splits' ids, numerics and labels."""
    path, digest = matrix_path(layout, rows), input_digest(layout.features)
    if path.is_file():
        with np.load(path) as old:
            if str(old["features"]) == digest:
                print(f"{path} is up to date with {layout.features}")
                return path
    arrays: dict[str, np.ndarray] = {"features": np.array(digest)}
    for split in SPLITS:
        X, click, conv = read_split(layout, split, rows)
        arrays |= {f"{split}_categorical": X.categorical, f"{split}_numeric": X.numeric}
        arrays |= {f"{split}_click": click, f"{split}_conversion": conv}
    arrays["categorical_names"] = np.array(X.categorical_names)
    arrays["cardinalities"] = np.array(X.cardinalities, dtype=np.int64)
    arrays["numeric_names"] = np.array(X.numeric_names)
    arrays |= peer_numeric(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_file(path, buffer.getvalue())
    sizes = ", ".join(f"{s} {len(arrays[f'{s}_click']):,}" for s in SPLITS)
    print(f"exported {sizes} rows ({len(X.categorical_names)} id fields) -> {path}")
    return path


def peer_numeric(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each split's numeric columns as adctr's input layer makes them, with train's statistics:
    the peer's numeric input (it has no such layer)."""
    cfg = EQUIVALENT
    train = torch.from_numpy(arrays["train_numeric"])
    mean, std, missing = numeric_statistics(train, cfg.log_numeric)
    layer = NumericInput(train.shape[1], int(missing.sum()), cfg.log_numeric, cfg.numeric_clip)
    layer.mean.copy_(mean)
    layer.std.copy_(std)
    layer.with_indicator.copy_(missing)
    with torch.no_grad():
        return {
            f"{s}_peer_numeric": layer(torch.from_numpy(arrays[f"{s}_numeric"])).numpy()
            for s in SPLITS
        }


def npz_matrix(data: np.lib.npyio.NpzFile, split: str) -> FeatureMatrix:
    """One split of the exported matrix, as adctr takes it (its own numeric layer)."""
    return FeatureMatrix(
        categorical=data[f"{split}_categorical"],
        numeric=data[f"{split}_numeric"],
        categorical_names=tuple(str(n) for n in data["categorical_names"]),
        numeric_names=tuple(str(n) for n in data["numeric_names"]),
        cardinalities=tuple(int(c) for c in data["cardinalities"]),
    )


def fit_adctr(args: argparse.Namespace, layout: Layout) -> None:
    """One adctr run (a child process of `run`): fit, then write the test pCTR and timings."""
    if args.vectors:
        spec = load_spec(layout)
        tables = load_tables(layout, spec)
        X, click, conv = read_split(layout, "train", args.rows, tables)
        X_test = read_split(layout, "test", args.rows, tables)[0]
    else:
        data = np.load(args.matrix)
        X, X_test = npz_matrix(data, "train"), npz_matrix(data, "test")
        click, conv = data["train_click"], data["train_conversion"]
    config = replace(EQUIVALENT, precision=args.precision)
    model = NeuralCTR(config, random_state=args.seed, num_threads=THREADS)
    # torch.optim imports torch._dynamo when the first optimiser is built (1.4 s here, once a
    # process). The peer builds its optimiser in `model.compile`, before its timer; adctr
    # builds its own inside `fit`, so the import is paid here, before the timer, on both sides
    import torch._dynamo  # noqa: F401

    started, cpu = time.perf_counter(), time.process_time()
    model.fit(X, click, conv)
    fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    np.save(args.predictions, model.predict_proba(X_test)[:, 0])
    result = {"rows": len(X), "fit_s": fit_s, "cpu_s": cpu_s}
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def command(system: str, seed: int, args: argparse.Namespace, out: Path) -> list[str]:
    """The process that trains `system` once; it writes `out`.json and `out`.npy."""
    files = ["--seed", str(seed), "--out", f"{out}.json", "--predictions", f"{out}.npy"]
    matrix = ["--matrix", str(args.matrix)]
    if system == PEER:
        cfg = EQUIVALENT
        settings = {
            "threads": THREADS,
            "embedding-dim": cfg.embedding_dim,
            "cross-layers": cfg.cross_layers,
            "low-rank": cfg.cross_rank,
            "mlp": ",".join(map(str, cfg.mlp_sizes)),
            "batch-size": cfg.batch_size,
            "lr": cfg.lr,
        }
        flags = [a for k, v in settings.items() for a in (f"--{k}", str(v))]
        return [args.python, str(PEER_SCRIPT), *matrix, *files, *flags]
    own = [sys.executable, "-m", "pipeline.bench.peers", "adctr", *files, *experiment_args(args)]
    own += ["--precision", "bf16" if system in (ADCTR_BF16, WITH_VECTORS_BF16) else "fp32"]
    return [*own, "--vectors"] if system in (WITH_VECTORS, WITH_VECTORS_BF16) else [*own, *matrix]


def experiment_args(args: argparse.Namespace) -> list[str]:
    rows = ["--rows", str(args.rows)] if args.rows else []
    return ["--experiment", args.experiment, *(f"--set={s}" for s in args.overrides), *rows]


def run(args: argparse.Namespace, layout: Layout) -> None:
    """Every system once per seed, interleaved; then the table."""
    args.matrix = matrix_path(layout, args.rows).resolve()
    if not args.matrix.is_file():
        raise DataError(f"no {args.matrix}: run `python -m pipeline.bench.peers export` first")
    if not Path(args.python).is_file():
        raise DataError(f"no {args.python}: `make bench-peers` builds the peers' venv")
    test = np.load(args.matrix)["test_click"]
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    runs: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    for i, seed in enumerate(args.seeds):
        turn = i % len(SYSTEMS)
        for system in SYSTEMS[turn:] + SYSTEMS[:turn]:
            out = args.matrix.parent / f"run-{SYSTEMS.index(system)}-seed{seed}"
            proc = measured(command(system, seed, args, out), env)
            result = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
            result |= binary_metrics(test, np.load(f"{out}.npy"))
            result |= {"seed": seed, "rss_gb": proc["rss"] / 1e9}
            runs[system].append(result)
            print(
                f"  seed {seed} {system:<30} {result['rows'] / result['fit_s']:9,.0f} samples/s "
                f"AUC {result['auc']:.4f}  load avg {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    (layout.bench_peers / "results.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
    report(runs, args)


def _mean_std(values: list[float], spec: str) -> str:
    return f"{np.mean(values):{spec}} ± {np.std(values):{spec}}"


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Mean ± std over the seeds per system, and adctr's samples/s over the peer's."""
    speed = {s: [r["rows"] / r["fit_s"] for r in rs] for s, rs in runs.items()}
    native = native_precision()
    default = {ADCTR, WITH_VECTORS} if native == "fp32" else {ADCTR_BF16, WITH_VECTORS_BF16}
    rows = [
        {
            "system": f"{system}{' *' if system in default else ''}",
            "train samples/s": _mean_std(speed[system], ",.0f"),
            "test AUC": _mean_std([r["auc"] for r in rs], ".4f"),
            "test logloss": _mean_std([r["logloss"] for r in rs], ".4f"),
            "peak RSS GB": f"{max(r['rss_gb'] for r in rs):.2f}",
        }
        for system, rs in runs.items()
    ]
    first = runs[PEER][0]
    print(f"\n{first['rows']:,} train rows, {first['n']:,.0f} test rows ({args.matrix.name}),")
    print(f"1 epoch, {THREADS} threads, seeds {', '.join(map(str, args.seeds))} (mean ± std):")
    print_table(rows)
    print(f"* adctr's default here: neural.precision left unset trains in {native} on this CPU")
    for system in SYSTEMS[1:]:
        paired = [a / b for a, b in zip(speed[system], speed[PEER], strict=True)]
        print(
            f"{system} / {PEER} samples/s: {np.mean(speed[system]) / np.mean(speed[PEER]):.2f} "
            f"(per seed {', '.join(f'{r:.2f}' for r in paired)})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("verb", choices=("export", "run", "adctr"))
    parser.add_argument("--experiment", "-e", default="default")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--rows", type=int, default=None, help="the first N rows of each split")
    parser.add_argument("--python", default=".venv-peers/bin/python", help="the peers' venv")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    # `adctr` (one run, a child of `run`)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matrix")
    parser.add_argument("--out")
    parser.add_argument("--predictions")
    parser.add_argument("--vectors", action="store_true")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        layout = Layout.of(load_experiment(args.experiment, args.overrides))
        if not layout.feature_spec.is_file():
            raise DataError(f"no {layout.features}: run `make features` first")
        if args.verb == "export":
            export(layout, args.rows)
        elif args.verb == "run":
            run(args, layout)
        else:
            fit_adctr(args, layout)
    except (ConfigError, DataError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
