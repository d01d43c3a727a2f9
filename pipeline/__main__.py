"""Command line: `python -m pipeline <stage> --experiment NAME [--set section.key=value ...]`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# stage -> module under pipeline/ exposing `run(exp: Experiment) -> StageSummary`
STAGES = {
    "raw": "pipeline.sources.raw",
    "generate": "pipeline.sources.simulated.generate",
    "ingest": "pipeline.sources.ingest",
    "embed": "pipeline.embed",
    "features": "pipeline.featurize",
    "train": "pipeline.train",
    "evaluate": "pipeline.evaluate",
    "export": "pipeline.export",
    "replay": "pipeline.replay",
}
HELP = {
    "raw": "build raw/ from data.source: the simulator (generate) or a dataset (ingest)",
    "generate": "simulate the ad marketplace into raw/ (+ oracle/); data.source = simulated",
    "ingest": "map an external dataset (data.source, data.path) into the raw schema",
    "embed": "embed ad, query and behaviour texts",
    "features": "build train/valid/test feature tables + feature_spec.json",
    "train": "train LightGBM and neural CTR/CVR models, log and register them in MLflow",
    "evaluate": "compare models on test, log metrics, plots, tables; set the champion",
    "export": "publish the bid / placement weight table from the champion",
    "replay": "offline replay of bidding strategies against logged auctions",
    "ui": "serve the MLflow dashboard on 127.0.0.1",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "ui":
            p.add_argument("--port", type=int, default=5000)
            continue
        p.add_argument("--experiment", "-e", default="default", help="experiments/<NAME>.toml")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one setting (repeatable), e.g. --set market.n_users=500",
        )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.stage == "ui":  # the dashboard needs none of the modelling code
        from pipeline.ui import serve

        return serve(port=args.port)
    from pipeline.config import ConfigError, load_experiment
    from pipeline.io import DataError
    from pipeline.stage import setup_logging

    setup_logging()
    try:
        exp = load_experiment(args.experiment, args.overrides)
        module = importlib.import_module(STAGES[args.stage])
        summary = module.run(exp)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    logging.getLogger("adctr").info("%s", summary.line())
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
