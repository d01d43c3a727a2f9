"""Command line: `python -m pipeline <stage> --experiment NAME [--set section.key=value ...]`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

# stage -> module under pipeline/ exposing `run(exp: Experiment) -> StageSummary`
STAGES = {
    "raw": "pipeline.sources.raw",
    "generate": "pipeline.sources.simulated.generate",
    "ingest": "pipeline.sources.ingest",
    "finetune": "pipeline.finetune",
    "understand": "pipeline.understand",
    "embed": "pipeline.embed",
    "features": "pipeline.featurize",
    "train": "pipeline.train",
    "tune": "pipeline.tune",
    "evaluate": "pipeline.evaluate",
    "export": "pipeline.export",
    "replay": "pipeline.replay",
    "report": "pipeline.report_page",
}
HELP = {
    "raw": "build raw/ from data.source: the simulator (generate) or a dataset (ingest)",
    "generate": "simulate the ad marketplace into raw/ (+ oracle/); data.source = simulated",
    "ingest": "map an external dataset (data.source, data.path) into the raw schema",
    "finetune": "fine-tune the text encoder on train-period click pairs (LoRA or top layers)",
    "understand": "label every query (intent, sentiment, brand / product / price cap) with an "
    "encoder fine-tuned on the query annotations",
    "embed": "embed ad, query and behaviour texts",
    "features": "build train/valid/test feature tables + feature_spec.json",
    "train": "train LightGBM and neural CTR/CVR models, log and register them in MLflow",
    "tune": "search each model's main settings on valid (Optuna); write tune/best.toml",
    "evaluate": "compare models on test, log metrics, plots, tables; set the champion",
    "export": "publish the bid / placement weight table from the champion",
    "replay": "offline replay of bidding strategies against logged auctions",
    "report": "print (and open, where there is a display) evaluation/report.html",
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
        if name in ("finetune", "understand"):
            p.add_argument(
                "--if-needed",
                action="store_true",
                help="only when embed.encoder = 'finetuned' and encoder/ is missing or stale"
                if name == "finetune"
                else "only when there are annotations and queries/ is missing or stale",
            )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.stage == "ui":  # the dashboard needs none of the modelling code
        from pipeline.ui import serve

        return serve(port=args.port)
    entry = "run_if_needed" if getattr(args, "if_needed", False) else "run"
    return run_stage(args.stage, args.experiment, args.overrides, entry)


def run_stage(stage: str, experiment: str, overrides: list[str], entry: str = "run") -> int:
    """Load the config, take the stage's locks, run it; 0, or 2 with one `error:` line."""
    from pipeline.config import ConfigError, load_experiment
    from pipeline.io import DataError
    from pipeline.lock import LockError, stage_lock
    from pipeline.ray_engine import preflight
    from pipeline.stage import Layout, setup_logging

    setup_logging()
    try:
        with _signals_unwind():
            exp = load_experiment(experiment, overrides)
            module = importlib.import_module(STAGES[stage])
            preflight(exp.engine, stage)
            with stage_lock(Layout.of(exp).root, stage):
                summary = getattr(module, entry)(exp)
    except (ConfigError, DataError, LockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(summary.line(), flush=True)  # on stdout only (the log would repeat it on stderr)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so open MLflow runs end KILLED and temps go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one stops the process at once
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated in the main thread for the block (a SIGHUP that is
    ignored, as under `nohup`, stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, _terminate) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
