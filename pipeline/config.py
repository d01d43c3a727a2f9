"""Experiment configuration: frozen dataclasses, strict TOML loading and `--set` overrides.

An experiment TOML lists only what differs from the defaults. Each top-level table is one
section; each section is a frozen dataclass owned by the code that uses it. An unknown section or
key, or a value of the wrong type, raises `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.config import FeatureConfig
from features.split import SplitConfig
from features.text import EmbedConfig
from models.bidding import BiddingConfig
from models.calibration import CalibrationConfig
from models.finetune_config import FinetuneConfig
from models.lgbm import LightGBMConfig
from models.logreg import LogRegConfig
from models.neural_config import NeuralConfig
from models.understand_config import UnderstandConfig
from pipeline.scoring import PREFIXES, TASK_KEYS, metric_mode, metric_names
from pipeline.sources import KNOWN_SOURCES
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.simulated.marketplace import MarketConfig

EXPERIMENTS_DIR = Path("experiments")
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
# what `train.models` may name (pipeline/train.py fits them)
MODEL_KINDS = ("lightgbm", "neural", "logreg")


class ConfigError(ValueError):
    """A config problem the user can fix; the message is one line and names the key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the raw data comes from and where outputs go."""

    source: str = "simulated"  # simulated | criteo | avazu | ali_ccp | mind | ipinyou | generic
    path: str = ""  # input file or folder for `ingest` sources
    root: str = "data"  # outputs land in <root>/<experiment>/
    seed: int = 7

    def __post_init__(self) -> None:

        if self.source not in KNOWN_SOURCES:
            raise ValueError(
                f"data.source = {self.source!r} is not a known source ({', '.join(KNOWN_SOURCES)})"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


ENGINES = ("local", "ray")
# where the data lives and the jobs run: not in the config digest
PLACEMENT_KEYS = frozenset({"data.root", "engine.kind", "engine.address", "engine.workers"})


@dataclass(frozen=True)
class EngineConfig:
    """How the jobs run: the one thread count of LightGBM, torch and the text encoder, and
    where: this process (`local`) or a Ray cluster (`ray`: `address`, else `RAY_ADDRESS`, else
    a Ray started for the job on this machine with `num_threads` CPUs), with `workers` actors
    or training workers."""

    num_threads: int = 2
    kind: str = "local"  # local | ray
    address: str = ""  # a Ray cluster: host:port, ray://host:port or auto
    workers: int = 1

    def __post_init__(self) -> None:
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.kind not in ENGINES:
            raise ValueError(f"kind must be one of {', '.join(ENGINES)}, got {self.kind!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class TrainConfig:
    models: tuple[str, ...] = MODEL_KINDS
    # splits up to this many rows are held in memory whole; the neural model streams larger
    # train / valid splits slab by slab, and the models fitted in memory (LightGBM, logreg)
    # take a share of the negatives that keeps about this many rows (models.sizing)
    max_in_memory_rows: int = 2_000_000
    # rows per slab of a split read from disk in parts; a power of two, so the neural model's
    # prediction batches (powers of two up to this) fall on the same rows as in one pass
    slab_rows: int = 131_072

    def __post_init__(self) -> None:
        if self.max_in_memory_rows < 1:
            raise ValueError(f"max_in_memory_rows must be >= 1, got {self.max_in_memory_rows}")
        if self.slab_rows < 1 or self.slab_rows & (self.slab_rows - 1):
            raise ValueError(f"slab_rows must be a power of two, got {self.slab_rows}")
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if not self.models or unknown:
            raise ValueError(
                f"models must name some of {', '.join(MODEL_KINDS)}, got {list(self.models)}"
            )
        if len(set(self.models)) < len(self.models):
            raise ValueError(f"models names a model twice: {list(self.models)}")


@dataclass(frozen=True)
class TuneConfig:
    """`make tune` (pipeline/tune.py): an Optuna search of each model's main settings on valid."""

    models: tuple[str, ...] | None = None  # None: every model of train.models
    trials: int = 20  # per model
    timeout_s: float = 600.0  # per model: no trial starts after this many seconds
    seed: int | None = None  # of the sampler; None: data.seed

    def __post_init__(self) -> None:
        if self.models is not None:
            unknown = [m for m in self.models if m not in MODEL_KINDS]
            if not self.models or unknown or len(set(self.models)) < len(self.models):
                raise ValueError(
                    f"models must name distinct models of {', '.join(MODEL_KINDS)}, "
                    f"got {list(self.models)}"
                )
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class EvaluateConfig:
    # the champion and the export guardrail rank by this valid metric (of valid predictions
    # calibrated out of fold); valid_ctr_logloss where no model has it, e.g. without
    # conversions (pipeline.registry.ranking_metric). Test metrics are reported, never chosen on.
    champion_metric: str = "valid_ctcvr_logloss"
    champion_mode: str = "min"  # min | max
    ece_bins: int = 15  # equal-width bins of every logged *_ece (train and evaluate)
    reliability_bins: int = 15  # equal-count points of the reliability plots
    position_buckets: tuple[int, ...] = (1, 2, 4)
    # valid rows the neural model's permutation importance is measured on (0: none)
    importance_rows: int = 10_000

    def __post_init__(self) -> None:
        if self.champion_mode not in ("min", "max"):
            raise ValueError(f"champion_mode must be min or max, got {self.champion_mode!r}")
        _check_champion_metric(self.champion_metric, self.champion_mode)
        if self.importance_rows < 0:
            raise ValueError(f"importance_rows must be >= 0, got {self.importance_rows}")
        for name in ("ece_bins", "reliability_bins"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        edges = self.position_buckets
        if list(edges) != sorted(set(edges)) or any(p < 0 for p in edges):
            raise ValueError(
                f"position_buckets must be increasing positions >= 0, got {list(edges)}"
            )


def _check_champion_metric(metric: str, mode: str) -> None:
    """`metric` is one that every model run logs, and `mode` is its better direction."""
    if metric.startswith("test_") and metric in metric_names():
        task = metric.removeprefix("test_cold_") if "_cold_" in metric else metric[5:]
        raise ValueError(
            f"champion_metric {metric!r} is a test metric: test is reported, never used to "
            f"choose; use valid_{task}"
        )
    if metric not in metric_names():
        tasks = ", ".join(f"{task}_({'|'.join(keys)})" for task, keys in TASK_KEYS.items())
        raise ValueError(
            f"champion_metric {metric!r} is not a metric the models log: one of "
            f"{', '.join(PREFIXES)} followed by one of {tasks}, e.g. valid_ctcvr_logloss"
        )
    better = metric_mode(metric)
    if better is None:
        raise ValueError(
            f"champion_metric {metric!r} is a ratio best at 1, which neither min nor max ranks"
        )
    if mode != better:
        raise ValueError(
            f"champion_mode must be {better} for champion_metric {metric!r}, got {mode!r}"
        )


@dataclass(frozen=True)
class ExportConfig:
    """The bid / placement weight table (`make export`, see pipeline/export.py)."""

    # paced_linear: the only strategy that beat a constant bid tuned the same way at every
    # budget of the iPinYou 2997 replay (1/64..1/8); the table holds its base (linear) bids
    # and the manifest the pacing controller's state and settings
    strategy: str = "paced_linear"  # constant | linear | ortb | paced | paced_<base>
    budget_fraction: float = 0.0625  # tune the bid level to spend this share of logged cost
    guardrail_margin: float = 0.02  # max relative worsening of the champion metric vs published
    segment_columns: tuple[str, ...] = ("age_bucket", "device")  # user profile columns
    score_splits: tuple[str, ...] = ("test",)  # the most recent feature rows, scored
    shrinkage: float = 20.0  # pseudo-rows pulling a thin cell toward its fallback estimate
    keep_versions: int = 5  # published versions kept under export-versions/

    def __post_init__(self) -> None:
        from models.bidding import split_strategy

        try:
            split_strategy(self.strategy)
        except ValueError as exc:
            raise ValueError(f"strategy: {exc}") from None
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must lie in (0, 1], got {self.budget_fraction}")
        for name in ("guardrail_margin", "shrinkage"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        splits = self.score_splits
        if not splits or not set(splits) <= {"train", "valid", "test"}:
            raise ValueError(f"score_splits must name some of train, valid, test, got {splits}")
        if self.keep_versions < 2:
            raise ValueError(
                "keep_versions must be >= 2 (the published one and the one before), "
                f"got {self.keep_versions}"
            )
        for name in ("segment_columns", "score_splits"):
            values = getattr(self, name)
            if len(set(values)) < len(values) or "" in values:
                raise ValueError(f"{name} must name distinct non-empty values, got {values}")


@dataclass(frozen=True)
class Experiment:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    understand: UnderstandConfig = field(default_factory=UnderstandConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)
    neural: NeuralConfig = field(default_factory=NeuralConfig)
    logreg: LogRegConfig = field(default_factory=LogRegConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    bidding: BiddingConfig = field(default_factory=BiddingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def flat(self) -> dict[str, Any]:
        """`section.key -> value` for every setting (logged as MLflow params)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            for k, v in dataclasses.asdict(getattr(self, f.name)).items():
                out[f"{f.name}.{k}"] = list(v) if isinstance(v, tuple) else v
        return out

    def digest(self) -> str:
        """A short hash of the effective settings (goes into every manifest). Where the data
        lives (`data.root`) and where the jobs run (`engine.kind`, `address`, `workers`, on the
        runs' tags) are not settings of the data, so they are left out."""
        settings = {k: v for k, v in self.flat().items() if k not in PLACEMENT_KEYS}
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


SECTIONS: dict[str, type] = {
    k: v for k, v in typing.get_type_hints(Experiment).items() if k != "name"
}


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check `value` against a dataclass field type; return (ok, coerced value)."""
    origin = typing.get_origin(tp)
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return (isinstance(value, int | float), float(value) if isinstance(value, int) else value)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool), value)
    if tp is bool or tp is str:
        return (isinstance(value, tp), value)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            return False, value
        inner = args[0]
        items = []
        for item in value:
            ok, item = _type_ok(item, inner)
            if not ok:
                return False, value
            items.append(item)
        return True, tuple(items)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    raise TypeError(f"unsupported config field type {tp!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build_section(section: str, cls: type, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{section}.{key}' (known: {', '.join(sorted(known))})"
            )
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{source}: '{section}.{key}' must be {_type_name(hints[key])}, "
                f"got {type(value).__name__} {value!r}"
            )
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own __post_init__ validation
        raise ConfigError(f"{source}: [{section}] {exc}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); value parsed as TOML, else a string."""
    path, _, raw = text.partition("=")
    section, _, key = path.strip().partition(".")
    if "=" not in text or not section or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def load_experiment(
    name: str, overrides: list[str] | tuple[str, ...] = (), directory: Path | None = None
) -> Experiment:
    """Load `experiments/<name>.toml`, apply `section.key=value` overrides, validate strictly."""
    if not EXPERIMENT_NAME.fullmatch(name):
        raise ConfigError(
            f"experiment name {name!r}: use only letters, digits, '_' and '-' "
            "(it names experiments/<name>.toml, data/<name>/ and the MLflow experiment)"
        )
    directory = EXPERIMENTS_DIR if directory is None else directory
    path = directory / f"{name}.toml"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.toml"))
        raise ConfigError(
            f"no experiment '{name}': {path} does not exist (available: {', '.join(available)})"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if isinstance(raw[section], dict):
            raw[section][key] = value
    sections = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown section '[{section}]' (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a table ([{section}]), got {values!r}")
        sections[section] = _build_section(section, SECTIONS[section], values, str(path))
    return Experiment(name=name, **sections)
