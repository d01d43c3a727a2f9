"""DeepCTR-Torch's `DCNMix` for `make bench-peers` (`pipeline/bench/peers.py` runs it): one
seeded fit of one epoch on the exported matrix, then the test pCTR.

Runs inside .venv-peers (`bench/peers-requirements.txt`), so it imports numpy, torch and
deepctr_torch only, never the project. The settings come on the command line (the driver's
`EQUIVALENT` is their one home). Writes the test predictions (`--predictions`, .npy) and a JSON
object (`--out`): rows, fit_s (wall seconds of `model.fit`), cpu_s (its CPU seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import types

import numpy as np
import torch


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/peers_deepctr.py", description=__doc__)
    p.add_argument("--matrix", required=True, help="the .npz of `pipeline.bench.peers export`")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--predictions", required=True, help=".npy of the test pCTR")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--embedding-dim", type=int, required=True)
    p.add_argument("--cross-layers", type=int, required=True)
    p.add_argument("--low-rank", type=int, required=True)
    p.add_argument("--mlp", required=True, help="hidden sizes, e.g. 256,128")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    return p.parse_args(argv)


def deepctr() -> tuple[type, type, type]:
    """(DCNMix, SparseFeat, DenseFeat). deepctr_torch's `__init__` asks PyPI for a newer
    release in a thread that the process waits for (no timeout); a stub of `deepctr_torch.utils`,
    which holds only that check, keeps the run offline."""
    stub = types.ModuleType("deepctr_torch.utils")
    stub.check_version = lambda version: None  # type: ignore[attr-defined]
    sys.modules["deepctr_torch.utils"] = stub
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCNMix

    return DCNMix, SparseFeat, DenseFeat


def inputs(data: np.lib.npyio.NpzFile, split: str, names: list[str]) -> dict[str, np.ndarray]:
    """DeepCTR's input dict: one array per id field, and the prepared numeric block."""
    codes = data[f"{split}_categorical"]
    out = {name: codes[:, j] for j, name in enumerate(names)}
    out["numeric"] = data[f"{split}_peer_numeric"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    dcn_mix, sparse_feat, dense_feat = deepctr()
    data = np.load(args.matrix)
    names = [str(n) for n in data["categorical_names"]]
    columns = [
        sparse_feat(name, vocabulary_size=int(card), embedding_dim=args.embedding_dim)
        for name, card in zip(names, data["cardinalities"], strict=True)
    ]
    columns.append(dense_feat("numeric", int(data["train_peer_numeric"].shape[1])))
    # one low-rank expert per cross layer (DCN-v2's low-rank cross, as adctr's); no L2 terms
    # and no dropout (adctr's equivalent set-up has none)
    model = dcn_mix(
        columns,
        columns,
        cross_num=args.cross_layers,
        dnn_hidden_units=tuple(int(s) for s in args.mlp.split(",")),
        low_rank=args.low_rank,
        num_experts=1,
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        l2_reg_cross=0.0,
        l2_reg_dnn=0.0,
        dnn_dropout=0.0,
        seed=args.seed,
        device="cpu",
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=args.lr), "binary_crossentropy")
    x_train, x_test = inputs(data, "train", names), inputs(data, "test", names)
    y = data["train_click"].astype(np.float32)
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and the sizes
        model.fit(x_train, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
    fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    np.save(args.predictions, model.predict(x_test, batch_size=4096)[:, 0])
    result = {"rows": len(y), "fit_s": fit_s, "cpu_s": cpu_s}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
